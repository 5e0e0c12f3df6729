"""Synthetic kallsyms tables and BTF blobs, encoded as the kernel lays them out.

The encoders follow scripts/kallsyms.c (token table, two-byte name lengths,
the three ``kallsyms_offsets`` encodings) and include/uapi/linux/btf.h; the
decoders under test (kernel/kallsyms.py, kernel/btf.py) share no code with
them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

#: Where the synthetic tables are put in the fake kernel address space.
TABLES = 0xFFFFFFFF82000000


class FakeMemory:
    """Kernel memory made of a few byte regions; identity-mapped to physical ``vaddr - BASE``."""

    BASE = 0xFFFFFFFF80000000

    def __init__(self) -> None:
        self.regions: list[tuple[int, bytearray]] = []

    def put(self, vaddr: int, data: bytes) -> None:
        self.regions.append((vaddr, bytearray(data)))

    def read(self, vaddr: int, size: int) -> bytes:
        for start, data in self.regions:
            if start <= vaddr < start + len(data):
                # Reads may run past a table (the decoder reads ahead): zeros there.
                chunk = bytes(data[vaddr - start : vaddr - start + size])
                return chunk + bytes(size - len(chunk))
        raise AssertionError(f"read of unmapped {vaddr:#x}+{size}")

    def read_u64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little")

    def vtop(self, vaddr: int) -> int:
        return vaddr - self.BASE


def encode_kallsyms(
    symbols: Sequence[tuple[str, str, int]], encoding: str, relative_base: int
) -> tuple[dict[str, int], FakeMemory]:
    """Lay out kallsyms tables for ``(type, name, address)`` symbols.

    Tokens: 0-127 are single characters, 128-255 some two- and three-letter
    strings, so that names decode through multi-byte tokens.  A 130-character
    name needs the two-byte length of Linux 6.1.

    Returns:
        (VMCOREINFO SYMBOL values, the memory holding the tables).
    """
    tokens = [bytes([c]) if 0 < c < 128 else b"" for c in range(128)]
    tokens[0] = b"\x7f"
    multi = [b"ini", b"t_", b"ta", b"sk", b"_s", b"te", b"xt", b"ern", b"pat", b"h"]
    tokens += multi + [b"zz%d" % i for i in range(128 - len(multi))]
    table = b""
    index = []
    for t in tokens:
        index.append(len(table))
        table += t + b"\0"
    names = b""
    for typ, name, _ in symbols:
        raw = (typ + name).encode()
        enc = []
        i = 0
        while i < len(raw):
            for j, t in enumerate(multi):
                if raw.startswith(t, i):
                    enc.append(128 + j)
                    i += len(t)
                    break
            else:
                enc.append(raw[i])
                i += 1
        n = len(enc)
        names += (bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])) + bytes(enc)
    mem = FakeMemory()
    addr = {
        "kallsyms_offsets": TABLES,
        "kallsyms_relative_base": TABLES + 0x10000,
        "kallsyms_num_syms": TABLES + 0x10008,
        "kallsyms_names": TABLES + 0x20000,
        "kallsyms_token_table": TABLES + 0x40000,
        "kallsyms_token_index": TABLES + 0x48000,
    }
    offsets = []
    for i, (_, _, a) in enumerate(symbols):
        if encoding == "relative_base":
            offsets.append(a - relative_base)
        elif encoding == "absolute_percpu":
            offsets.append((relative_base - 1 - a) & 0xFFFFFFFF)
        else:
            offsets.append((a - (addr["kallsyms_offsets"] + 4 * i)) & 0xFFFFFFFF)
    mem.put(addr["kallsyms_offsets"], struct.pack(f"<{len(offsets)}I", *offsets))
    mem.put(addr["kallsyms_relative_base"], struct.pack("<Q", relative_base))
    mem.put(addr["kallsyms_num_syms"], struct.pack("<I", len(symbols)))
    mem.put(addr["kallsyms_names"], names)
    mem.put(addr["kallsyms_token_table"], table)
    mem.put(addr["kallsyms_token_index"], struct.pack("<256H", *index))
    return addr, mem


class BtfBuilder:
    """Builds a BTF blob type by type (ids from 1)."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types: list[bytes] = []

    def _s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def _add(self, rec: bytes) -> int:
        self.types.append(rec)
        return len(self.types)

    def int_(self, name: str, size: int, signed: bool) -> int:
        return self._add(struct.pack("<IIII", self._s(name), 1 << 24, size, (1 if signed else 0) << 24 | size * 8))

    def ptr(self, target: int) -> int:
        return self._add(struct.pack("<III", 0, 2 << 24, target))

    def array(self, elem: int, index: int, n: int) -> int:
        return self._add(struct.pack("<IIIIII", 0, 3 << 24, 0, elem, index, n))

    def struct(self, name: str, size: int, members: Sequence[tuple[str, int, int]], union: bool = False) -> int:
        rec = struct.pack("<III", self._s(name), (5 if union else 4) << 24 | len(members), size)
        for mname, mtype, bit_off in members:
            rec += struct.pack("<III", self._s(mname), mtype, bit_off)
        return self._add(rec)

    def typedef(self, name: str, target: int) -> int:
        return self._add(struct.pack("<III", self._s(name), 8 << 24, target))

    def const(self, target: int) -> int:
        return self._add(struct.pack("<III", 0, 10 << 24, target))

    def var(self, name: str, target: int) -> int:
        return self._add(struct.pack("<IIII", self._s(name), 14 << 24, target, 1))

    def blob(self) -> bytes:
        types = b"".join(self.types)
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings))
        return hdr + types + self.strings


def task_btf() -> tuple[bytes, dict[str, int]]:
    """A small kernel-like BTF: list_head, a task_struct with an anonymous union, typedefs.

    Returns:
        (the blob, the member offsets the layout encodes).
    """
    b = BtfBuilder()
    char = b.int_("char", 1, True)
    uint = b.int_("unsigned int", 4, False)
    lng = b.int_("long int", 8, True)
    pid_t = b.typedef("pid_t", b.int_("int", 4, True))
    lh_fwd = len(b.types) + 2  # the list_head struct's id, after its pointer type
    lh_ptr = b.ptr(lh_fwd)
    lh = b.struct("list_head", 16, [("next", lh_ptr, 0), ("prev", lh_ptr, 64)])
    assert lh == lh_fwd
    idx = b.int_("__ARRAY_SIZE_TYPE__", 4, False)
    comm = b.array(b.const(char), idx, 16)
    anon = b.struct("", 8, [("flags", uint, 0), ("lval", lng, 0)], union=True)
    task = b.struct(
        "task_struct",
        64,
        [("state", uint, 0), ("", anon, 64), ("tasks", lh, 128), ("pid", pid_t, 256), ("comm", comm, 320)],
    )
    b.ptr(task)
    b.var("runqueues", lng)
    return b.blob(), {"state": 0, "flags": 8, "lval": 8, "tasks": 16, "pid": 32, "comm": 40, "size": 64}
