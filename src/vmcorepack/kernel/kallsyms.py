"""The kernel's own symbol table (kallsyms), decoded from kernel memory.

Since Linux 6.0 (and in distribution backports) VMCOREINFO names the
kallsyms tables: ``SYMBOL(kallsyms_names)``, ``kallsyms_num_syms``,
``kallsyms_token_table``, ``kallsyms_token_index``, ``kallsyms_offsets`` and
``kallsyms_relative_base`` (kernel/vmcore_info.c, commit 5fd8fea935a1).  The
encoding is the one scripts/kallsyms.c writes:

- ``kallsyms_names``: per symbol a length byte (a second byte when bit 7 is
  set, 6.1's "big symbols" commit 73bbb94466fd3) then that many token
  numbers; each token expands through ``kallsyms_token_index`` (256 u16
  offsets) into a NUL-terminated string of ``kallsyms_token_table``.  The
  first expanded character is the symbol's type (``t``, ``D``, ``b``...).
- ``kallsyms_offsets``: one 32-bit value per symbol, turned into an address
  in one of three ways depending on the kernel's configuration.  Like
  makedumpfile's kallsyms.c (from drgn commit 744f36ec3c3f), the way that
  reproduces VMCOREINFO's ``SYMBOL(_stext)`` is the one used.

Names are kept as one newline-separated blob (a few MiB for a distribution
kernel) and searched with ``bytes.find``, not as a dictionary of 150,000
strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from vmcorepack.errors import KernelMemoryError, VmcoreinfoError
from vmcorepack.vmcoreinfo import VmcoreInfo

#: The VMCOREINFO symbols the decoder needs (``kallsyms_relative_base`` is
#: optional: kernels without CONFIG_KALLSYMS_BASE_RELATIVE lack it).
NEEDED = (
    "kallsyms_names",
    "kallsyms_num_syms",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_offsets",
    "_stext",
)
#: Symbol types of data objects (nm(1) letters) preferred by :meth:`KallSyms.lookup`.
DATA_TYPES = b"DdBbRrVv"
#: No sane kernel has more symbols than this (a guard against a garbage count).
_MAX_SYMS = 1 << 22
#: Bytes of ``kallsyms_names`` read at a time.
_NAMES_CHUNK = 1 << 18


class Memory(Protocol):
    """What the decoder reads kernel memory through (a :class:`~vmcorepack.kernel.walk.Walker`)."""

    def read(self, vaddr: int, size: int) -> bytes:
        """Read ``size`` bytes of kernel virtual memory."""
        ...


def has_kallsyms(vi: VmcoreInfo) -> bool:
    """Tell whether VMCOREINFO names every table the decoder needs."""
    return all(vi.symbol(n) is not None for n in NEEDED)


class KallSyms:
    """Decoded kallsyms: names, types and addresses of the kernel's symbols.

    Attributes:
        encoding: Which address encoding reproduced ``_stext``
            (``"absolute_percpu"``, ``"relative_base"`` or ``"place_relative"``).
    """

    def __init__(self, blob: bytes, addresses: np.ndarray, encoding: str) -> None:
        """Wrap decoded tables.

        Args:
            blob: A newline, then one line per symbol: its type letter
                directly followed by its name, each line ending in a newline.
            addresses: uint64 address of each symbol, in the same order.
            encoding: The address encoding used.
        """
        self._blob = blob
        self._addr = addresses
        self.encoding = encoding

    def __len__(self) -> int:
        """Return the number of symbols."""
        return len(self._addr)

    def _matches(self, name: str) -> Iterator[tuple[int, int]]:
        """Yield (index, type letter) of every symbol called ``name``."""
        key = name.encode() + b"\n"
        blob = self._blob
        pos = blob.find(key, 1)
        while pos >= 0:
            # A match must be a whole line: type letter right after a newline.
            if pos >= 2 and blob[pos - 2] == 0x0A:
                yield blob.count(b"\n", 0, pos - 1) - 1, blob[pos - 1]
            pos = blob.find(key, pos + 1)

    def lookup(self, name: str) -> int | None:
        """Return the address of ``name``, preferring a data symbol over text.

        Static symbols can share a name; the first data object (then the
        first symbol of any type) wins, as for ``/proc/kallsyms`` readers.

        Args:
            name: Symbol name.

        Returns:
            Its address, or None if the kernel has no such symbol.
        """
        first = None
        for idx, kind in self._matches(name):
            if kind in DATA_TYPES:
                return int(self._addr[idx])
            if first is None:
                first = idx
        return None if first is None else int(self._addr[first])

    def symbol_type(self, name: str) -> str | None:
        """Return the nm(1) type letter of the first symbol called ``name``."""
        for _, kind in self._matches(name):
            return chr(kind)
        return None

    def names(self) -> Iterator[tuple[str, str, int]]:
        """Yield (name, type letter, address) of every symbol in table order."""
        lines = self._blob[1:-1].split(b"\n") if len(self._addr) else []
        for line, addr in zip(lines, self._addr.tolist(), strict=True):
            yield line[1:].decode(errors="replace"), chr(line[0]), addr


def _decode_names(read: Callable[[int, int], bytes], base: int, count: int, tokens: list[bytes]) -> bytes:
    """Expand ``count`` compressed names starting at ``base`` into a line blob.

    The table's size is only known once decoded, so it is read
    :data:`_NAMES_CHUNK` bytes at a time as the decoder reaches its end.
    """
    buf = bytearray()
    pos = 0
    out = [b""]
    for _ in range(count):
        if len(buf) - pos < 2:
            buf += read(base + len(buf), _NAMES_CHUNK)
        n = buf[pos]
        if n & 0x80:
            # Two-byte length (73bbb94466fd3, v6.1): low 7 bits then the next byte.
            hi = buf[pos + 1]
            if hi & 0x80:
                raise KernelMemoryError(base + pos, "kallsyms_names has a 3-byte length")
            n = (n & 0x7F) | (hi << 7)
            pos += 2
        else:
            pos += 1
        while len(buf) - pos < n:
            buf += read(base + len(buf), _NAMES_CHUNK)
        out.append(b"".join([tokens[t] for t in buf[pos : pos + n]]))
        pos += n
    out.append(b"")
    return b"\n".join(out)


def decode(mem: Memory, vi: VmcoreInfo) -> KallSyms:
    """Decode kallsyms from kernel memory.

    Args:
        mem: Reader of kernel virtual memory.
        vi: VMCOREINFO naming the tables.

    Returns:
        The symbol table.

    Raises:
        VmcoreinfoError: A table is not named, or no address encoding
            reproduces ``SYMBOL(_stext)``.
        KernelMemoryError: A table cannot be read or is garbage.
    """
    sym = {}
    for n in NEEDED:
        v = vi.symbol(n)
        if v is None:
            raise VmcoreinfoError(f"SYMBOL({n})")
        sym[n] = v
    count = int.from_bytes(mem.read(sym["kallsyms_num_syms"], 4), "little")
    if not 0 < count <= _MAX_SYMS:
        raise KernelMemoryError(sym["kallsyms_num_syms"], f"kallsyms_num_syms is {count}")
    rel = vi.symbol("kallsyms_relative_base")
    relative_base = int.from_bytes(mem.read(rel, 8), "little") if rel is not None else 0
    index = np.frombuffer(mem.read(sym["kallsyms_token_index"], 512), "<u2")
    table_end = int(index.max())
    raw_table = mem.read(sym["kallsyms_token_table"], table_end + 256)
    tokens = []
    for off in index.tolist():
        end = raw_table.find(b"\0", off)
        if end < 0:
            raise KernelMemoryError(sym["kallsyms_token_table"] + off, "kallsyms token is not terminated")
        tokens.append(raw_table[off:end])
    blob = _decode_names(mem.read, sym["kallsyms_names"], count, tokens)
    offsets = np.frombuffer(mem.read(sym["kallsyms_offsets"], 4 * count), "<u4")
    addresses, encoding = _addresses(offsets, relative_base, sym["kallsyms_offsets"], blob, sym["_stext"])
    return KallSyms(blob, addresses, encoding)


def _addresses(offsets: np.ndarray, base: int, table: int, blob: bytes, stext: int) -> tuple[np.ndarray, str]:
    """Turn ``kallsyms_offsets`` into addresses, in the encoding that gives ``_stext`` its VMCOREINFO value."""
    u64 = np.uint64
    signed = offsets.view("<i4").astype(np.int64)
    mask = (1 << 64) - 1

    def absolute_percpu() -> np.ndarray:
        # CONFIG_KALLSYMS_ABSOLUTE_PERCPU: non-negative values are absolute
        # (per-cpu offsets), negative ones count down from relative_base - 1.
        neg = (base - 1) & mask
        return np.where(signed >= 0, signed.astype(u64), u64(neg) - signed.astype(u64))

    def relative_base() -> np.ndarray:
        return offsets.astype(u64) + u64(base)

    def place_relative() -> np.ndarray:
        # Linux 6.15+: each entry is relative to its own address.
        own = u64(table) + np.arange(len(offsets), dtype=u64) * u64(4)
        return own + signed.astype(u64)

    stext_idx = KallSyms(blob, np.zeros(len(offsets), u64), "")._matches("_stext")
    idx = next((i for i, _ in stext_idx), None)
    if idx is None:
        raise VmcoreinfoError("SYMBOL(_stext)", "kallsyms has no _stext to check the address encoding against")
    with np.errstate(over="ignore"):
        for name, fn in (
            ("absolute_percpu", absolute_percpu),
            ("relative_base", relative_base),
            ("place_relative", place_relative),
        ):
            addrs = fn()
            if int(addrs[idx]) == stext:
                return addrs, name
    raise VmcoreinfoError("SYMBOL(_stext)", f"no kallsyms address encoding gives _stext = {stext:#x}")
