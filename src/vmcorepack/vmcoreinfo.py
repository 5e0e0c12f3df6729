"""VMCOREINFO: the kernel's own description of itself, exported in a note.

Lines are ``KEY=VALUE``.  The kernel writes them in ``kernel/vmcore_info.c``
(``VMCOREINFO_SYMBOL``, ``VMCOREINFO_SIZE``, ``VMCOREINFO_OFFSET``,
``VMCOREINFO_LENGTH``, ``VMCOREINFO_NUMBER``) and the arch adds its own in
``arch/x86/kernel/crash_core_64.c``.  No I/O here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from vmcorepack.errors import VmcoreinfoError

_KEY = re.compile(r"^(SYMBOL|SIZE|OFFSET|LENGTH|NUMBER)\((.+)\)$")
#: Refuse VMCOREINFO larger than this: the kernel's buffer is one page.
MAX_VMCOREINFO_SIZE = 1 << 20
#: Values are C ``long``s: signed or unsigned 64-bit.
_S64_MIN = -(1 << 63)
_U64_END = 1 << 64
#: SIZE() and OFFSET() describe C structures: refuse anything from 4 GiB up.
_MAX_STRUCT = 1 << 32


@dataclasses.dataclass(frozen=True)
class VmcoreInfo:
    """Parsed VMCOREINFO.

    Attributes:
        raw: The text as found (bytes, without trailing NULs).
        entries: Every ``KEY=VALUE`` pair, values as strings.
    """

    raw: bytes
    entries: Mapping[str, str]

    @classmethod
    def parse(cls, data: bytes, source: str = "VMCOREINFO") -> VmcoreInfo:
        """Parse VMCOREINFO text.

        Args:
            data: The descriptor of the VMCOREINFO note, or a ``-g`` file.
            source: Name for error messages.

        Returns:
            The parsed object.

        Raises:
            VmcoreinfoError: Binary garbage, or no ``KEY=VALUE`` line at all.
        """
        if len(data) > MAX_VMCOREINFO_SIZE:
            raise VmcoreinfoError("*", f"{source}: VMCOREINFO of {len(data)} bytes is implausibly large")
        text_b = data.rstrip(b"\0")
        try:
            text = text_b.decode("ascii")
        except UnicodeDecodeError as e:
            raise VmcoreinfoError("*", f"{source}: VMCOREINFO is not ASCII text (byte {e.start})") from e
        entries: dict[str, str] = {}
        for line in text.splitlines():
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep or not key:
                continue  # the kernel never writes such lines; ignore like makedumpfile
            entries.setdefault(key, value)
        if not entries:
            raise VmcoreinfoError("*", f"{source}: VMCOREINFO has no KEY=VALUE line")
        return cls(text_b, entries)

    def get(self, key: str) -> str | None:
        """Return the raw value of ``key`` or None."""
        return self.entries.get(key)

    def _int(self, key: str, base: int, lo: int = _S64_MIN, hi: int = _U64_END) -> int | None:
        v = self.entries.get(key)
        if v is None:
            return None
        try:
            n = int(v, 0) if v.lower().startswith(("0x", "-0x")) else int(v, base)
        except ValueError as e:
            raise VmcoreinfoError(key, f"VMCOREINFO {key}={v!r} is not a number") from e
        if not lo <= n < hi:
            # The kernel prints C longs: anything else is garbage, refused
            # here before it sizes a buffer or overflows a header field.
            raise VmcoreinfoError(key, f"VMCOREINFO {key}={v!r} is out of range [{lo:#x}, {hi:#x})")
        return n

    def symbol(self, name: str) -> int | None:
        """Return ``SYMBOL(name)`` (hex address) or None."""
        return self._int(f"SYMBOL({name})", 16, 0)

    def size(self, name: str) -> int | None:
        """Return ``SIZE(name)`` (decimal, below 4 GiB) or None."""
        return self._int(f"SIZE({name})", 10, 0, _MAX_STRUCT)

    def offset(self, name: str) -> int | None:
        """Return ``OFFSET(type.member)`` (decimal, below 4 GiB) or None."""
        return self._int(f"OFFSET({name})", 10, 0, _MAX_STRUCT)

    def length(self, name: str) -> int | None:
        """Return ``LENGTH(name)`` (decimal) or None."""
        return self._int(f"LENGTH({name})", 10, 0)

    def number(self, name: str) -> int | None:
        """Return ``NUMBER(name)`` (signed decimal, or 0x hex) or None."""
        return self._int(f"NUMBER({name})", 10)

    def require(self, kind: str, name: str) -> int:
        """Return a value that must exist.

        Args:
            kind: One of ``SYMBOL``, ``SIZE``, ``OFFSET``, ``LENGTH``, ``NUMBER``.
            name: The name inside the parentheses.

        Returns:
            The integer value.

        Raises:
            VmcoreinfoError: The key is missing.
        """
        getter = {
            "SYMBOL": self.symbol,
            "SIZE": self.size,
            "OFFSET": self.offset,
            "LENGTH": self.length,
            "NUMBER": self.number,
        }[kind]
        v = getter(name)
        if v is None:
            raise VmcoreinfoError(f"{kind}({name})")
        return v

    @property
    def osrelease(self) -> str | None:
        """``OSRELEASE`` (kernel release string)."""
        return self.entries.get("OSRELEASE")

    @property
    def page_size(self) -> int | None:
        """``PAGESIZE`` in bytes."""
        return self._int("PAGESIZE", 10)

    @property
    def crashtime(self) -> int | None:
        """``CRASHTIME`` in seconds since the epoch."""
        return self._int("CRASHTIME", 10, _S64_MIN, -_S64_MIN)

    @property
    def kerneloffset(self) -> int | None:
        """``KERNELOFFSET`` (KASLR slide, hex without 0x)."""
        return self._int("KERNELOFFSET", 16, 0)

    @property
    def phys_base(self) -> int | None:
        """``NUMBER(phys_base)``."""
        return self.number("phys_base")
