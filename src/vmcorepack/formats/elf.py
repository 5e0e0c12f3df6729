"""ELF core-file structures (what /proc/vmcore and QEMU write) as numpy dtypes.

Pure bytes in, records out: no file I/O here.  ``identify`` looks at the
invariant ``e_ident`` prefix first, then one dtype factory per (byte order,
class) decodes the rest (the pyelftools ``ELFStructs`` idea).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

import numpy as np

from vmcorepack.errors import ElfFormatError

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
ET_CORE = 4
# e_machine values of the machines Linux kdump runs on (the ELF gABI registry).
EM_386 = 3
EM_MIPS = 8
EM_PPC = 20
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_SPARCV9 = 43
EM_IA_64 = 50
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258
#: The gABI's names of those machines, for messages.
MACHINE_NAMES = {
    EM_386: "i386",
    EM_MIPS: "MIPS",
    EM_PPC: "PowerPC",
    EM_PPC64: "PPC64",
    EM_S390: "S390",
    EM_ARM: "ARM",
    EM_SPARCV9: "SPARC V9",
    EM_IA_64: "IA-64",
    EM_X86_64: "x86-64",
    EM_AARCH64: "AArch64",
    EM_RISCV: "RISC-V",
    EM_LOONGARCH: "LoongArch",
}
PT_LOAD = 1
PT_NOTE = 4
#: e_phnum value meaning "the real count is in section header 0's sh_info".
PN_XNUM = 0xFFFF
NT_PRSTATUS = 1
#: makedumpfile's -E sets bit 0 of e_flags on an incomplete ELF dump.
ELF_FLAG_INCOMPLETE = 1

#: Refuse absurd program-header counts before allocating anything.
MAX_PHNUM = 1 << 20
#: Refuse note blobs larger than this (a real PT_NOTE is a few KiB per CPU).
MAX_NOTE_SIZE = 64 << 20


@dataclasses.dataclass(frozen=True)
class ElfLayout:
    """Dtypes of one ELF flavour.

    Attributes:
        byteorder: ``"<"`` or ``">"``.
        elfclass: 32 or 64.
        ehdr: ELF header dtype.
        phdr: Program header dtype.
        shdr: Section header dtype.
        nhdr: Note header dtype.
    """

    byteorder: Literal["<", ">"]
    elfclass: Literal[32, 64]
    ehdr: np.dtype[np.void]
    phdr: np.dtype[np.void]
    shdr: np.dtype[np.void]
    nhdr: np.dtype[np.void]

    @classmethod
    def for_target(cls, byteorder: Literal["<", ">"], elfclass: Literal[32, 64]) -> ElfLayout:
        """Build the dtypes of one flavour.

        Args:
            byteorder: Byte order.
            elfclass: 32 or 64.

        Returns:
            The layout.
        """
        e = byteorder
        a = f"{e}u8" if elfclass == 64 else f"{e}u4"  # Elf_Addr / Elf_Off / xword
        ehdr = np.dtype(
            [
                ("e_ident", "S16"),
                ("e_type", f"{e}u2"),
                ("e_machine", f"{e}u2"),
                ("e_version", f"{e}u4"),
                ("e_entry", a),
                ("e_phoff", a),
                ("e_shoff", a),
                ("e_flags", f"{e}u4"),
                ("e_ehsize", f"{e}u2"),
                ("e_phentsize", f"{e}u2"),
                ("e_phnum", f"{e}u2"),
                ("e_shentsize", f"{e}u2"),
                ("e_shnum", f"{e}u2"),
                ("e_shstrndx", f"{e}u2"),
            ]
        )
        if elfclass == 64:
            phdr = np.dtype(
                [
                    ("p_type", f"{e}u4"),
                    ("p_flags", f"{e}u4"),
                    ("p_offset", a),
                    ("p_vaddr", a),
                    ("p_paddr", a),
                    ("p_filesz", a),
                    ("p_memsz", a),
                    ("p_align", a),
                ]
            )
        else:
            phdr = np.dtype(
                [
                    ("p_type", f"{e}u4"),
                    ("p_offset", a),
                    ("p_vaddr", a),
                    ("p_paddr", a),
                    ("p_filesz", a),
                    ("p_memsz", a),
                    ("p_flags", f"{e}u4"),
                    ("p_align", a),
                ]
            )
        shdr = np.dtype(
            [
                ("sh_name", f"{e}u4"),
                ("sh_type", f"{e}u4"),
                ("sh_flags", a),
                ("sh_addr", a),
                ("sh_offset", a),
                ("sh_size", a),
                ("sh_link", f"{e}u4"),
                ("sh_info", f"{e}u4"),
                ("sh_addralign", a),
                ("sh_entsize", a),
            ]
        )
        nhdr = np.dtype([("n_namesz", f"{e}u4"), ("n_descsz", f"{e}u4"), ("n_type", f"{e}u4")])
        return cls(byteorder, elfclass, ehdr, phdr, shdr, nhdr)


ELF64LE = ElfLayout.for_target("<", 64)

#: Segment table dtype used across the package (native byte order).
SEGMENT_DTYPE = np.dtype(
    [
        ("phys_start", "u8"),
        ("phys_end", "u8"),  # p_paddr + p_memsz
        ("virt_start", "u8"),
        ("file_offset", "u8"),
        ("file_size", "u8"),
    ]
)


class ElfCore(NamedTuple):
    """What a writer needs from an ELF core's headers.

    Attributes:
        layout: The ELF flavour.
        ehdr: Decoded ELF header (a numpy record).
        segments: PT_LOADs as a ``SEGMENT_DTYPE`` array, in header order.
        note_offset: File offset of the (last) PT_NOTE, or 0 if none.
        note_size: ``p_filesz`` of that PT_NOTE, or 0.
        e_machine: The machine number.
    """

    layout: ElfLayout
    ehdr: np.void
    segments: np.ndarray
    note_offset: int
    note_size: int
    e_machine: int


def identify(prefix: bytes) -> tuple[Literal["<", ">"], Literal[32, 64]] | None:
    """Return (byte order, class) if ``prefix`` starts like an ELF file, else None.

    Args:
        prefix: At least the first 16 bytes of a file.

    Returns:
        The flavour, or None when this is not ELF or the ident is malformed.
    """
    if len(prefix) < 16 or prefix[:4] != ELF_MAGIC:
        return None
    cls_byte, data_byte = prefix[4], prefix[5]
    if cls_byte not in (ELFCLASS32, ELFCLASS64) or data_byte not in (ELFDATA2LSB, ELFDATA2MSB):
        return None
    order: Literal["<", ">"] = "<" if data_byte == ELFDATA2LSB else ">"
    return order, (64 if cls_byte == ELFCLASS64 else 32)


def parse_core(read: Callable[[int, int], bytes], path: str, file_size: int) -> ElfCore:
    """Decode the ELF header and program headers of a vmcore.

    Args:
        read: ``read(offset, size) -> bytes`` over the file (may return short).
        path: File name for error messages.
        file_size: Size of the file, to check every range against.

    Returns:
        The decoded core.

    Raises:
        ElfFormatError: Anything malformed, or a flavour we do not support.
    """
    prefix = read(0, 64)
    flavour = identify(prefix)
    if flavour is None:
        raise ElfFormatError(path, 0, f"not an ELF file (bad magic {prefix[:4].hex()})")
    order, elfclass = flavour
    if elfclass != 64 or order != "<":
        raise ElfFormatError(
            path, 4, f"ELF{elfclass} {'big' if order == '>' else 'little'}-endian vmcores are not supported"
        )
    layout = ELF64LE
    if len(prefix) < layout.ehdr.itemsize:
        raise ElfFormatError(path, len(prefix), "truncated ELF header")
    ehdr = np.frombuffer(prefix, layout.ehdr, count=1)[0]
    if int(ehdr["e_type"]) != ET_CORE:
        raise ElfFormatError(path, 16, f"expected ELF type ET_CORE (4), got {int(ehdr['e_type'])}")
    phoff = int(ehdr["e_phoff"])
    phnum = int(ehdr["e_phnum"])
    phentsize = int(ehdr["e_phentsize"])
    if phentsize != layout.phdr.itemsize:
        raise ElfFormatError(path, 54, f"expected e_phentsize {layout.phdr.itemsize}, got {phentsize}")
    if phnum == PN_XNUM:
        shoff = int(ehdr["e_shoff"])
        # Range-check e_shoff before reading (a hostile one overflows pread).
        in_file = 0 < shoff and shoff + layout.shdr.itemsize <= file_size
        sh0 = read(shoff, layout.shdr.itemsize) if in_file else b""
        if len(sh0) < layout.shdr.itemsize:
            raise ElfFormatError(path, shoff, "e_phnum is PN_XNUM but section header 0 is missing")
        phnum = int(np.frombuffer(sh0, layout.shdr, count=1)[0]["sh_info"])
    if phnum == 0 or phnum > MAX_PHNUM:
        raise ElfFormatError(path, 56, f"unreasonable program header count {phnum}")
    table_size = phnum * phentsize
    if phoff + table_size > file_size:
        raise ElfFormatError(path, phoff, f"program headers ({phnum} x {phentsize} bytes) run past end of file")
    raw = read(phoff, table_size)
    if len(raw) < table_size:
        raise ElfFormatError(path, phoff + len(raw), "truncated program headers")
    phdrs = np.frombuffer(raw, layout.phdr)
    loads = phdrs[phdrs["p_type"] == PT_LOAD]
    notes = phdrs[phdrs["p_type"] == PT_NOTE]
    for i, ph in enumerate(loads):
        end = int(ph["p_offset"]) + int(ph["p_filesz"])
        if int(ph["p_filesz"]) > int(ph["p_memsz"]):
            raise ElfFormatError(path, phoff, f"PT_LOAD {i}: p_filesz {int(ph['p_filesz']):#x} > p_memsz")
        if end > file_size:
            raise ElfFormatError(
                path, int(ph["p_offset"]), f"PT_LOAD {i} data ends at {end:#x}, past end of file {file_size:#x}"
            )
        if int(ph["p_paddr"]) + int(ph["p_memsz"]) >= 1 << 64:
            raise ElfFormatError(path, phoff, f"PT_LOAD {i}: physical range overflows")
    segs = np.zeros(len(loads), SEGMENT_DTYPE)
    segs["phys_start"] = loads["p_paddr"]
    segs["phys_end"] = loads["p_paddr"].astype("u8") + loads["p_memsz"].astype("u8")
    segs["virt_start"] = loads["p_vaddr"]
    segs["file_offset"] = loads["p_offset"]
    segs["file_size"] = loads["p_filesz"]
    note_offset = note_size = 0
    if len(notes):
        # /proc/vmcore has exactly one merged PT_NOTE; makedumpfile takes the last.
        note_offset = int(notes[-1]["p_offset"])
        note_size = int(notes[-1]["p_filesz"])
        if note_size > MAX_NOTE_SIZE or note_offset + note_size > file_size:
            raise ElfFormatError(path, note_offset, f"PT_NOTE of {note_size} bytes runs past end of file")
    return ElfCore(layout, ehdr, segs, note_offset, note_size, int(ehdr["e_machine"]))


def machine_name(e_machine: int) -> str:
    """Return the gABI name of an ``e_machine`` value, for messages.

    Args:
        e_machine: The ELF header's machine number.

    Returns:
        For example ``AArch64``, or ``ELF machine 999`` for one not listed.
    """
    return MACHINE_NAMES.get(e_machine, f"ELF machine {e_machine}")


class Note(NamedTuple):
    """One ELF note.

    Attributes:
        name: Note name without the trailing NUL.
        type: ``n_type``.
        offset: Offset of the note header within the blob.
        desc_offset: Offset of the descriptor within the blob.
        desc: Descriptor bytes.
    """

    name: bytes
    type: int
    offset: int
    desc_offset: int
    desc: bytes


def _align4(n: int) -> int:
    return (n + 3) & ~3


def iter_notes(blob: bytes, path: str, base_offset: int, layout: ElfLayout = ELF64LE) -> Iterator[Note]:
    """Walk a PT_NOTE blob (4-byte aligned name and descriptor).

    Args:
        blob: The notes bytes.
        path: File name for errors.
        base_offset: File offset of the blob, for error messages.
        layout: ELF flavour.

    Yields:
        Each note in order.

    Raises:
        ElfFormatError: A note header or body runs past the blob.
    """
    pos = 0
    hsize = layout.nhdr.itemsize
    while pos + hsize <= len(blob):
        n = np.frombuffer(blob, layout.nhdr, count=1, offset=pos)[0]
        namesz, descsz, ntype = int(n["n_namesz"]), int(n["n_descsz"]), int(n["n_type"])
        if namesz == 0 and descsz == 0 and ntype == 0:
            # Zero padding after the last note (the kernel pads PT_NOTE).
            return
        name_off = pos + hsize
        desc_off = name_off + _align4(namesz)
        end = desc_off + _align4(descsz)
        if desc_off + descsz > len(blob):
            raise ElfFormatError(
                path, base_offset + pos, f"note of name size {namesz}, desc size {descsz} runs past the PT_NOTE"
            )
        name = blob[name_off : name_off + namesz].rstrip(b"\0")
        yield Note(name, ntype, pos, desc_off, blob[desc_off : desc_off + descsz])
        pos = end


def encode_note(name: bytes, ntype: int, desc: bytes, layout: ElfLayout = ELF64LE) -> bytes:
    """Encode one ELF note with 4-byte padding.

    Args:
        name: Note name without NUL (one is appended).
        ntype: Note type.
        desc: Descriptor.
        layout: ELF flavour.

    Returns:
        The note bytes.
    """
    h = np.zeros((), layout.nhdr)
    h["n_namesz"] = len(name) + 1
    h["n_descsz"] = len(desc)
    h["n_type"] = ntype
    nm = name + b"\0"
    return h.tobytes() + nm.ljust(_align4(len(nm)), b"\0") + desc.ljust(_align4(len(desc)), b"\0")


#: ``p_flags`` bits.
PF_X = 1
PF_W = 2
PF_R = 4
EV_CURRENT = 1


def encode_ehdr(
    phnum: int,
    e_type: int = ET_CORE,
    e_machine: int = EM_X86_64,
    e_flags: int = 0,
    layout: ElfLayout = ELF64LE,
) -> bytes:
    """Encode an ELF header whose program headers follow it directly.

    Args:
        phnum: Number of program headers (at ``e_phoff = e_ehsize``).
        e_type: Object type (``ET_CORE`` for a vmcore).
        e_machine: Machine number.
        e_flags: Processor flags.
        layout: ELF flavour.

    Returns:
        The header bytes (64 for ELF64, 52 for ELF32).
    """
    h = np.zeros((), layout.ehdr)
    cls_byte = ELFCLASS64 if layout.elfclass == 64 else ELFCLASS32
    data_byte = ELFDATA2LSB if layout.byteorder == "<" else ELFDATA2MSB
    h["e_ident"] = ELF_MAGIC + bytes([cls_byte, data_byte, EV_CURRENT]) + bytes(9)
    h["e_type"] = e_type
    h["e_machine"] = e_machine
    h["e_version"] = EV_CURRENT
    h["e_phoff"] = layout.ehdr.itemsize if phnum else 0
    h["e_flags"] = e_flags
    h["e_ehsize"] = layout.ehdr.itemsize
    h["e_phentsize"] = layout.phdr.itemsize
    h["e_phnum"] = min(phnum, PN_XNUM - 1)
    h["e_shentsize"] = layout.shdr.itemsize
    return h.tobytes()


def encode_phdr(
    p_type: int,
    p_offset: int,
    p_vaddr: int,
    p_paddr: int,
    p_filesz: int,
    p_memsz: int,
    p_flags: int = PF_R | PF_W | PF_X,
    p_align: int = 0,
    layout: ElfLayout = ELF64LE,
) -> bytes:
    """Encode one program header.

    Args:
        p_type: Segment type (``PT_LOAD``, ``PT_NOTE``).
        p_offset: File offset of the segment's data.
        p_vaddr: Virtual address.
        p_paddr: Physical address.
        p_filesz: Bytes of data in the file.
        p_memsz: Bytes in memory (>= ``p_filesz``).
        p_flags: ``PF_*`` bits.
        p_align: Alignment.
        layout: ELF flavour.

    Returns:
        The header bytes.
    """
    h = np.zeros((), layout.phdr)
    h["p_type"] = p_type
    h["p_flags"] = p_flags
    h["p_offset"] = p_offset
    h["p_vaddr"] = p_vaddr
    h["p_paddr"] = p_paddr
    h["p_filesz"] = p_filesz
    h["p_memsz"] = p_memsz
    h["p_align"] = p_align
    return h.tobytes()
