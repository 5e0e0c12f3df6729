"""One view of the crashed kernel: symbol addresses, types and typed memory reads.

:func:`from_dump` builds it from the dump alone (kallsyms and BTF in kernel
memory, kernel/kallsyms.py and kernel/btf.py); kernel/dwarf.py builds the
same object from a debug vmlinux.  Erase configs and Python filters use
nothing else, so they work the same with or without ``-x``.
"""

from __future__ import annotations

from collections.abc import Iterator

from vmcorepack.errors import KernelMemoryError
from vmcorepack.kernel import kallsyms
from vmcorepack.kernel.btf import Btf
from vmcorepack.kernel.types import CType, SymbolSource, TypeSource
from vmcorepack.kernel.walk import Walker


class Program:
    """Symbols, types and memory of the dumped kernel.

    Attributes:
        mem: The page-table walk every read goes through.
        symbols: Where symbol addresses come from.
        types: Where types come from.
        origin: ``"kallsyms+BTF"`` or ``"DWARF"``, for messages.
    """

    def __init__(self, mem: Walker, symbols: SymbolSource, types: TypeSource, origin: str) -> None:
        """Combine a memory reader with a symbol and a type backend."""
        self.mem = mem
        self.symbols = symbols
        self.types = types
        self.origin = origin

    def symbol(self, name: str) -> int:
        """Return a symbol's address.

        Raises:
            LookupError: No such symbol.
        """
        addr = self.symbols.lookup(name)
        if addr is None:
            raise LookupError(f"no symbol {name!r} in {self.origin}")
        return addr

    def type(self, name: str) -> CType:
        """Return a named type (``struct task_struct``, ``pid_t``).

        Raises:
            LookupError: No such type.
        """
        return self.types.type(name)

    def variable(self, name: str, type: CType | str | None = None) -> Object:
        """Return a global variable as a typed object.

        Args:
            name: Its symbol.
            type: Its type, needed where the backend does not record
                variables' types (BTF has only per-cpu ones).

        Raises:
            LookupError: No such symbol, or its type is unknown and not given.
        """
        addr = self.symbol(name)
        if isinstance(type, str):
            type = self.type(type)
        if type is None:
            type = self.types.variable_type(name)
            if type is None:
                raise LookupError(f"{self.origin} does not record the type of {name!r}: give it as a cast")
        return Object(self, addr, type)

    def object(self, address: int, type: CType | str) -> Object:
        """Return the object of ``type`` at ``address``."""
        return Object(self, address, self.type(type) if isinstance(type, str) else type)

    def read(self, address: int, size: int) -> bytes:
        """Read kernel virtual memory (KernelMemoryError if it is not in the dump)."""
        return self.mem.read(address, size)

    def read_u64(self, address: int) -> int:
        """Read one 64-bit word."""
        return self.mem.read_u64(address)

    def vtop(self, address: int) -> int:
        """Translate a kernel virtual address to physical."""
        return self.mem.vtop(address)

    def list_for_each(self, head: int) -> Iterator[int]:
        """Yield the address of each ``list_head`` linked from the one at ``head`` (head excluded).

        Raises:
            KernelMemoryError: The list does not come back to its head
                within a million entries (corrupt or cyclic without head).
        """
        # struct list_head { next, prev }: next is at offset 0 (include/linux/types.h).
        node = self.read_u64(head)
        for _ in range(1 << 20):
            if node == head or node == 0:
                return
            yield node
            node = self.read_u64(node)
        raise KernelMemoryError(head, "list does not return to its head")

    def list_for_each_entry(self, head: int, type: CType | str, member: str) -> Iterator[Object]:
        """Yield each entry of a kernel list as ``container_of(node, type, member)``."""
        t = self.type(type) if isinstance(type, str) else type
        found = t.find_member(member)
        if found is None:
            raise LookupError(f"{t.spelling()} has no member {member!r}")
        for node in self.list_for_each(head):
            yield Object(self, node - found[0], t)

    def cpus(self) -> range:
        """Return the possible CPU numbers (``0 .. nr_cpu_ids - 1``)."""
        return range(int.from_bytes(self.read(self.symbol("nr_cpu_ids"), 4), "little"))

    def per_cpu(self, name: str, cpu: int, type: CType | str | None = None) -> Object:
        """Return CPU ``cpu``'s copy of a per-cpu variable (``per_cpu(name, cpu)``).

        The copy lives at the variable's symbol plus ``__per_cpu_offset[cpu]``
        (include/asm-generic/percpu.h); BTF records per-cpu variables' types.
        """
        var = self.variable(name, type)
        offset = self.read_u64(self.symbol("__per_cpu_offset") + 8 * cpu)
        return Object(self, (var.address + offset) & ((1 << 64) - 1), var.type)

    def tasks(self) -> Iterator[Object]:
        """Yield every ``struct task_struct`` on the task list, ``init_task`` first."""
        task = self.type("struct task_struct")
        init = self.symbol("init_task")
        yield Object(self, init, task)
        tasks = task.find_member("tasks")
        if tasks is None:
            raise LookupError("struct task_struct has no member 'tasks'")
        yield from self.list_for_each_entry(init + tasks[0], task, "tasks")


class Object:
    """A typed object in kernel memory.

    Attributes:
        prog: Its program.
        address: Its virtual address.
        type: Its type.
    """

    __slots__ = ("address", "prog", "type")

    def __init__(self, prog: Program, address: int, type: CType) -> None:
        """Describe the object of ``type`` at ``address``."""
        self.prog = prog
        self.address = address
        self.type = type

    def __repr__(self) -> str:
        """Show type and address."""
        return f"Object({self.type.spelling()!r}, {self.address:#x})"

    def member(self, path: str) -> Object:
        """Return a member, ``a.b.c`` walking nested (and anonymous) members without dereferencing.

        Raises:
            LookupError: No such member.
        """
        addr, t = self.address, self.type
        for name in path.split("."):
            found = t.find_member(name)
            if found is None:
                raise LookupError(f"{t.spelling()} has no member {name!r}")
            addr, t = addr + found[0], found[1]
        return Object(self.prog, addr, t)

    def __getattr__(self, name: str) -> Object:
        """``obj.comm`` is ``obj.member("comm")``."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.member(name)
        except LookupError as e:
            raise AttributeError(str(e)) from e

    def __getitem__(self, i: int) -> Object:
        """Element ``i`` of an array, or of what a pointer points to."""
        t = self.type.strip()
        if t.kind == "array":
            return Object(self.prog, self.address + i * t.target.strip().size, t.target)
        if t.kind == "ptr":
            return Object(self.prog, self.value_() + i * t.target.strip().size, t.target)
        raise TypeError(f"{t.spelling()} is not an array or a pointer")

    def raw(self) -> bytes:
        """Return the object's bytes."""
        return self.prog.read(self.address, self.type.strip().size)

    def value_(self) -> int:
        """Return the value of an integer, enum, bool or pointer (little-endian kernel)."""
        t = self.type.strip()
        if t.kind not in ("int", "bool", "enum", "ptr"):
            raise TypeError(f"{t.spelling()} has no scalar value")
        return int.from_bytes(self.raw(), "little", signed=t.signed)

    def deref(self) -> Object:
        """Return what a pointer points to."""
        t = self.type.strip()
        if t.kind != "ptr":
            raise TypeError(f"{t.spelling()} is not a pointer")
        return Object(self.prog, self.value_(), t.target)

    def string_(self, limit: int = 4096) -> bytes:
        """Return a C string: a char array's bytes up to its NUL, or what a char pointer points to."""
        t = self.type.strip()
        if t.kind == "array":
            data = self.raw()
        elif t.kind == "ptr":
            data = self.prog.read(self.value_(), limit)
        else:
            raise TypeError(f"{t.spelling()} is not a string")
        return data.split(b"\0", 1)[0]


def from_dump(mem: Walker) -> Program:
    """Build a :class:`Program` from the dump alone: kallsyms and BTF in kernel memory.

    Raises:
        VmcoreinfoError: VMCOREINFO does not name the kallsyms tables.
        LookupError: The kernel has no BTF.
        KernelMemoryError: The tables cannot be read.
    """
    vi = mem.source.vmcoreinfo
    assert vi is not None  # every walker requires it
    syms = kallsyms.decode(mem, vi)
    return Program(mem, syms, Btf.from_memory(mem, syms), "kallsyms+BTF")
