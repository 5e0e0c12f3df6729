"""Whole-stream compression around flattened streams: gzip, bzip2, xz, zstd and LZ4 frames.

Distributions save ``makedumpfile -F`` output piped through a compressor
(Ubuntu's kdump-tools, SLES; docs/features.md §4).  Reading: :func:`open_decompressed`
recognises the compressor by its magic number and returns a file object that
decompresses on the fly, in bounded memory (the stdlib ``gzip``/``bz2``/``lzma``
readers, zstandard's ``stream_reader``, and ``lz4.frame`` from PyPI ``lz4``).
Concatenated frames/members are read through, as the command-line tools do.

Writing: :class:`CompressingPipe` compresses a flattened stream with LZ4 or
zstd in one thread of the calling process.  The pipeline writes its records
into the pipe's write end (the forked workers inherit it and write in turn,
as they do to stdout), so one compressor sees the records in stream order and
the workers keep compressing pages in parallel.  The thread ends when the last
copy of the write end is closed.

The optional ``lz4`` and ``zstandard`` imports of whole-stream codecs live here.
"""

from __future__ import annotations

import errno
import io
import os
from typing import Any, BinaryIO

from vmcorepack.errors import FormatError, OutputError, UnsupportedError, VmcorepackError

#: Magic numbers, longest first where one could be a prefix of another.
MAGICS: tuple[tuple[str, bytes], ...] = (
    ("xz", b"\xfd7zXZ\x00"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("lz4", b"\x04\x22\x4d\x18"),
    ("bzip2", b"BZh"),
    ("gzip", b"\x1f\x8b"),
)
#: Bytes needed to recognise every format.
MAGIC_LEN = max(len(m) for _, m in MAGICS)
#: Codecs :class:`CompressingPipe` can write.
WRITE_CODECS = ("lz4", "zstd")
#: Bytes moved per read of the pipe or the compressed input.
BUFFER_SIZE = 1 << 20

# Both are dependencies of vmcorepack; a hint for an install that lost one.
_HINTS = {"lz4": "pip install lz4", "zstd": "pip install zstandard"}


def detect(prefix: bytes) -> str | None:
    """Name the whole-stream compressor whose magic starts ``prefix``.

    Args:
        prefix: The first bytes of a file (at least :data:`MAGIC_LEN` to see every format).

    Returns:
        ``"gzip"``, ``"bzip2"``, ``"xz"``, ``"zstd"``, ``"lz4"``, or None.
    """
    for name, magic in MAGICS:
        if prefix.startswith(magic):
            # bzip2: "BZh" then the block-size digit 1-9.
            if name == "bzip2" and not (len(prefix) > 3 and 0x31 <= prefix[3] <= 0x39):
                continue
            return name
    return None


def _lz4_frame() -> Any:
    try:
        import lz4.frame
    except ImportError as e:
        raise UnsupportedError(f"LZ4 frames need the lz4 package: {_HINTS['lz4']}") from e
    return lz4.frame


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError as e:
        raise UnsupportedError(f"zstd streams need the zstandard package: {_HINTS['zstd']}") from e
    return zstandard


def require(codec: str) -> None:
    """Fail now, before any output, when :class:`CompressingPipe` could not write ``codec``.

    Args:
        codec: ``"lz4"`` or ``"zstd"``.

    Raises:
        UnsupportedError: Unknown codec or library missing.
    """
    make_compressor(codec)


class Prefixed(io.RawIOBase):
    """A raw reader that returns already-consumed ``prefix`` bytes, then the rest of ``inner``."""

    def __init__(self, prefix: bytes, inner: BinaryIO) -> None:
        """Chain the two.

        Args:
            prefix: Bytes read from ``inner`` already.
            inner: The rest of the stream.
        """
        self._prefix = memoryview(prefix)
        self._inner = inner

    def readable(self) -> bool:
        """Return True."""
        return True

    def readinto(self, b: Any) -> int:
        """Fill ``b`` from the prefix, then from the stream."""
        view = memoryview(b).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._inner.read(len(view))
        view[: len(data)] = data
        return len(data)


class _Checked(io.RawIOBase):
    """Turns a decompressor's own exceptions into :class:`FormatError` naming the stream."""

    def __init__(self, inner: BinaryIO, name: str, compression: str) -> None:
        self._inner = inner
        self._name = name
        self._compression = compression
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        try:
            data = self._inner.read(len(view))
        except VmcorepackError:
            raise
        except Exception as e:
            # gzip.BadGzipFile and EOFError (truncated member), OSError from bz2,
            # lzma.LZMAError, zstandard.ZstdError, RuntimeError from lz4.frame.
            import lzma  # on a failing stream only: plain inputs never load it

            if not isinstance(e, OSError | EOFError | ValueError | RuntimeError | lzma.LZMAError) and (
                type(e).__name__ != "ZstdError"
            ):
                raise
            raise FormatError(
                self._name, None, f"{self._compression} stream is corrupt or truncated after {self.pos} bytes: {e}"
            ) from e
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)


def wrap(stream: BinaryIO, compression: str, name: str = "<stream>") -> BinaryIO:
    """Return a buffered reader that decompresses ``stream``.

    Args:
        stream: Binary stream positioned at the compressor's magic.
        compression: A name from :data:`MAGICS`.
        name: Stream name for errors.

    Returns:
        A file object whose ``read(n)`` gives decompressed bytes; decompression
        errors raise :class:`FormatError`.

    Raises:
        UnsupportedError: Unknown name, or its library is not installed.
    """
    return io.BufferedReader(_Checked(_decompressor(stream, compression), name, compression), BUFFER_SIZE)


def _decompressor(stream: BinaryIO, compression: str) -> Any:
    # The standard library's decompressors load on demand: a plain ELF input
    # (the kdump case) needs none of them.
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=stream, mode="rb")
    if compression == "bzip2":
        import bz2

        return bz2.BZ2File(stream, "rb")
    if compression == "xz":
        import lzma

        return lzma.LZMAFile(stream, "rb")
    if compression == "zstd":
        reader: BinaryIO = _zstandard().ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return reader
    if compression == "lz4":
        frames: BinaryIO = _lz4_frame().LZ4FrameFile(stream, "rb")
        return frames
    raise UnsupportedError(f"unknown stream compression {compression!r}")


def open_decompressed(stream: BinaryIO, name: str = "<stream>") -> tuple[BinaryIO, str | None]:
    """Peek at ``stream`` and undo a whole-stream compressor if there is one.

    The peeked bytes are given back, so this works on pipes (stdin) too.

    Args:
        stream: Binary stream at its start.
        name: Stream name for errors.

    Returns:
        ``(reader, compression)``: the decompressing reader (or a reader of
        the plain bytes) and the compressor's name or None.
    """
    prefix = b""
    while len(prefix) < MAGIC_LEN:
        more = stream.read(MAGIC_LEN - len(prefix))
        if not more:
            break
        prefix += more
    plain: BinaryIO = io.BufferedReader(Prefixed(prefix, stream), BUFFER_SIZE)
    compression = detect(prefix)
    if compression is None:
        return plain, None
    return wrap(plain, compression, name), compression


def read_exact(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of stream (decompressors return short reads).

    Args:
        stream: Binary stream.
        size: Bytes wanted.

    Returns:
        The bytes.
    """
    parts = []
    got = 0
    while got < size:
        b = stream.read(size - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _write_fd(fd: int, data: bytes, name: str) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError as e:
            raise OutputError(name, f"write failed: {e.strerror}") from e
        view = view[n:]


def make_compressor(codec: str, level: int | None = None) -> Any:
    """Return an object with ``compress(bytes) -> bytes`` and ``flush() -> bytes``.

    Args:
        codec: ``"lz4"`` (one LZ4 frame, the ``lz4`` tool's defaults) or
            ``"zstd"`` (one zstd frame, level 3 as the ``zstd`` tool).
        level: Compression level (codec default if None).

    Returns:
        The compressor; for LZ4 the frame header is emitted by the first ``compress``.

    Raises:
        UnsupportedError: Unknown codec or library missing.
    """
    if codec == "lz4":
        return _Lz4Compressor(_lz4_frame(), level or 0)
    if codec == "zstd":
        return _zstandard().ZstdCompressor(level=level or 3).compressobj()
    raise UnsupportedError(f"stream compression {codec!r} is not supported (choose from {', '.join(WRITE_CODECS)})")


class _Lz4Compressor:
    """``lz4.frame`` with the ``compress``/``flush`` interface of zlib and zstandard."""

    def __init__(self, frame: Any, level: int) -> None:
        self._c = frame.LZ4FrameCompressor(compression_level=level)
        self._started = False

    def compress(self, data: bytes) -> bytes:
        head = b""
        if not self._started:
            head = self._c.begin()
            self._started = True
        out: bytes = head + self._c.compress(data)
        return out

    def flush(self) -> bytes:
        head = b"" if self._started else self._c.begin()
        self._started = True
        out: bytes = head + self._c.flush()
        return out


class CompressingPipe:
    """A pipe whose contents a thread of this process compresses into ``out_fd``.

    Give :attr:`write_fd` to the flattened-stream writer (``pipeline.pack``
    closes it when done), then call :meth:`finish`.

    Attributes:
        write_fd: Write end of the pipe.
        codec: ``"lz4"`` or ``"zstd"``.
        bytes_in: Uncompressed bytes read from the pipe.
        bytes_out: Compressed bytes written.
    """

    def __init__(self, codec: str, out_fd: int, name: str = "<stdout>", level: int | None = None) -> None:
        """Create the pipe and start the compressor thread.

        Args:
            codec: ``"lz4"`` or ``"zstd"``.
            out_fd: Where the compressed stream goes.
            name: Output name for errors.
            level: Compression level.
        """
        self.codec = codec
        self._comp = make_compressor(codec, level)
        self._out = out_fd
        self._name = name
        self._read_fd, self.write_fd = os.pipe()
        self.bytes_in = 0
        self.bytes_out = 0
        self._error: BaseException | None = None
        # Imported here: only a compressed -F stream needs a thread, and every
        # run imports this module (1 ms of start-up, `python -X importtime`).
        import threading

        self._thread = threading.Thread(target=self._run, name=f"{codec}-stream", daemon=True)
        self._thread.start()

    def _emit(self, data: bytes) -> None:
        if data and self._error is None:
            try:
                _write_fd(self._out, data, self._name)
                self.bytes_out += len(data)
            except OutputError as e:
                # Keep draining the pipe so the writers never block; finish() reports it.
                self._error = e

    def _run(self) -> None:
        try:
            while True:
                try:
                    buf = os.read(self._read_fd, BUFFER_SIZE)
                except InterruptedError:
                    continue
                if not buf:
                    break
                self.bytes_in += len(buf)
                self._emit(self._comp.compress(buf))
            self._emit(self._comp.flush())
        except BaseException as e:  # reported by finish()
            self._error = e
            self._drain()
        finally:
            os.close(self._read_fd)

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, BUFFER_SIZE):
                pass
        except OSError as e:
            if e.errno != errno.EBADF:
                raise

    def finish(self, timeout: float | None = None) -> int:
        """Wait until every writer closed the pipe and the frame is complete.

        Args:
            timeout: Seconds to wait (None: forever).

        Returns:
            Bytes of compressed output.

        Raises:
            OutputError: Writing the compressed stream failed, or the thread did not end.
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise OutputError(self._name, "the stream compressor did not see the end of the stream")
        if self._error is not None:
            if isinstance(self._error, OutputError):
                raise self._error
            raise OutputError(self._name, f"{self.codec} stream compression failed: {self._error}") from self._error
        return self.bytes_out
