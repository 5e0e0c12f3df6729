"""Page codecs of the kdump format: the one registry of what each codec is and where it comes from.

Each codec must produce the bytes makedumpfile produces (docs/kdump-format.md
§5.3, §17.2.3): zlib level 1 with the zlib wrapper, raw LZO1X-1 (liblzo2's
``lzo1x_1_compress()``, no header), raw snappy from Google's libsnappy C API,
and one zstd frame at level 1 with the content size.

:data:`CODECS` holds, per codec, its ``page_desc.flags`` bit (from
:class:`~vmcorepack.constants.DumpStatus`), its command-line option, its
number in the C page loop, its install hint and the loaders of its
implementations, best first:

- zlib: Python's zlib module.
- lzo: the C extension's own LZO1X-1 encoder and bounds-checked decoder
  (_lzo1x.h), so no python-lzo is needed; python-lzo (liblzo2) only when the
  extension was not built (no C compiler at install time).
- snappy: Google's libsnappy through ctypes, byte-identical to makedumpfile;
  otherwise python-snappy (a dependency), whose Rust ``snap`` encoder writes
  valid snappy that crash and libkdumpfile read, but other bytes.
- zstd: the system's libzstd through ctypes (the library makedumpfile links,
  so its bytes); otherwise zstandard (a dependency), whose bundled libzstd may
  be another version and write other (valid) frames.

:data:`FAST_ZLIB` (``--fast-zlib``, in :func:`encoders`) writes zlib-format pages from
libdeflate, a faster deflate encoder.  Every zlib reader (crash,
libkdumpfile, drgn, makedumpfile) reads them, but they are not zlib's bytes,
so it is an encoder of the zlib codec, not a codec of its own.

The C page loop (_native.c) loads the same shared library as the ctypes
implementation for snappy, zstd and fast-zlib (:attr:`Codec.library`), so
both write the same bytes; without the library the Python loop is used.

This is the only module that imports page codec libraries.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable
from typing import NamedTuple

from vmcorepack import native
from vmcorepack.constants import DumpStatus
from vmcorepack.errors import CompressionError, UnsupportedError

Buffer = bytes | bytearray | memoryview


class Impl(NamedTuple):
    """A loaded implementation of a codec.

    Attributes:
        label: What ``vmcorepack -v`` calls it (library and version).
        compress: ``compress(page) -> bytes``.
        decompress: ``decompress(data, page_size) -> bytes`` (at most
            ``page_size`` bytes; raises on corrupt data).
    """

    label: str
    compress: Callable[[Buffer], bytes]
    decompress: Callable[[Buffer, int], bytes]


@dataclasses.dataclass(frozen=True)
class Codec:
    """One page codec: everything the rest of vmcorepack knows about it.

    Attributes:
        name: ``none``, ``zlib``, ``lzo``, ``snappy`` or ``zstd``.
        flag: ``page_desc.flags`` / header status bit (0 for none).
        option: makedumpfile's command-line option (``""`` for none).
        help: The option's help text.
        native_id: The codec's number in the C page loop (_native.c), or
            None when the loop does not do it.
        hint: What to install when no implementation loads.
        loaders: Functions returning an :class:`Impl`, best first; each
            raises ImportError or OSError when its library is missing.
        library: The shared library (soname) the C page loop loads for this
            codec, ``""`` when the loop has the codec built in.
        level: The compression level passed to that library.
    """

    name: str
    flag: int
    option: str
    help: str
    native_id: int | None
    hint: str
    loaders: tuple[Callable[[], Impl], ...]
    library: str = ""
    level: int = 0

    def impl(self) -> Impl:
        """Return the implementation in use (the first that loads).

        Returns:
            The implementation.

        Raises:
            UnsupportedError: None of the loaders found its library.
        """
        return _impl(self.name)

    def compress(self, page: Buffer) -> bytes:
        """Compress one page.

        Args:
            page: The page.

        Returns:
            The codec's bytes.
        """
        return _impl(self.name).compress(page)

    def decompress(self, data: Buffer, page_size: int) -> bytes:
        """Decompress one stored page (at most ``page_size`` bytes).

        Args:
            data: Stored bytes.
            page_size: Page size.

        Returns:
            The decoded bytes.
        """
        return _impl(self.name).decompress(data, page_size)

    def compress_pages(self, raw: bytes, offsets: list[int], page_size: int) -> list[bytes]:
        """Compress the pages of ``raw`` that start at ``offsets``.

        One list comprehension around the library function: the per-page
        Python cost is a slice and a call.

        Args:
            raw: Concatenated pages.
            offsets: Byte offsets of the pages to compress.
            page_size: Page size.

        Returns:
            One compressed bytes object per offset.
        """
        ps = page_size
        fn = _impl(self.name).compress
        return [fn(raw[o : o + ps]) for o in offsets]


class PageLoop(NamedTuple):
    """The C loop that encodes a whole chunk of pages for one codec.

    Attributes:
        codec_id: The codec's number in the C module.
        headroom: Bytes ``dst`` needs beyond one page per input page.
    """

    codec_id: int
    headroom: int

    def encode(self, src: Buffer, page_size: int, share_zero: bool, dst: Buffer, sizes: Buffer) -> int:
        """Encode every page of ``src`` into ``dst``, back to back.

        Args:
            src: Concatenated pages.
            page_size: Page size (a multiple of 8).
            share_zero: Mark all-zero pages (size -1) instead of storing them.
            dst: Output, at least ``len(src) + headroom`` bytes.
            sizes: int64 per page, filled with the stored size or -1.

        Returns:
            Bytes stored in ``dst``.
        """
        n: int = native.module().encode_pages(self.codec_id, src, page_size, share_zero, dst, sizes)
        return n

    def encode_file(
        self,
        fd: int,
        offsets: Buffer,
        page_size: int,
        share_zero: bool,
        dst: Buffer,
        sizes: Buffer,
        map_window: int = 0,
        file_size: int = 0,
    ) -> int:
        """Read the pages at file offsets ``offsets`` and encode them as :meth:`encode` does.

        The C loop reads a few pages at a time and compresses each while it
        is still in cache.

        Args:
            fd: Open file.
            offsets: Ascending file offsets, one native int64 per page.
            page_size: Page size (a multiple of 8).
            share_zero: As for :meth:`encode`.
            dst: Output, at least ``len(offsets) * page_size + headroom`` bytes.
            sizes: As for :meth:`encode`.
            map_window: 0 to read with ``preadv``; else copy the pages out of
                mapped windows of this many bytes (a multiple of the system
                page size), where a fault (SIGBUS) in a page falls back to
                ``pread`` for it, so that EIO is still reported.
            file_size: Bytes of the file to map (0: its current size); past
                its end, or where it has shrunk since, pages read as zeros.

        Returns:
            Bytes stored in ``dst``.

        Raises:
            OSError: A read failed.
        """
        n: int = native.module().encode_file_pages(
            self.codec_id, fd, offsets, page_size, share_zero, dst, sizes, map_window, file_size
        )
        return n


def page_loop(codec: Codec, page_size: int) -> PageLoop | None:
    """Return the C page loop for ``codec``, or None to use the Python one.

    Args:
        codec: Output codec.
        page_size: Page size.

    Returns:
        The loop, when the extension is built, enabled and knows the codec.
    """
    mod = native.module()
    if mod is None or codec.native_id is None or (codec.library and loop_library(codec.name) is None):
        return None
    return PageLoop(codec.native_id, int(mod.headroom(page_size)))


@functools.cache
def loop_library(name: str) -> str | None:
    """Load the shared library the C page loop uses for a codec.

    Args:
        name: Codec name (one with :attr:`Codec.library`).

    Returns:
        The library's file, or None when the extension is absent or disabled
        or the library is not installed.
    """
    mod, codec = native.module(), encoders()[name]
    if mod is None or codec.native_id is None or not codec.library:
        return None
    path: str | None = mod.load_codec(codec.native_id, codec.library, codec.level)
    return path


@functools.cache
def _impl(name: str) -> Impl:
    codec = encoders()[name]
    for load in codec.loaders:
        try:
            return load()
        except (ImportError, OSError, AttributeError):
            continue
    raise UnsupportedError(f"{name} support is missing: {codec.hint}")


def _raw_impl() -> Impl:
    return Impl("built in", bytes, lambda data, size: bytes(data))


def _zlib_decompress(data: Buffer, size: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, size)
    if not d.eof or d.unconsumed_tail:
        raise ValueError("zlib stream longer than a page or truncated")
    return out


def _zlib_impl() -> Impl:
    # compress2() at level 1 is makedumpfile's call; the zlib wrapper (78 01) included.
    return Impl(f"zlib {zlib.ZLIB_RUNTIME_VERSION}", functools.partial(zlib.compress, level=1), _zlib_decompress)


def _lzo_native() -> Impl:
    mod = native.library()
    if mod is None:
        raise ImportError("vmcorepack._native is not built")
    return Impl("C extension: own LZO1X-1 encoder, bounds-checked decoder", mod.lzo1x_1, mod.lzo1x_decompress)


def _lzo_python() -> Impl:
    import lzo

    def compress(page: Buffer) -> bytes:
        return lzo.compress(bytes(page), 1, False)  # type: ignore[no-any-return]

    def decompress(data: Buffer, size: int) -> bytes:
        return lzo.decompress(bytes(data), False, size)  # type: ignore[no-any-return]

    version = lzo.LZO_VERSION_STRING.decode()
    return Impl(f"python-lzo {lzo.__version__.decode()}, liblzo2 {version}", compress, decompress)


def _snappy_length(data: Buffer, size: int) -> None:
    """Check a raw snappy stream's length preamble (a varint) before decoding it.

    python-snappy allocates whatever the preamble claims; a corrupt page
    could ask for gigabytes.

    Raises:
        ValueError: The preamble is malformed or claims more than ``size`` bytes.
    """
    n = shift = 0
    for i, b in enumerate(bytes(data[:5])):
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if n > size:
                raise ValueError(f"snappy preamble claims {n} bytes, more than {size}")
            return
        if i == 4:
            break
    raise ValueError("snappy preamble is malformed")


#: The shared libraries (sonames) of the run-time codecs, for ctypes and the C loop.
_SNAPPY_SO, _ZSTD_SO, _DEFLATE_SO = "libsnappy.so.1", "libzstd.so.1", "libdeflate.so.0"

#: makedumpfile's zstd level (ZSTD_compressCCtx(..., 1)); libdeflate's level
#: for --fast-zlib, its fastest, whose output stays within a few per cent of
#: zlib level 1's size.  libdeflate rather than ISA-L (its level 1 as fast on
#: the real fixture, a little larger, and it needs its header at build time)
#: or zlib-ng (not in Debian 12): benchmarks/deflate_encoders.c.
_ZSTD_LEVEL, _DEFLATE_LEVEL = 1, 1


def _libsnappy() -> Impl:
    import ctypes  # only for -p: it costs import time at start-up

    name = _SNAPPY_SO
    lib = ctypes.CDLL(name)  # OSError when absent
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.snappy_compress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, size_p]
    lib.snappy_uncompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, size_p]
    lib.snappy_max_compressed_length.argtypes = [ctypes.c_size_t]
    lib.snappy_max_compressed_length.restype = ctypes.c_size_t

    def compress(page: Buffer) -> bytes:
        src = bytes(page)
        bound = lib.snappy_max_compressed_length(len(src))
        out = ctypes.create_string_buffer(bound)
        n = ctypes.c_size_t(bound)
        if lib.snappy_compress(src, len(src), out, ctypes.byref(n)) != 0:
            raise ValueError("snappy_compress failed")
        return out.raw[: n.value]

    def decompress(data: Buffer, size: int) -> bytes:
        out = ctypes.create_string_buffer(size)
        n = ctypes.c_size_t(size)
        src = bytes(data)
        if lib.snappy_uncompress(src, len(src), out, ctypes.byref(n)) != 0:
            raise ValueError("snappy_uncompress failed")
        return out.raw[: n.value]

    return Impl(f"Google's {name} through ctypes", compress, decompress)


def _python_snappy() -> Impl:
    import snappy  # python-snappy

    def compress(page: Buffer) -> bytes:
        return bytes(snappy.compress(page))

    def decompress(data: Buffer, size: int) -> bytes:
        _snappy_length(data, size)
        return bytes(snappy.uncompress(data))

    return Impl(
        f"python-snappy {_version('python-snappy')} : valid snappy, not libsnappy's bytes", compress, decompress
    )


def _libzstd() -> Impl:
    import ctypes

    lib = ctypes.CDLL(_ZSTD_SO)  # OSError when absent
    lib.ZSTD_createCCtx.restype = ctypes.c_void_p
    lib.ZSTD_compressCCtx.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
    ]
    lib.ZSTD_compressCCtx.restype = ctypes.c_size_t
    lib.ZSTD_decompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_versionString.restype = ctypes.c_char_p
    cctx = lib.ZSTD_createCCtx()
    if not cctx:
        raise OSError("ZSTD_createCCtx failed")

    def compress(page: Buffer) -> bytes:
        src = bytes(page)
        bound = lib.ZSTD_compressBound(len(src))  # makedumpfile's buffer is at least this big
        out = ctypes.create_string_buffer(bound)
        n = lib.ZSTD_compressCCtx(cctx, out, bound, src, len(src), _ZSTD_LEVEL)
        if lib.ZSTD_isError(n):
            raise ValueError("ZSTD_compressCCtx failed")
        return out.raw[:n]

    def decompress(data: Buffer, size: int) -> bytes:
        out = ctypes.create_string_buffer(size)
        src = bytes(data)
        n = lib.ZSTD_decompress(out, size, src, len(src))
        if lib.ZSTD_isError(n):
            raise ValueError("ZSTD_decompress failed")
        return out.raw[:n]

    return Impl(f"{_ZSTD_SO} {lib.ZSTD_versionString().decode()} through ctypes", compress, decompress)


def _libdeflate() -> Impl:
    import ctypes

    lib = ctypes.CDLL(_DEFLATE_SO)  # OSError when absent
    lib.libdeflate_alloc_compressor.restype = ctypes.c_void_p
    lib.libdeflate_alloc_compressor.argtypes = [ctypes.c_int]
    lib.libdeflate_zlib_compress.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.libdeflate_zlib_compress.restype = ctypes.c_size_t
    comp = lib.libdeflate_alloc_compressor(_DEFLATE_LEVEL)
    if not comp:
        raise OSError("libdeflate_alloc_compressor failed")

    def compress(page: Buffer) -> bytes:
        # Room for a page only: the page is stored raw unless it shrinks, and
        # libdeflate returns 0 (stored raw here too) when it does not fit.
        src = bytes(page)
        out = ctypes.create_string_buffer(len(src))
        n = lib.libdeflate_zlib_compress(comp, src, len(src), out, len(src))
        return out.raw[:n] if n else src

    return Impl(f"{_DEFLATE_SO} level {_DEFLATE_LEVEL} through ctypes", compress, _zlib_decompress)


def _zstd_impl() -> Impl:
    import zstandard

    cctx, dctx = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()

    def decompress(data: Buffer, size: int) -> bytes:
        return dctx.decompress(data, max_output_size=size)

    version = ".".join(map(str, zstandard.ZSTD_VERSION))
    label = f"zstandard {zstandard.__version__}, libzstd {version} : valid zstd, maybe not {_ZSTD_SO}'s bytes"
    return Impl(label, cctx.compress, decompress)


def _version(dist: str) -> str:
    from importlib import metadata  # -v and the python-snappy fallback only

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


#: Every codec, in the order readers test the flag bits (crash, libkdumpfile): zlib, lzo, snappy, zstd.
CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("none", 0, "", "", 0, "", (_raw_impl,)),
        Codec(
            "zlib",
            int(DumpStatus.COMPRESSED_ZLIB),
            "-c",
            "compress pages with zlib",
            1,
            "zlib is part of Python",
            (_zlib_impl,),
        ),
        Codec(
            "lzo",
            int(DumpStatus.COMPRESSED_LZO),
            "-l",
            "compress pages with LZO1X-1",
            2,
            "reinstall vmcorepack with gcc and python3-dev present (its C extension does LZO), "
            "or pip install python-lzo (needs liblzo2-dev)",
            (_lzo_native, _lzo_python),
        ),
        Codec(
            "snappy",
            int(DumpStatus.COMPRESSED_SNAPPY),
            "-p",
            "compress pages with snappy",
            3,
            "apt-get install libsnappy1v5 (makedumpfile's bytes), or pip install python-snappy",
            (_libsnappy, _python_snappy),
            _SNAPPY_SO,
        ),
        Codec(
            "zstd",
            int(DumpStatus.COMPRESSED_ZSTD),
            "-z",
            "compress pages with zstd",
            4,
            "apt-get install libzstd1 (makedumpfile's bytes), or pip install zstandard",
            (_libzstd, _zstd_impl),
            _ZSTD_SO,
            _ZSTD_LEVEL,
        ),
    )
}

#: ``--fast-zlib``: the zlib flag, libdeflate's streams (an encoder of the zlib
#: format with other bytes, so not one of :data:`CODECS`, which readers scan by flag).
FAST_ZLIB = Codec(
    "fast-zlib",
    int(DumpStatus.COMPRESSED_ZLIB),
    "--fast-zlib",
    "with -c: compress pages with libdeflate, a faster zlib encoder (not in makedumpfile): "
    "every zlib reader reads them, but the bytes and size differ from makedumpfile -c's",
    5,
    "apt-get install libdeflate0 (--fast-zlib needs libdeflate; plain -c does not)",
    (_libdeflate,),
    _DEFLATE_SO,
    _DEFLATE_LEVEL,
)

#: Header status / page_desc.flags bits that name a codec.
CODEC_FLAGS = functools.reduce(lambda a, c: a | c.flag, CODECS.values(), 0)


def encoders() -> dict[str, Codec]:
    """Return every page encoder by name: :data:`CODECS`, then :data:`FAST_ZLIB`.

    Returns:
        A new dict (looked up at each call, so that a replaced entry of
        :data:`CODECS` takes effect).
    """
    return {**CODECS, FAST_ZLIB.name: FAST_ZLIB}


def get_codec(name: str) -> Codec:
    """Return a codec whose library is loadable.

    Args:
        name: Codec name.

    Returns:
        The codec.

    Raises:
        UnsupportedError: Unknown codec, or no implementation of it is installed.
    """
    every = encoders()
    try:
        codec = every[name]
    except KeyError as e:
        raise UnsupportedError(f"unknown codec {name!r} (choose from {', '.join(every)})") from e
    codec.impl()
    return codec


def available(name: str) -> bool:
    """Tell whether a codec's library can be loaded.

    Args:
        name: Codec name.

    Returns:
        True if usable.
    """
    try:
        get_codec(name)
    except UnsupportedError:
        return False
    return True


def status(name: str) -> tuple[bool, str]:
    """Say whether a codec works and by which implementation, for ``vmcorepack -v``.

    Args:
        name: Codec name.

    Returns:
        (True, the implementation's label, and the library of the C page loop
        when it loads one), or (False, the install hint).
    """
    try:
        label = get_codec(name).impl().label
    except UnsupportedError:
        return False, encoders()[name].hint
    path = loop_library(name)
    return True, label if path is None else f"C page loop: {path}; per page: {label}"


def codec_for_flags(flags: int) -> Codec:
    """Return the codec a ``page_desc.flags`` value selects (0 = raw).

    Args:
        flags: The descriptor's flags.

    Returns:
        The codec.
    """
    for codec in CODECS.values():
        if flags & codec.flag:
            return get_codec(codec.name)
    return CODECS["none"]


def decode_page(flags: int, data: Buffer, page_size: int, pfn: int | None = None) -> bytes:
    """Decode one stored page, checking it yields exactly one page.

    Args:
        flags: ``page_desc.flags``.
        data: Stored bytes.
        page_size: Expected output size.
        pfn: For error messages.

    Returns:
        The page.

    Raises:
        CompressionError: The data does not decode to exactly one page.
    """
    codec = codec_for_flags(flags)
    if codec.flag == 0:
        if len(data) != page_size:
            raise CompressionError("none", pfn, f"raw page of {len(data)} bytes, expected {page_size}")
        return bytes(data)
    try:
        out = codec.decompress(data, page_size)
    except Exception as e:
        raise CompressionError(codec.name, pfn, f"cannot decompress {len(data)} bytes: {e}") from e
    if len(out) != page_size:
        raise CompressionError(codec.name, pfn, f"decompressed to {len(out)} bytes, expected {page_size}")
    return out
