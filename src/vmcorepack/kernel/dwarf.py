"""Symbols and types from a debug vmlinux's DWARF (``-x VMLINUX``), through drgn.

drgn indexes the DWARF of a 630 MB Debian vmlinux in well under a second
(pyelftools builds Python objects for every DIE it walks and is far slower on
a file that size), so it is the backend; it stays an optional dependency,
imported only here.  drgn is given the dump as its core so that it applies
the kernel's KASLR offset (VMCOREINFO ``KERNELOFFSET``) to symbol addresses
itself; memory is still read through vmcorepack's own page-table walk.
"""

from __future__ import annotations

import functools
from typing import Any

from vmcorepack.errors import UnsupportedError
from vmcorepack.kernel.program import Program
from vmcorepack.kernel.types import CType, Member
from vmcorepack.kernel.walk import Walker


def _drgn() -> Any:
    try:
        import drgn
    except ImportError as e:
        raise UnsupportedError("-x needs drgn (pip install drgn) to read the vmlinux's DWARF") from e
    return drgn


class DwarfTypes:
    """:class:`~vmcorepack.kernel.types.TypeSource` over drgn's view of the vmlinux."""

    def __init__(self, prog: Any) -> None:
        """Wrap a drgn program with the vmlinux's debug info loaded."""
        self._prog = prog
        self._drgn = _drgn()

    def type(self, name: str) -> CType:
        """Return a named type (LookupError if the DWARF has none)."""
        return self.wrap(self._prog.type(name))

    def variable_type(self, name: str) -> CType | None:
        """Return a global variable's declared type, or None if there is no such variable."""
        try:
            return self.wrap(self._prog.object(name).type_)
        except (LookupError, ValueError):
            return None

    def lookup(self, name: str) -> int | None:
        """Return a symbol's relocated address (a :class:`~vmcorepack.kernel.types.SymbolSource`)."""
        try:
            return int(self._prog.symbol(name).address)
        except LookupError:
            return None

    def wrap(self, t: Any) -> CType:
        """Turn a drgn type into a :class:`CType` (qualifiers dropped)."""
        k = self._drgn.TypeKind
        kind = t.kind
        name = getattr(t, "tag", None) or getattr(t, "name", None) or ""
        if kind == k.VOID:
            return CType("void", "void", 0)
        if kind in (k.INT, k.BOOL):
            return CType("int" if kind == k.INT else "bool", t.name, t.size, signed=bool(t.is_signed))
        if kind == k.FLOAT:
            return CType("float", t.name, t.size)
        if kind == k.POINTER:
            return CType("ptr", "", t.size, target=functools.partial(self.wrap, t.type))
        if kind == k.ARRAY:
            length = t.length or 0
            elem = t.type
            return CType(
                "array", "", length * self._sizeof(elem), target=functools.partial(self.wrap, elem), length=length
            )
        if kind in (k.STRUCT, k.UNION, k.CLASS):
            return CType(
                "union" if kind == k.UNION else "struct",
                name,
                t.size or 0,
                members=functools.partial(self._members, t),
            )
        if kind == k.ENUM:
            return CType("enum", name, t.size or 0, signed=bool(t.type is not None and t.type.is_signed))
        if kind == k.TYPEDEF:
            return CType("typedef", t.name, self._sizeof(t), target=functools.partial(self.wrap, t.type))
        return CType("func", name, 0)

    def _sizeof(self, t: Any) -> int:
        try:
            return int(self._drgn.sizeof(t))
        except (TypeError, ValueError):
            return 0

    def _members(self, t: Any) -> tuple[Member, ...]:
        if not t.is_complete():
            return ()
        return tuple(
            Member(m.name or "", m.bit_offset // 8, m.bit_offset % 8, m.bit_field_size or 0, self.wrap(m.type))
            for m in t.members
        )


def program(mem: Walker, vmlinux: str, core: str) -> Program:
    """Build a :class:`Program` whose symbols and types come from ``vmlinux``'s DWARF.

    Args:
        mem: The dump's page-table walk (memory is read through it).
        vmlinux: The debug vmlinux.
        core: The dump, opened by drgn only to learn the KASLR offset.

    Raises:
        UnsupportedError: drgn is not installed, or cannot load the files.
    """
    drgn = _drgn()
    prog = drgn.Program()
    try:
        prog.set_core_dump(core)
        prog.load_debug_info([vmlinux])
    except (drgn.MissingDebugInfoError, ValueError, OSError) as e:
        raise UnsupportedError(f"{vmlinux}: drgn cannot load it with {core}: {e}") from e
    types = DwarfTypes(prog)
    try:
        types.type("struct task_struct")
    except LookupError as e:
        raise UnsupportedError(f"{vmlinux}: no kernel DWARF (struct task_struct not found)") from e
    return Program(mem, types, types, "DWARF")
