"""Page codecs of the kdump format, and the only place optional imports live.

Each codec must produce the bytes makedumpfile produces (docs/kdump-format.md
§5.3, §17.2.3): zlib level 1 with the zlib wrapper, raw LZO1X-1 (python-lzo
without its header), raw snappy from Google's libsnappy C API (called through
ctypes; the Rust ``snap`` behind python-snappy >= 0.7 encodes differently), and
one zstd frame at level 1 with the content size.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

from vmcorepack import native
from vmcorepack.constants import DumpStatus
from vmcorepack.errors import CompressionError, UnsupportedError

Buffer = bytes | bytearray | memoryview


@dataclasses.dataclass(frozen=True)
class Codec:
    """One page codec.

    Attributes:
        name: ``none``, ``zlib``, ``lzo``, ``snappy`` or ``zstd``.
        flag: ``page_desc.flags`` / header status bit (0 for none).
        option: makedumpfile's command-line option.
        compress: ``compress(page) -> bytes``.
        decompress: ``decompress(data, page_size) -> bytes``.
    """

    name: str
    flag: int
    option: str
    compress: Callable[[Buffer], bytes]
    decompress: Callable[[Buffer, int], bytes]

    def compress_pages(self, raw: bytes, offsets: list[int], page_size: int) -> list[bytes]:
        """Compress the pages of ``raw`` that start at ``offsets``.

        One list comprehension around the C function: the per-page Python cost
        is a slice and a call (a quarter of LZO's own time on kernel pages).

        Args:
            raw: Concatenated pages.
            offsets: Byte offsets of the pages to compress.
            page_size: Page size.

        Returns:
            One compressed bytes object per offset.
        """
        ps = page_size
        if self.name == "zlib":
            zc = zlib.compress
            return [zc(raw[o : o + ps], 1) for o in offsets]
        if self.name == "lzo":
            lc = _lzo().compress
            return [lc(raw[o : o + ps], 1, False) for o in offsets]
        if self.name == "zstd":
            cc = _zstd()[0].compress
            return [cc(raw[o : o + ps]) for o in offsets]
        fn = self.compress
        return [fn(raw[o : o + ps]) for o in offsets]


#: Codec numbers of the C page loop (src/vmcorepack/_native.c).
_NATIVE_IDS = {"none": 0, "zlib": 1, "lzo": 2}


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
        self, fd: int, offsets: Buffer, page_size: int, share_zero: bool, dst: Buffer, sizes: Buffer
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

        Returns:
            Bytes stored in ``dst``.

        Raises:
            OSError: A read failed.
        """
        n: int = native.module().encode_file_pages(self.codec_id, fd, offsets, page_size, share_zero, dst, sizes)
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
    if mod is None or codec.name not in _NATIVE_IDS:
        return None
    return PageLoop(_NATIVE_IDS[codec.name], int(mod.headroom(page_size)))


# Install hints for the one-line error when a library is missing.
_HINTS = {
    "lzo": "pip install python-lzo (needs Debian's liblzo2-dev to build)",
    "snappy": "apt-get install libsnappy1v5 (Google's libsnappy)",
    "zstd": "pip install zstandard",
}


def _zlib_compress(page: Buffer) -> bytes:
    return zlib.compress(page, 1)


def _zlib_decompress(data: Buffer, size: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, size)
    if not d.eof or d.unconsumed_tail:
        raise ValueError("zlib stream longer than a page or truncated")
    return out


@functools.cache
def _lzo() -> Any:
    try:
        import lzo
    except ImportError as e:
        raise UnsupportedError(f"LZO support is missing: {_HINTS['lzo']}") from e
    return lzo


def _lzo_compress(page: Buffer) -> bytes:
    return _lzo().compress(bytes(page), 1, False)  # type: ignore[no-any-return]


def _lzo_decompress(data: Buffer, size: int) -> bytes:
    return _lzo().decompress(bytes(data), False, size)  # type: ignore[no-any-return]


@functools.cache
def _snappy() -> ctypes.CDLL:
    import ctypes.util  # only for -p: it pulls in subprocess and shutil at start-up

    name = ctypes.util.find_library("snappy") or "libsnappy.so.1"
    try:
        lib = ctypes.CDLL(name)
        _ = lib.snappy_compress
    except (OSError, AttributeError) as e:
        raise UnsupportedError(f"snappy support is missing: {_HINTS['snappy']}") from e
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.snappy_compress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, size_p]
    lib.snappy_uncompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, size_p]
    lib.snappy_max_compressed_length.argtypes = [ctypes.c_size_t]
    lib.snappy_max_compressed_length.restype = ctypes.c_size_t
    return lib


def _snappy_compress(page: Buffer) -> bytes:
    lib = _snappy()
    src = bytes(page)
    bound = lib.snappy_max_compressed_length(len(src))
    out = ctypes.create_string_buffer(bound)
    n = ctypes.c_size_t(bound)
    if lib.snappy_compress(src, len(src), out, ctypes.byref(n)) != 0:
        raise ValueError("snappy_compress failed")
    return out.raw[: n.value]


def _snappy_decompress(data: Buffer, size: int) -> bytes:
    lib = _snappy()
    out = ctypes.create_string_buffer(size)
    n = ctypes.c_size_t(size)
    src = bytes(data)
    if lib.snappy_uncompress(src, len(src), out, ctypes.byref(n)) != 0:
        raise ValueError("snappy_uncompress failed")
    return out.raw[: n.value]


@functools.cache
def _zstd() -> tuple[Any, Any]:
    try:
        import zstandard
    except ImportError as e:
        raise UnsupportedError(f"zstd support is missing: {_HINTS['zstd']}") from e
    return zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()


def _zstd_compress(page: Buffer) -> bytes:
    return _zstd()[0].compress(page)  # type: ignore[no-any-return]


def _zstd_decompress(data: Buffer, size: int) -> bytes:
    return _zstd()[1].decompress(data, max_output_size=size)  # type: ignore[no-any-return]


def _raw(page: Buffer) -> bytes:
    return bytes(page)


def _raw_decompress(data: Buffer, size: int) -> bytes:
    return bytes(data)


CODECS: dict[str, Codec] = {
    "none": Codec("none", 0, "", _raw, _raw_decompress),
    "zlib": Codec("zlib", int(DumpStatus.COMPRESSED_ZLIB), "-c", _zlib_compress, _zlib_decompress),
    "lzo": Codec("lzo", int(DumpStatus.COMPRESSED_LZO), "-l", _lzo_compress, _lzo_decompress),
    "snappy": Codec("snappy", int(DumpStatus.COMPRESSED_SNAPPY), "-p", _snappy_compress, _snappy_decompress),
    "zstd": Codec("zstd", int(DumpStatus.COMPRESSED_ZSTD), "-z", _zstd_compress, _zstd_decompress),
}

#: Order in which readers test the flag bits (crash, libkdumpfile).
_FLAG_ORDER = ("zlib", "lzo", "snappy", "zstd")


def get_codec(name: str) -> Codec:
    """Return a codec whose library is importable.

    Args:
        name: Codec name.

    Returns:
        The codec.

    Raises:
        UnsupportedError: Unknown codec, or its library is not installed.
    """
    try:
        codec = CODECS[name]
    except KeyError as e:
        raise UnsupportedError(f"unknown codec {name!r} (choose from {', '.join(CODECS)})") from e
    if name == "lzo":
        _lzo()
    elif name == "snappy":
        _snappy()
    elif name == "zstd":
        _zstd()
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


def codec_for_flags(flags: int) -> Codec:
    """Return the codec a ``page_desc.flags`` value selects (0 = raw).

    Args:
        flags: The descriptor's flags.

    Returns:
        The codec.
    """
    for name in _FLAG_ORDER:
        if flags & CODECS[name].flag:
            return get_codec(name)
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
