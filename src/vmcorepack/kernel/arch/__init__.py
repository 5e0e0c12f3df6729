"""Which machine's kernel wrote a dump, and whether vmcorepack can walk it.

Everything vmcorepack reads out of a dump beyond the raw pages (the page
tables, the struct page array, the kernel log, utsname) is laid out by the
dumped machine's architecture.  Walking an AArch64 kernel with x86-64 page
tables does not fail: it writes a wrong dump.  So every input is checked here
before anything is written, from two independent witnesses:

- the machine the container records: the ELF header's ``e_machine``
  (/proc/vmcore, QEMU cores) or the kdump header's ``utsname.machine``;
- the VMCOREINFO keys that only one architecture's
  ``arch_crash_save_vmcoreinfo()`` writes (arch/*/kernel/vmcore_info.c, or
  crash_core.c and machine_kexec*.c before 6.9).

An input is refused when its machine is not one we walk, or when the two
witnesses disagree.  A raw image records no machine: its VMCOREINFO decides,
and without one it is taken as x86-64, as it always was.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from vmcorepack.errors import MachineError
from vmcorepack.formats import elf
from vmcorepack.kernel.arch import arm64, x86_64
from vmcorepack.kernel.walk import Walker
from vmcorepack.sources import Source
from vmcorepack.vmcoreinfo import VmcoreInfo


class Machine(Protocol):
    """What an architecture module provides (kernel/arch/x86_64.py is the model): the module is the object."""

    def walker(self, source: Source) -> Walker:
        """Make the page-table walk of ``source`` (VmcoreinfoError without what it starts from)."""
        ...

    def phys_base(self, source: Source) -> int:
        """Return the kernel's relocation, for the sub header's ``phys_base``."""
        ...

    def has_page_tables(self, vi: VmcoreInfo) -> bool:
        """Tell whether VMCOREINFO names what the walk starts from."""
        ...


class Arch(NamedTuple):
    """One architecture Linux kdump runs on.

    Attributes:
        e_machine: Its ELF machine number.
        unames: ``utsname.machine`` values its kernels report.
        markers: VMCOREINFO keys that only its kernels write.
        machine: Its module's entry points, or None where vmcorepack
            cannot walk its kernels yet.
    """

    e_machine: int
    unames: tuple[str, ...]
    markers: tuple[str, ...]
    machine: Machine | None = None

    @property
    def label(self) -> str:
        """The gABI name of the machine (``AArch64``)."""
        return elf.machine_name(self.e_machine)


ARCHES = (
    # arch/x86/kernel/machine_kexec_64.c: init_top_pgt since 4.13 (init_level4_pgt
    # before), pgtable_l5_enabled since 4.17.
    Arch(
        elf.EM_X86_64,
        ("x86_64",),
        ("SYMBOL(init_top_pgt)", "SYMBOL(init_level4_pgt)", "NUMBER(pgtable_l5_enabled)"),
        x86_64,
    ),
    # arch/arm64: kimage_voffset since 4.6, TCR_EL1_T1SZ (first spelled tcr_el1_t1sz) since 5.9.
    Arch(
        elf.EM_AARCH64,
        ("aarch64", "arm64"),
        ("NUMBER(kimage_voffset)", "NUMBER(TCR_EL1_T1SZ)", "NUMBER(tcr_el1_t1sz)"),
        arm64,
    ),
    # arch/powerpc (CONFIG_PPC64 with SPARSEMEM_VMEMMAP).
    Arch(elf.EM_PPC64, ("ppc64", "ppc64le"), ("SYMBOL(mmu_psize_defs)", "SYMBOL(vmemmap_list)")),
    # arch/s390.
    Arch(elf.EM_S390, ("s390x", "s390"), ("SYMBOL(lowcore_ptr)",)),
    # arch/riscv: phys_ram_base since 5.18.
    Arch(elf.EM_RISCV, ("riscv64",), ("NUMBER(phys_ram_base)", "NUMBER(KERNEL_LINK_ADDR)")),
)
_BY_MACHINE = {a.e_machine: a for a in ARCHES}


def e_machine_of_uname(machine: str, path: str, offset: int) -> int | None:
    """Map a kdump header's ``utsname.machine`` to an ELF machine number.

    Args:
        machine: The recorded name (``x86_64``, ``aarch64``); empty when the
            writer had no VMCOREINFO to fill it from.
        path: The dump, for the error message.
        offset: Where the name is recorded, for the error message.

    Returns:
        The machine number, or None for an empty name.

    Raises:
        MachineError: A machine vmcorepack does not know.
    """
    if not machine:
        return None
    for a in ARCHES:
        if machine in a.unames:
            return a.e_machine
    raise MachineError(path, offset, f"{machine} dumps are not supported yet")


def vmcoreinfo_arch(vi: VmcoreInfo | None) -> Arch | None:
    """Return the architecture whose marker keys VMCOREINFO carries.

    Args:
        vi: The dump's VMCOREINFO, or None.

    Returns:
        The one architecture whose markers are present, or None when there
        are none (a hand-written or synthetic VMCOREINFO) or when markers of
        several architectures make the text say nothing certain.
    """
    if vi is None:
        return None
    found = [a for a in ARCHES if any(k in vi.entries for k in a.markers)]
    return found[0] if len(found) == 1 else None


def for_source(source: Source) -> Machine:
    """Return the architecture module of ``source``'s kernel, refusing what we cannot walk.

    Args:
        source: The opened input.

    Returns:
        Its architecture's entry points.

    Raises:
        MachineError: The machine is not one vmcorepack can walk, or the
            container's machine and VMCOREINFO disagree.
    """
    recorded = source.e_machine
    told = vmcoreinfo_arch(source.vmcoreinfo)
    if recorded is not None:
        arch = _BY_MACHINE.get(recorded)
        where = source.machine_offset
        if arch is None or arch.machine is None:
            raise MachineError(source.path, where, f"{elf.machine_name(recorded)} vmcores are not supported yet")
        if told is not None and told.e_machine != arch.e_machine:
            raise MachineError(source.path, where, f"the header says {arch.label} but its VMCOREINFO says {told.label}")
        return arch.machine
    arch = told or _BY_MACHINE[elf.EM_X86_64]
    if arch.machine is None:
        raise MachineError(source.path, None, f"its VMCOREINFO says {arch.label}, which is not supported yet")
    return arch.machine
