"""C types of the crashed kernel, whatever they were read from (BTF or DWARF).

The type backends (kernel/btf.py reads the kernel's own BTF out of the dump;
kernel/dwarf.py reads a debug vmlinux through drgn) build :class:`CType`
objects; everything above (erase configs, Python filters) sees only these.
Qualifiers (``const``, ``volatile``, ``restrict``, type tags) are dropped by the
backends: no consumer needs them and they would only get in the way of a
member walk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

#: Kinds a :class:`CType` can have.
KINDS = ("void", "int", "bool", "float", "ptr", "array", "struct", "union", "enum", "typedef", "func", "fwd")


class Member(NamedTuple):
    """One member of a struct or union.

    Attributes:
        name: Its name; "" for an anonymous struct or union member.
        offset: Byte offset from the start of the containing type.
        bit_offset: Bit offset inside that byte for a bit field, else 0.
        bit_size: Width of a bit field, 0 for a plain member.
        type: Its type.
    """

    name: str
    offset: int
    bit_offset: int
    bit_size: int
    type: CType


class CType:
    """A C type: its kind, name, size and, lazily, what it refers to.

    Attributes:
        kind: One of :data:`KINDS`.
        name: Tag or typedef name ("" if anonymous); for a pointer or an
            array the name of what it points to or holds.
        size: ``sizeof`` in bytes (0 for void, functions and forward
            declarations; a typedef has its target's size).
        length: Number of elements of an array, else None.
        signed: Whether an integer or enum is signed.
    """

    __slots__ = ("_members", "_target", "kind", "length", "name", "signed", "size")

    def __init__(
        self,
        kind: str,
        name: str,
        size: int,
        target: Callable[[], CType] | None = None,
        members: Callable[[], Sequence[Member]] | None = None,
        length: int | None = None,
        signed: bool = False,
    ) -> None:
        """Describe a type.

        Args:
            kind: One of :data:`KINDS`.
            name: Its name.
            size: Its size in bytes.
            target: Builds the pointed-to, element or aliased type.
            members: Builds the member list of a struct or union.
            length: Element count of an array.
            signed: Signedness of an integer or enum.
        """
        self.kind = kind
        self.name = name
        self.size = size
        self.length = length
        self.signed = signed
        self._target = target
        self._members = members

    def __repr__(self) -> str:
        """Show the type as C spells it."""
        return f"CType({self.spelling()!r}, size={self.size})"

    def spelling(self) -> str:
        """Return the type as C would name it (``struct task_struct``, ``char [16]``)."""
        if self.kind in ("struct", "union", "enum"):
            return f"{self.kind} {self.name or '<anonymous>'}"
        if self.kind == "ptr":
            return f"{self.target.spelling()} *"
        if self.kind == "array":
            return f"{self.target.spelling()} [{self.length}]"
        return self.name or self.kind

    @property
    def target(self) -> CType:
        """The pointed-to type of a pointer, element type of an array, aliased type of a typedef."""
        if self._target is None:
            raise TypeError(f"{self.spelling()} refers to no other type")
        return self._target()

    @property
    def members(self) -> Sequence[Member]:
        """Members of a struct or union (empty for other kinds)."""
        return self._members() if self._members is not None else ()

    def strip(self) -> CType:
        """Return the type with typedefs resolved."""
        t = self
        while t.kind == "typedef":
            t = t.target
        return t

    def find_member(self, name: str) -> tuple[int, CType] | None:
        """Find a member by name, looking through anonymous struct and union members.

        Args:
            name: Member name.

        Returns:
            (byte offset from the start of this type, member type), or None.
        """
        t = self.strip()
        for m in t.members:
            if m.name == name:
                return m.offset, m.type
        for m in t.members:
            if not m.name and m.type.strip().kind in ("struct", "union"):
                found = m.type.find_member(name)
                if found is not None:
                    return m.offset + found[0], found[1]
        return None


class TypeSource(Protocol):
    """What a type backend gives: named types and, where recorded, variables' types."""

    def type(self, name: str) -> CType:
        """Return a named type (``struct x``, ``union x``, ``enum x`` or a typedef or base type name).

        Raises:
            LookupError: No such type.
        """
        ...

    def variable_type(self, name: str) -> CType | None:
        """Return the declared type of a global variable, or None where the backend does not record it."""
        ...


class SymbolSource(Protocol):
    """What a symbol backend gives: the run-time address of a kernel symbol."""

    def lookup(self, name: str) -> int | None:
        """Return the address of ``name`` (relocated for KASLR), or None."""
        ...
