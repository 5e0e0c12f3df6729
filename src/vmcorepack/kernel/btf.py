"""The kernel's BTF type information, parsed from kernel memory.

A kernel built with CONFIG_DEBUG_INFO_BTF carries its types in the
``.BTF`` section, between the symbols ``__start_BTF`` and ``__stop_BTF``
(include/asm-generic/vmlinux.lds.h), which kallsyms names.  The format is
include/uapi/linux/btf.h: a header, then type records numbered from 1 (0 is
void), then a string table.  Only the index of where each record starts is
built up front; records become :class:`~vmcorepack.kernel.types.CType`
objects when asked for.

pahole encodes only per-cpu variables as ``BTF_KIND_VAR`` in kernels of the
6.1 era, so :meth:`Btf.variable_type` often answers None; callers then need
the type spelt out (an erase config's ``(struct task_struct)init_task``).
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from vmcorepack.errors import KernelMemoryError
from vmcorepack.kernel.kallsyms import KallSyms, Memory
from vmcorepack.kernel.types import CType, Member

BTF_MAGIC = 0xEB9F
#: ``BTF_KIND_*`` numbers (include/uapi/linux/btf.h).
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19
#: Bytes that follow ``struct btf_type`` for each kind: (fixed, per vlen item).
_TRAILER = {
    INT: (4, 0),
    ARRAY: (12, 0),
    STRUCT: (0, 12),
    UNION: (0, 12),
    ENUM: (0, 8),
    FUNC_PROTO: (0, 8),
    VAR: (4, 0),
    DATASEC: (0, 12),
    DECL_TAG: (4, 0),
    ENUM64: (0, 12),
}
_QUALIFIERS = (VOLATILE, CONST, RESTRICT, TYPE_TAG)
#: ``BTF_INT_SIGNED`` / ``BTF_INT_BOOL`` in an INT record's encoding bits.
_INT_SIGNED, _INT_BOOL = 1, 4
#: Refuse a BTF blob larger than this (Debian's 6.1 kernel has 4.2 MiB).
_MAX_BTF = 64 << 20


class Btf:
    """Types of one kernel's BTF blob."""

    def __init__(self, data: bytes, where: int = 0) -> None:
        """Index a BTF blob.

        Args:
            data: The blob (``__start_BTF`` .. ``__stop_BTF``).
            where: Its kernel address, for error messages.

        Raises:
            KernelMemoryError: Not BTF, or a record runs past the end.
        """
        if len(data) < 24:
            raise KernelMemoryError(where, "BTF is shorter than its header")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != BTF_MAGIC:
            raise KernelMemoryError(where, f"BTF magic is {magic:#x}, not {BTF_MAGIC:#x}")
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data):
            raise KernelMemoryError(where, "BTF sections run past its end")
        self._data = data
        self._strings = data[s0 : s0 + str_len]
        self._where = where
        starts = [0]  # id 0 is void: no record
        pos, end = t0, t0 + type_len
        while pos < end:
            starts.append(pos)
            info = int.from_bytes(data[pos + 4 : pos + 8], "little")
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            fixed, per = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen
        if pos != end:
            raise KernelMemoryError(where + pos, "BTF type records overrun the type section")
        self._starts = np.array(starts, np.int64)
        self._name_offs: np.ndarray | None = None
        self._cache: dict[int, CType] = {}

    @classmethod
    def from_memory(cls, mem: Memory, syms: KallSyms) -> Btf:
        """Read the kernel's BTF through kallsyms' ``__start_BTF`` and ``__stop_BTF``.

        Raises:
            LookupError: The kernel has no BTF.
            KernelMemoryError: It cannot be read or is not BTF.
        """
        start, stop = syms.lookup("__start_BTF"), syms.lookup("__stop_BTF")
        if start is None or stop is None:
            raise LookupError("the kernel has no BTF (__start_BTF/__stop_BTF not in kallsyms)")
        if not 0 < stop - start <= _MAX_BTF:
            raise KernelMemoryError(start, f"BTF size {stop - start} is not plausible")
        return cls(mem.read(start, stop - start), start)

    def __len__(self) -> int:
        """Return the number of type ids, void included."""
        return len(self._starts)

    def _str(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        return self._strings[off:end].decode(errors="replace")

    def _record(self, tid: int) -> tuple[int, int, int, int, int, int]:
        """Return (name_off, kind, vlen, kind_flag, size_or_type, record offset)."""
        if not 0 < tid < len(self._starts):
            raise KernelMemoryError(self._where, f"BTF type id {tid} out of range")
        pos = int(self._starts[tid])
        name_off, info, st = struct.unpack_from("<III", self._data, pos)
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, st, pos

    def _ids_named(self, name: str) -> list[int]:
        """Return the ids of the records called ``name``, in id order.

        The string table is searched for the name (pahole deduplicates
        strings, but a name may still appear more than once) and the records'
        name offsets are compared in one numpy pass: no dictionary of 100,000
        names is kept.
        """
        if self._name_offs is None:
            offs = np.zeros(len(self._starts) - 1, np.uint32)
            data = np.frombuffer(self._data, np.uint8)
            for k in range(4):
                offs |= data[self._starts[1:] + k].astype(np.uint32) << np.uint32(8 * k)
            self._name_offs = offs
        key = name.encode()
        wanted = []
        pos = self._strings.find(b"\0" + key + b"\0")
        while pos >= 0:
            wanted.append(pos + 1)
            pos = self._strings.find(b"\0" + key + b"\0", pos + 1)
        if not wanted:
            return []
        return (np.flatnonzero(np.isin(self._name_offs, np.array(wanted, np.uint32))) + 1).tolist()

    def find(self, name: str, kinds: tuple[int, ...]) -> int | None:
        """Return the first type id called ``name`` whose kind is in ``kinds``."""
        for tid in self._ids_named(name):
            if self._record(tid)[1] in kinds:
                return tid
        return None

    def type(self, name: str) -> CType:
        """Return a named type: ``struct x``, ``union x``, ``enum x``, or a typedef or base type name.

        Raises:
            LookupError: No such type.
        """
        words = name.split()
        kinds: tuple[int, ...]
        if len(words) == 2 and words[0] in ("struct", "union", "enum"):
            kinds = {"struct": (STRUCT,), "union": (UNION,), "enum": (ENUM, ENUM64)}[words[0]]
            name = words[1]
        else:
            kinds = (TYPEDEF, INT, FLOAT, STRUCT, UNION, ENUM, ENUM64)
            name = " ".join(words)
        tid = self.find(name, kinds)
        if tid is None:
            raise LookupError(f"BTF has no type {' '.join(words)!r}")
        return self.by_id(tid)

    def variable_type(self, name: str) -> CType | None:
        """Return a variable's type if BTF records the variable (per-cpu ones, in 6.1)."""
        tid = self.find(name, (VAR,))
        return None if tid is None else self.by_id(self._record(tid)[4])

    def by_id(self, tid: int) -> CType:
        """Return type ``tid`` (qualifiers skipped), built once."""
        t = self._cache.get(tid)
        if t is None:
            t = self._cache[tid] = self._build(tid)
        return t

    def _build(self, tid: int) -> CType:
        if tid == 0:
            return CType("void", "void", 0)
        name_off, kind, vlen, kflag, st, pos = self._record(tid)
        name = self._str(name_off)
        if kind in _QUALIFIERS:
            return self.by_id(st)
        if kind == INT:
            enc = int.from_bytes(self._data[pos + 12 : pos + 16], "little") >> 24
            return CType("bool" if enc & _INT_BOOL else "int", name, st, signed=bool(enc & _INT_SIGNED))
        if kind == FLOAT:
            return CType("float", name, st)
        if kind == PTR:
            return CType("ptr", "", 8, target=functools.partial(self.by_id, st))
        if kind == ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, pos + 12)
            size = self.by_id(elem).strip().size * nelems
            return CType("array", "", size, target=functools.partial(self.by_id, elem), length=nelems)
        if kind in (STRUCT, UNION):
            return CType(
                "struct" if kind == STRUCT else "union",
                name,
                st,
                members=functools.partial(self._members, pos + 12, vlen, kflag),
            )
        if kind in (ENUM, ENUM64):
            return CType("enum", name, st, signed=bool(kflag))
        if kind == TYPEDEF:
            return CType("typedef", name, self.by_id(st).strip().size, target=functools.partial(self.by_id, st))
        if kind == FWD:
            return CType("fwd", name, 0)
        if kind in (FUNC, FUNC_PROTO):
            return CType("func", name, 0)
        raise KernelMemoryError(self._where + pos, f"BTF type {tid} of kind {kind} is not a C type")

    def _members(self, pos: int, vlen: int, kflag: int) -> tuple[Member, ...]:
        out = []
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._data, pos + 12 * i)
            # With kind_flag set the offset word is bitfield_size << 24 | bit_offset.
            bits, width = (off & 0xFFFFFF, off >> 24) if kflag else (off, 0)
            out.append(Member(self._str(name_off), bits // 8, bits % 8, width, self.by_id(mtype)))
        return tuple(out)
