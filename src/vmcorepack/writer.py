"""Writing kdump-compressed files: output targets, headers and finalisation.

Two targets share one interface, ``pwrite(data, offset)``:

* :class:`FileOutput` writes a regular file (random access, sparse holes);
* :class:`FlatOutput` wraps every write in a flattened-stream record
  (docs/kdump-format.md §7) and ends the stream with the ``(-1, -1)`` marker
  only when the dump is whole.

Both are safe to share with forked worker processes: the file descriptor is
inherited and writes are positioned (regular file) or serialised by the
pipeline's sequencer (stream).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

import numpy as np

from vmcorepack.constants import DumpStatus
from vmcorepack.errors import DiskFullError, OutputError
from vmcorepack.formats import flat, kdump
from vmcorepack.formats.elf import encode_note
from vmcorepack.kernel import arch
from vmcorepack.sources import NoteInfo, Source
from vmcorepack.vmcoreinfo import VmcoreInfo

#: Pieces per pwritev call (Linux UIO_MAXIOV).
_IOV_MAX = 1024


class Output:
    """Base of output targets."""

    path: str
    fd: int
    #: makedumpfile ``-L``: no byte at or beyond this offset is written.
    limit: int | None = None

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at file ``offset`` of the dump.

        Args:
            data: Bytes to write.
            offset: Offset in the (logical) dump file.
        """
        raise NotImplementedError

    def write_parts(self, data: bytes | memoryview | list[bytes], offset: int) -> None:
        """Write consecutive pieces starting at ``offset``.

        Args:
            data: One bytes-like object or a list of bytes.
            offset: Offset of the first byte.
        """
        self.pwrite(data if isinstance(data, bytes | memoryview) else b"".join(data), offset)

    def finish(self) -> None:
        """Complete the output (end marker, fsync) after a whole dump."""

    def abort(self) -> None:
        """Give up: close without completing."""
        self.close()

    def close(self) -> None:
        """Close the descriptor."""
        if self.fd >= 0:
            if self.fd > 2:
                os.close(self.fd)
            self.fd = -1


def _write_all(fd: int, data: bytes | memoryview, path: str, offset: int | None, limit: int | None = None) -> None:
    """Write everything or raise; ENOSPC and the size limit raise DiskFullError.

    A write that crosses ``limit`` is cut there and fails, as makedumpfile's
    ``-L`` does (docs/kdump-format.md §17.2.4).
    """
    view = memoryview(data).cast("B")
    total = len(view)
    if limit is not None and offset is not None and offset + total > limit:
        total = max(0, limit - offset)
    done = 0
    while done < total:
        try:
            if offset is None:
                n = os.write(fd, view[done:total])
            else:
                n = os.pwrite(fd, view[done:total], offset + done)
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            at = (offset or 0) + done
            where = f" at offset {at:#x}" if offset is not None else ""
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise DiskFullError(path, f"no space left{where}: {e.strerror}", at, done) from e
            if e.errno == errno.EPIPE:
                raise OutputError(path, "broken pipe: the reader of the stream went away") from e
            raise OutputError(path, f"write failed{where}: {e.strerror}") from e
        if n == 0:
            raise OutputError(path, "write returned 0 bytes")
        done += n
    if total < len(view):
        at = (offset or 0) + total
        raise DiskFullError(path, f"size limit of {limit} bytes reached (-L)", at, total)


def check_output_path(path: str, force: bool) -> int:
    """Refuse an output path before any work is done; return the ``os.open`` flags to create it with.

    makedumpfile opens its dump file before it filters; the checks here let a
    caller fail as early, and :func:`create_output_file` makes them again
    when it creates the file.

    Args:
        path: Output path.
        force: Overwrite an existing regular file (makedumpfile ``-f``).

    Returns:
        Flags for ``os.open``.

    Raises:
        OutputError: The path exists (without force), is a symlink or not a
            regular file, or cannot be examined.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return flags | os.O_EXCL
    except OSError as e:
        raise OutputError(path, f"cannot examine: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(path, "is a symbolic link; refusing to write through it")
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(path, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        # A dump is written out of order and sized at the end: a device or a
        # pipe takes only a stream (kdump's raw targets run makedumpfile -F | dd).
        raise OutputError(path, "is not a regular file (use -F to write a stream to it)")
    if not force:
        raise OutputError(path, "already exists (use -f to overwrite)")
    return flags | os.O_TRUNC


def create_output_file(path: str, force: bool) -> int:
    """Create the dump file with mode 0600, refusing symlinks and (without force) existing files.

    A dump holds the secrets of the crashed machine, so it is created 0600 as
    makedumpfile does (``open_dump_file``: ``S_IRUSR|S_IWUSR``).

    Args:
        path: Output path.
        force: Overwrite an existing regular file (makedumpfile ``-f``).

    Returns:
        The open descriptor.

    Raises:
        OutputError: Refused by :func:`check_output_path`, or cannot be created.
    """
    flags = check_output_path(path, force)
    try:
        return os.open(path, flags, 0o600)
    except OSError as e:
        raise OutputError(path, f"cannot create: {e.strerror}") from e


class FileOutput(Output):
    """A regular (seekable) dump file."""

    def __init__(self, path: str, fd: int, remove_on_abort: bool = True) -> None:
        """Wrap an open descriptor.

        Args:
            path: Path, for messages and removal.
            fd: Writable descriptor.
            remove_on_abort: Delete the file when aborted before any page.
        """
        self.path = path
        self.fd = fd
        self.remove_on_abort = remove_on_abort

    @classmethod
    def create(cls, path: str, force: bool = False) -> FileOutput:
        """Create the file (0600, no symlinks, no overwrite without force).

        Args:
            path: Output path.
            force: Overwrite an existing file.

        Returns:
            The output.
        """
        return cls(path, create_output_file(path, force))

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        """Write at an absolute offset."""
        _write_all(self.fd, data, self.path, offset, self.limit)

    def write_parts(self, data: bytes | memoryview | list[bytes], offset: int) -> None:
        """Write pieces with ``pwritev`` (no joined copy of a chunk's pages)."""
        if isinstance(data, bytes | memoryview):
            self.pwrite(data, offset)
            return
        if self.limit is not None:
            self.pwrite(b"".join(data), offset)
            return
        pos = offset
        for a in range(0, len(data), _IOV_MAX):
            group = data[a : a + _IOV_MAX]
            total = sum(map(len, group))
            try:
                n = os.pwritev(self.fd, group, pos)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise DiskFullError(self.path, f"no space left at offset {pos:#x}", pos, 0) from e
                raise OutputError(self.path, f"write failed at offset {pos:#x}: {e.strerror}") from e
            if n < total:
                # Short write (signal, nearly full disk): finish the rest plainly.
                self.pwrite(b"".join(group)[n:], pos + n)
            pos += total

    def truncate(self, size: int) -> None:
        """Set the file size (sparse extension for trailing holes).

        Args:
            size: New size.
        """
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            raise OutputError(self.path, f"cannot set size: {e.strerror}") from e

    def abort(self) -> None:
        """Close and remove the file: a half-written dump must not look complete."""
        self.close()
        if self.remove_on_abort:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class FlatOutput(Output):
    """A flattened stream (``-F``), written sequentially to a descriptor."""

    def __init__(self, path: str, fd: int) -> None:
        """Start a stream: writes the 4096-byte flat header.

        Args:
            path: Name for messages (``"<stdout>"``).
            fd: Writable descriptor (a pipe or a file).
        """
        self.path = path
        self.fd = fd
        _write_all(fd, flat.encode_flat_header(), path, None)

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        """Emit one record: header then payload (cut at the ``-L`` limit)."""
        view = memoryview(data).cast("B")
        n = len(view)
        cut = n if self.limit is None else max(0, min(n, self.limit - offset))
        if cut:
            _write_all(self.fd, flat.encode_record_header(offset, cut), self.path, None)
            _write_all(self.fd, view[:cut], self.path, None)
        if cut < n:
            raise DiskFullError(self.path, f"size limit of {self.limit} bytes reached (-L)", offset + cut, cut)

    def finish(self) -> None:
        """Write the end marker: only a whole stream gets one."""
        _write_all(self.fd, flat.END_MARKER, self.path, None)


class DumpPlan(NamedTuple):
    """Everything fixed before page data is written.

    Attributes:
        geometry: File geometry (offsets of every region).
        header: Main header record.
        sub_header: Sub header record.
        notes: Notes blob copied behind the sub header.
        dump_level: The dump level.
        codec_flag: The codec's flag bit.
    """

    geometry: kdump.FileGeometry
    header: np.ndarray
    sub_header: np.ndarray
    notes: bytes
    dump_level: int
    codec_flag: int


def notes_for(source: Source) -> NoteInfo:
    """Return the notes blob to copy into the dump.

    ELF inputs keep their PT_NOTE verbatim.  A raw image with a VMCOREINFO file
    gets a synthesized VMCOREINFO note, so that crash and libkdumpfile find it.

    Args:
        source: The input.

    Returns:
        The notes summary.
    """
    if source.notes.blob or source.vmcoreinfo is None:
        return source.notes
    blob = encode_note(b"VMCOREINFO", 0, source.vmcoreinfo.raw)
    return NoteInfo.parse(blob, source.path, 0)


def utsname_fields(vmcoreinfo: VmcoreInfo | None, utsname: dict[str, bytes] | None) -> dict[str, bytes]:
    """Choose the header utsname.

    The kernel's ``init_uts_ns`` (read by the kernel layer) wins, as in
    makedumpfile; without it only the release from VMCOREINFO is known.

    Args:
        vmcoreinfo: VMCOREINFO, if any.
        utsname: Fields read from ``init_uts_ns``, if available.

    Returns:
        utsname field values.
    """
    if utsname:
        return utsname
    if vmcoreinfo is not None and vmcoreinfo.osrelease:
        return {"release": vmcoreinfo.osrelease.encode()}
    return {}


def make_plan(
    source: Source,
    dump_level: int,
    codec_flag: int,
    nr_dumpable: int,
    utsname: dict[str, bytes] | None = None,
) -> DumpPlan:
    """Fill in the main header and sub header (docs/kdump-format.md §2, §3).

    Args:
        source: Input.
        dump_level: Dump level actually used.
        codec_flag: Status bit of the codec (0 for none).
        nr_dumpable: Number of page descriptors.
        utsname: utsname read from the kernel, if available.

    Returns:
        The plan.
    """
    layout = kdump.X86_64
    notes = notes_for(source)
    geo = kdump.FileGeometry.compute(source.page_size, len(notes.blob), source.max_mapnr, nr_dumpable)
    h = kdump.new_header(layout)
    h["utsname"] = kdump.encode_utsname(layout, utsname_fields(source.vmcoreinfo, utsname))
    vi = source.vmcoreinfo
    h["tv_sec"] = (vi.crashtime or 0) if vi is not None else 0
    h["tv_usec"] = 0  # never set by makedumpfile; non-zero confuses libkdumpfile's probe
    h["status"] = codec_flag
    h["block_size"] = geo.block_size
    h["sub_hdr_size"] = geo.sub_hdr_size
    h["bitmap_blocks"] = geo.bitmap_blocks
    h["max_mapnr"] = min(geo.max_mapnr, 0xFFFFFFFF)
    h["nr_cpus"] = notes.nr_cpus
    sub = kdump.new_sub_header(layout)
    sub["phys_base"] = arch.for_source(source).phys_base(source)
    sub["dump_level"] = dump_level
    sub["max_mapnr_64"] = geo.max_mapnr
    if notes.blob:
        note_off = geo.block_size + layout.kdump_sub_header.itemsize
        sub["offset_note"] = note_off
        sub["size_note"] = len(notes.blob)
        if notes.vmcoreinfo_offset >= 0:
            sub["offset_vmcoreinfo"] = note_off + notes.vmcoreinfo_offset
            sub["size_vmcoreinfo"] = notes.vmcoreinfo_size
    return DumpPlan(geo, h, sub, notes.blob, dump_level, codec_flag)


def write_headers(out: Output, plan: DumpPlan) -> None:
    """Write main header, notes and sub header in makedumpfile's order (§13.1).

    Args:
        out: Target.
        plan: The plan.
    """
    bs = plan.geometry.block_size
    out.pwrite(plan.header.tobytes(), 0)
    if plan.notes:
        out.pwrite(plan.notes, bs + plan.sub_header.dtype.itemsize)
    out.pwrite(plan.sub_header.tobytes(), bs)


def write_eraseinfo(out: Output, plan: DumpPlan, text: bytes, end: int) -> int:
    """Append erase info after the page data and point the sub header at it.

    As makedumpfile's ``write_kdump_eraseinfo``: nothing is written and both
    sub header fields stay 0 when the text is empty.

    Args:
        out: Target.
        plan: The plan (its sub header is updated).
        text: Erase info lines.
        end: File offset right after the last page data byte.

    Returns:
        The new end of the file.
    """
    if not text:
        return end
    out.pwrite(text, end)
    plan.sub_header["offset_eraseinfo"] = end
    plan.sub_header["size_eraseinfo"] = len(text)
    out.pwrite(plan.sub_header.tobytes(), plan.geometry.block_size)
    return end + len(text)


def mark_incomplete(path: str, header_size: int = kdump.X86_64.disk_dump_header.itemsize) -> None:
    """Set ``DUMP_DH_COMPRESSED_INCOMPLETE`` in a regular dump file's header.

    Args:
        path: The dump file.
        header_size: Bytes of the main header.
    """
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise OutputError(path, f"cannot reopen to mark incomplete: {e.strerror}") from e
    try:
        raw = os.pread(fd, header_size, 0)
        if len(raw) < header_size:
            raw = raw.ljust(header_size, b"\0")
        h = np.frombuffer(raw, kdump.X86_64.disk_dump_header, count=1).copy()
        h["status"] |= int(DumpStatus.COMPRESSED_INCOMPLETE)
        os.pwrite(fd, h.tobytes(), 0)
    except OSError as e:
        raise OutputError(path, f"cannot mark incomplete: {e.strerror}") from e
    finally:
        os.close(fd)
