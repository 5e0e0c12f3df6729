"""Exception hierarchy of vmcorepack.

Every error the library raises on purpose derives from :class:`VmcorepackError`,
so a caller (the CLI included) can catch everything that is ours in one place
and let genuine bugs surface as tracebacks.  Exceptions carry structured data
(path, offset, pfn, key) so that callers need not parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence


class VmcorepackError(Exception):
    """Root of every error vmcorepack raises deliberately.

    It exists so callers can catch all of our errors with one ``except``.
    """


class FormatError(VmcorepackError):
    """An input file does not follow the format it claims to be.

    Attributes:
        path: The file being parsed (``"<stdin>"`` for streams, ``"<bytes>"``
            for in-memory buffers).
        offset: File offset where the problem was found, or ``None``.
        msg: What was expected and what was found.
    """

    def __init__(self, path: str, offset: int | None, msg: str) -> None:
        """Create the error.

        Args:
            path: The file being parsed.
            offset: File offset of the problem, or ``None`` if not tied to one.
            msg: Description of the problem.
        """
        self.path = path
        self.offset = offset
        self.msg = msg
        where = f" (at offset {offset:#x})" if offset is not None else ""
        super().__init__(f"{path}: {msg}{where}")


class ElfFormatError(FormatError):
    """An ELF vmcore is malformed or of a kind we cannot read."""


class KdumpFormatError(FormatError):
    """A kdump-compressed file (or split part) is malformed."""


class FlatFormatError(FormatError):
    """A makedumpfile flattened stream is malformed or truncated."""


class MachineError(FormatError):
    """An input comes from a machine vmcorepack cannot walk, or says two different machines."""


class VmcoreinfoError(VmcorepackError):
    """VMCOREINFO lacks a key the requested operation needs, or is garbage.

    Attributes:
        key: The missing or malformed key (``"SYMBOL(mem_section)"`` style).
    """

    def __init__(self, key: str, msg: str | None = None) -> None:
        """Create the error.

        Args:
            key: The VMCOREINFO key at fault.
            msg: Optional explanation; a default names the key as missing.
        """
        self.key = key
        super().__init__(msg or f"VMCOREINFO has no {key}")


class UnsupportedError(VmcorepackError):
    """A feature, architecture, kernel layout or codec that is not available."""


class CompressionError(VmcorepackError):
    """A codec failed on a page, or a stored page does not decode.

    Attributes:
        codec: Codec name.
        pfn: Page frame number of the page, if known.
    """

    def __init__(self, codec: str, pfn: int | None, msg: str) -> None:
        """Create the error.

        Args:
            codec: Codec name.
            pfn: Page frame number concerned, if known.
            msg: Description.
        """
        self.codec = codec
        self.pfn = pfn
        where = f" (pfn {pfn:#x})" if pfn is not None else ""
        super().__init__(f"{codec}: {msg}{where}")


class SourceReadError(VmcorepackError):
    """Physical memory could not be read from the source image.

    Attributes:
        path: The source file.
        phys_addr: The physical address that could not be read.
    """

    def __init__(self, path: str, phys_addr: int, msg: str) -> None:
        """Create the error.

        Args:
            path: The source file.
            phys_addr: Physical address at fault.
            msg: Description.
        """
        self.path = path
        self.phys_addr = phys_addr
        super().__init__(f"{path}: {msg} (physical address {phys_addr:#x})")


class KernelMemoryError(VmcorepackError):
    """Kernel data structures in the dump are inconsistent (bad page table, loop).

    Attributes:
        address: The virtual or physical address concerned.
    """

    def __init__(self, address: int, msg: str) -> None:
        """Create the error.

        Args:
            address: Address concerned.
            msg: Description.
        """
        self.address = address
        super().__init__(f"{msg} (address {address:#x})")


class OutputError(VmcorepackError):
    """The output cannot be created or written (exists, symlink, disk full).

    Attributes:
        path: The output path.
    """

    def __init__(self, path: str, msg: str) -> None:
        """Create the error.

        Args:
            path: The output file.
            msg: Description.
        """
        self.path = path
        self.msg = msg
        super().__init__(f"{path}: {msg}")


class DiskFullError(OutputError):
    """A write hit ENOSPC or the ``-L`` size limit.

    Attributes:
        offset: File offset of the write that failed.
        written: Bytes of that write which did reach the file.
    """

    def __init__(self, path: str, msg: str, offset: int, written: int) -> None:
        """Create the error.

        Args:
            path: The output file.
            msg: Description.
            offset: Offset of the failed write.
            written: Bytes of it that were written.
        """
        self.offset = offset
        self.written = written
        super().__init__(path, msg)


class IncompleteDumpError(OutputError):
    """The dump was cut short (disk full, size limit) and marked incomplete.

    Attributes:
        pages_written: Pages whose data reached the file.
        disk_full: The cause was ENOSPC or the size limit (a lower dump level may fit).
    """

    def __init__(self, path: str, msg: str, pages_written: int, disk_full: bool = False) -> None:
        """Create the error.

        Args:
            path: The output file.
            msg: Description of the cause.
            pages_written: Number of pages completely written.
            disk_full: Whether the cause was ENOSPC or the ``-L`` limit.
        """
        self.pages_written = pages_written
        self.disk_full = disk_full
        super().__init__(path, msg)


class VerificationError(VmcorepackError):
    """A dump does not match its source.

    Attributes:
        findings: Human-readable findings, first problems first.
    """

    def __init__(self, findings: Sequence[str]) -> None:
        """Create the error.

        Args:
            findings: The problems found.
        """
        self.findings = list(findings)
        head = findings[0] if findings else "verification failed"
        super().__init__(head)


class FilterError(VmcorepackError):
    """An erase config or Python filter is wrong (syntax, unknown symbol, type or member).

    The message starts with the line concerned (``line 3: ...``); the caller
    adds the file name.
    """


class UsageError(VmcorepackError):
    """Command-line parameters that conflict or are out of range."""
