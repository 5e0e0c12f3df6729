"""What the rest of the code needs from an architecture's page-table walk.

Each module of kernel/arch/ provides a :class:`Walker` for its kernels; the
memory model (kernel/memmap.py), the page pass (filter.py) and the kernel log
(dmesg.py) read kernel memory only through it, so nothing above this line
knows which machine wrote the dump.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from vmcorepack.errors import VmcoreinfoError
from vmcorepack.sources import Source


class PhysRun(NamedTuple):
    """A virtually and physically contiguous piece of a translated range.

    Attributes:
        vaddr: Virtual start.
        paddr: Physical start.
        size: Length in bytes.
    """

    vaddr: int
    paddr: int
    size: int


class Walker(Protocol):
    """Kernel virtual -> physical translation of one dump.

    Attributes:
        source: The dump.
        kernel_space_start: Lowest kernel virtual address: a pointer below
            it (a mem_section root, a mem_map) is garbage.
        section_size_bits: ``SECTION_SIZE_BITS`` when VMCOREINFO lacks it.
        max_physmem_bits: ``MAX_PHYSMEM_BITS`` when VMCOREINFO lacks it.
    """

    source: Source
    kernel_space_start: int
    section_size_bits: int
    max_physmem_bits: int

    def vtop(self, vaddr: int) -> int:
        """Translate one kernel virtual address (KernelMemoryError if unmapped)."""
        ...

    def runs(self, vaddr: int, size: int) -> list[PhysRun]:
        """Translate a virtual range into physically contiguous runs."""
        ...

    def read(self, vaddr: int, size: int) -> bytes:
        """Read ``size`` bytes of kernel virtual memory."""
        ...

    def read_u64(self, vaddr: int) -> int:
        """Read one 64-bit word of kernel memory in the kernel's byte order."""
        ...


#: Field names of ``struct new_utsname`` in header order.
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
#: ``__NEW_UTS_LEN + 1``.
UTS_FIELD_LEN = 65


def read_utsname(walker: Walker) -> dict[str, bytes]:
    """Read ``init_uts_ns.name`` (the crashed kernel's ``uname``).

    makedumpfile reads ``SYMBOL(init_uts_ns) + OFFSET(uts_namespace.name)``,
    or ``+ sizeof(int)`` when the offset is not exported (the ``kref`` that
    preceded ``name`` in old kernels), and copies the 390 bytes into the
    header (docs/kdump-format.md §2.1).

    Args:
        walker: Translator of the dump.

    Returns:
        The six fields, trailing NULs removed.

    Raises:
        VmcoreinfoError: ``SYMBOL(init_uts_ns)`` missing.
        KernelMemoryError: It cannot be read.
    """
    vi = walker.source.vmcoreinfo
    assert vi is not None  # every walker requires it
    base = vi.symbol("init_uts_ns")
    if base is None:
        raise VmcoreinfoError("SYMBOL(init_uts_ns)")
    off = vi.offset("uts_namespace.name")
    raw = walker.read(base + (4 if off is None else off), UTS_FIELD_LEN * len(UTS_FIELDS))
    return {name: raw[i * UTS_FIELD_LEN : (i + 1) * UTS_FIELD_LEN].rstrip(b"\0") for i, name in enumerate(UTS_FIELDS)}
