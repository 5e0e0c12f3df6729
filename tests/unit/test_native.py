"""The C page loop (vmcorepack._native) writes what the Python loop writes."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import IN_CI
from vmcorepack import codecs, native, pipeline
from vmcorepack import native as native_mod
from vmcorepack.codecs import get_codec
from vmcorepack.formats import kdump
from vmcorepack.pack import encoding as pack_encoding


def _native_or_skip() -> None:
    if not native.built():
        if IN_CI:
            pytest.fail("vmcorepack._native is not built (CI installs gcc, liblzo2-dev and zlib1g-dev)")
        pytest.skip("vmcorepack._native is not built")


def _pages(ps: int, seed: int) -> tuple[bytes, np.ndarray]:
    """A chunk mixing every kind of page the encoder distinguishes, and a random known-zero mask."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 6, 300)
    rows = []
    for k in kinds:
        if k == 0:
            rows.append(bytes(ps))  # zero
        elif k == 1:
            rows.append(os.urandom(ps))  # incompressible: stored raw
        elif k == 2:
            rows.append((b"kernel text %d " % rng.integers(1 << 30)) * (ps // 16))  # very compressible
        elif k == 3:
            # Compressible by only a few bytes: close to the "strictly smaller" rule.
            rows.append(bytes(48) + os.urandom(ps - 48))
        elif k == 4:
            page = bytearray(ps)
            page[-1] = 1  # zero but for its last byte: not a zero page
            rows.append(bytes(page))
        else:
            rows.append(rng.integers(0, 4, ps, np.uint8).tobytes())  # low entropy
    raw = b"".join(r[:ps].ljust(ps, b"\0") for r in rows)
    known = rng.random(len(rows)) < 0.1
    return raw, known


def _encode(raw: bytes, known: np.ndarray, ps: int, codec: str, share_zero: bool, native: bool) -> tuple[bytes, bytes]:
    old = native_mod.ENABLED
    native_mod.ENABLED = native
    try:
        present = np.frombuffer(raw, np.uint8).reshape(-1, ps)[~known].tobytes()
        enc = pipeline.encode_chunk(present, ps, get_codec(codec), share_zero, None, known)
    finally:
        native_mod.ENABLED = old
    data = enc.data if isinstance(enc.data, bytes | memoryview) else b"".join(enc.data)
    return enc.descs.tobytes(), bytes(data)


@pytest.mark.parametrize("codec", ["none", "zlib", "lzo", "snappy", "zstd", "fast-zlib"])
@pytest.mark.parametrize("share_zero", [True, False])
@pytest.mark.parametrize("ps", [4096, 16384])
def test_native_equals_python(codec: str, share_zero: bool, ps: int) -> None:
    _native_or_skip()
    if codec == "lzo" and not codecs.available("lzo"):
        pytest.fail("python-lzo missing") if IN_CI else pytest.skip("python-lzo missing")
    lib = codecs.encoders()[codec].library
    if lib and codecs.loop_library(codec) is None:
        # Else both runs would take the Python loop and the test would compare it with itself.
        pytest.fail(f"{lib} missing") if IN_CI else pytest.skip(f"{lib} missing")
    raw, known = _pages(ps, seed=ps + share_zero)
    for mask in (np.zeros_like(known), known):
        assert _encode(raw, mask, ps, codec, share_zero, True) == _encode(raw, mask, ps, codec, share_zero, False)


def test_native_zlib_is_compress2_level1() -> None:
    _native_or_skip()
    page = (b"struct page " * 400)[:4096]
    descs, data = _encode(page, np.zeros(1, bool), 4096, "zlib", True, True)
    assert data == zlib.compress(page, 1)
    assert np.frombuffer(descs, kdump.PAGE_DESC)["size"][0] == len(data)


@pytest.mark.parametrize("ps", [4096, 1032])
def test_native_zero_test_sees_every_byte(ps: int) -> None:
    """A page with one non-zero byte anywhere is not a zero page (the C test reads 256-byte blocks, then a tail)."""
    _native_or_skip()
    loop = codecs.page_loop(get_codec("none"), ps)
    assert loop is not None
    rows = np.zeros((ps + 1, ps), np.uint8)
    rows[np.arange(ps), np.arange(ps)] = 0x80  # row k: byte k set; the last row stays zero
    sizes = np.zeros(ps + 1, np.int64)
    loop.encode(rows.tobytes(), ps, True, bytearray((ps + 1) * ps + loop.headroom), sizes.data)
    assert (sizes[:ps] == ps).all()  # stored raw, not shared as zero
    assert sizes[ps] == -1


def test_native_refuses_a_codec_whose_library_is_not_loaded() -> None:
    _native_or_skip()
    mod = native_mod.library()
    with pytest.raises(ValueError, match="not a run-time codec"):
        mod.load_codec(codecs.CODECS["zlib"].native_id, "libz.so.1", 1)
    with pytest.raises(ValueError, match="unknown codec"):
        mod.encode_pages(99, bytes(4096), 4096, True, bytearray(8192), bytearray(8))
    # A fresh process, where nothing has loaded libsnappy yet: a library that is not there loads
    # as None (codecs then takes the Python loop), and the loop refuses rather than crash.
    code = (
        "from vmcorepack import _native as m\n"
        f"print(m.load_codec({codecs.CODECS['snappy'].native_id}, 'libsnappy.so.999', 0))\n"
        "try:\n"
        f"    m.encode_pages({codecs.CODECS['snappy'].native_id}, bytes(4096), 4096, True, "
        "bytearray(8192), bytearray(8))\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "None"
    assert "not loaded" in out.splitlines()[1]


def test_native_rejects_bad_buffers() -> None:
    _native_or_skip()
    loop = codecs.page_loop(get_codec("zlib"), 4096)
    assert loop is not None
    sizes = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="whole number of pages"):
        loop.encode(bytes(4097), 4096, True, bytearray(1 << 16), sizes.data)
    with pytest.raises(ValueError, match="too small"):
        loop.encode(bytes(8192), 4096, True, bytearray(8192), sizes.data)


def _liblzo() -> Any:
    if not codecs.available("lzo"):
        pytest.fail("python-lzo missing") if IN_CI else pytest.skip("python-lzo missing")
    import lzo

    return lzo


def _odd_inputs() -> list[bytes]:
    """Inputs around every length rule of the encoder: < 21 and < 32 bytes, 48 KiB blocks, carried literals."""
    rng = np.random.default_rng(7)
    lengths = [*range(0, 130), 238, 239, 240, 255, 256, 4095, 4096, 4097, 16384, 49151, 49152, 49153]
    lengths += [49152 + 25, 49152 + 40, 65536, 98304 + 30, 131072]
    out = []
    for n in lengths:
        out.append(bytes(n))
        out.append(rng.integers(0, 256, n, np.uint8).tobytes())
        out.append(rng.choice(np.frombuffer(b"ab", np.uint8), n).tobytes())
        sparse = np.where(rng.random(n) < 0.05, rng.integers(1, 256, n), 0).astype(np.uint8)
        out.append(sparse.tobytes())
        out.append((b"struct page %d " % n * (n // 12 + 1))[:n])
    # A match at each distance and length where the encoding changes (2-byte M2 up to 2 KiB and 8
    # bytes, M3 up to 16 KiB and 33 bytes, M4 beyond). Zeros between the two copies keep the
    # encoder probing every few bytes (a long random run makes it skip), and the second copy's
    # first probe finds the first copy through its empty dictionary slot (position 0).
    for dist in (0x7FF, 0x800, 0x801, 0x3FFF, 0x4000, 0x4001, 0x8000):
        for n in (4, 8, 9, 33, 34, 300):
            head = rng.integers(1, 256, 32, np.uint8).tobytes() + bytes(dist - 32)
            out.append(head + head[:n] + rng.integers(0, 256, 40, np.uint8).tobytes())
    # Long matches and long literal runs, near and far (> 16 KiB) distances, in one input.
    words = rng.integers(0, 256, 20000, np.uint8).tobytes()
    out.append(words + bytes(3000) + words[:9000] + os.urandom(5000) + words[100:30000])
    return out


def test_lzo1x_1_equals_liblzo() -> None:
    _native_or_skip()
    lzo = _liblzo()
    from vmcorepack import _native

    for data in _odd_inputs():
        assert _native.lzo1x_1(data) == lzo.compress(data, 1, False), len(data)


@pytest.mark.parametrize("ps", [4096, 16384, 65536])
def test_lzo1x_1_equals_liblzo_on_real_pages(real_vmcore: Path, ps: int) -> None:
    """Every page of the real 6.1 vmcore (mostly kernel data), compressed as one chunk: what liblzo2 writes."""
    _native_or_skip()
    lzo = _liblzo()
    loop = codecs.page_loop(get_codec("lzo"), ps)
    assert loop is not None
    with open(real_vmcore, "rb") as f:
        # The first PT_LOAD starts after the ELF headers; page alignment does not matter here.
        f.seek(1 << 20)
        checked = 0
        while chunk := f.read(512 * ps):
            n = len(chunk) // ps
            chunk = chunk[: n * ps]
            sizes = np.zeros(n, np.int64)
            dst = bytearray(n * ps + loop.headroom)
            loop.encode(chunk, ps, False, dst, sizes.data)
            pos = 0
            for i, size in enumerate(sizes.tolist()):
                want = lzo.compress(chunk[i * ps : (i + 1) * ps], 1, False)
                if len(want) < ps:
                    assert bytes(dst[pos : pos + size]) == want, f"page {checked + i}"
                else:
                    assert size == ps
                pos += size
            checked += n
    assert checked * ps > 900_000_000


@st.composite
def _lz_inputs(draw: st.DrawFn) -> bytes:
    """Inputs made of literal runs, repeats at chosen distances and zero runs: what LZO's rules branch on."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["lit", "copy", "zero"]))
        if kind == "lit" or not out:
            out += draw(st.binary(min_size=1, max_size=300))
        elif kind == "copy":
            dist = draw(st.integers(1, min(len(out), 50000)))
            n = draw(st.integers(1, 600))
            for _ in range(n):  # overlapping copies, as LZ77 allows
                out.append(out[-dist])
        else:
            out += bytes(draw(st.integers(1, 5000)))
    return bytes(out)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_lz_inputs())
def test_lzo1x_1_equals_liblzo_on_generated_inputs(data: bytes) -> None:
    _native_or_skip()
    lzo = _liblzo()
    from vmcorepack import _native

    assert _native.lzo1x_1(data) == lzo.compress(data, 1, False)


def _liblzo_decompress(lzo: Any, data: bytes, size: int) -> bytes | None:
    """liblzo2's lzo1x_decompress_safe() through python-lzo: the bytes, or None where it reports an error."""
    try:
        out: bytes = lzo.decompress(data, False, size)
    except lzo.error:
        return None
    return out


def _native_decompress(data: bytes, size: int) -> bytes | None:
    from vmcorepack import _native

    try:
        return _native.lzo1x_decompress(data, size)
    except ValueError:
        return None


def test_lzo1x_decompress_reads_liblzo_streams() -> None:
    """Level 1 (what makedumpfile writes) and level 9 (lzo1x_999, which also uses the short M1 matches)."""
    _native_or_skip()
    lzo = _liblzo()
    checked = 0
    for data in _odd_inputs():
        for level in (1, 9):
            comp = lzo.compress(data, level, False)
            assert _native_decompress(comp, len(data)) == data, (len(data), level)
            # One byte too few room for the output is an error, not a short or overlong result.
            if data:
                assert _native_decompress(comp, len(data) - 1) is None
            checked += 1
    assert checked > 1400


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_lz_inputs(), level=st.sampled_from([1, 9]))
def test_lzo1x_decompress_round_trips_generated_inputs(data: bytes, level: int) -> None:
    _native_or_skip()
    lzo = _liblzo()
    from vmcorepack import _native

    assert _native.lzo1x_decompress(lzo.compress(data, level, False), len(data)) == data
    assert _native.lzo1x_decompress(_native.lzo1x_1(data), len(data)) == data


def _damaged_streams() -> list[tuple[bytes, int]]:
    """Real LZO pages cut short, with bytes flipped, dropped and inserted, and random bytes: (stream, page size)."""
    lzo = _liblzo()
    rng = np.random.default_rng(16)
    pages = [(b"struct page %d " % i * 400)[:4096] for i in range(3)] + [
        bytes(4096),
        rng.integers(0, 4, 4096, np.uint8).tobytes(),
        os.urandom(4096),
    ]
    out: list[tuple[bytes, int]] = []
    for page in pages:
        for level in (1, 9):
            comp = lzo.compress(page, level, False)
            out += [(comp[:n], 4096) for n in range(len(comp))]  # every truncation
            for _ in range(200):
                b = bytearray(comp)
                for _ in range(int(rng.integers(1, 4))):
                    i = int(rng.integers(len(b)))
                    op = int(rng.integers(3))
                    if op == 0:
                        b[i] = int(rng.integers(256))
                    elif op == 1:
                        del b[i]
                    else:
                        b.insert(i, int(rng.integers(256)))
                out.append((bytes(b), int(rng.choice([4096, 4095, 64, 0]))))
    out += [(rng.integers(0, 256, int(rng.integers(0, 64)), np.uint8).tobytes(), 4096) for _ in range(2000)]
    # Lengths in 255-steps that run past the input or would overflow a count; a match before the start.
    out += [(b"\x00" * 5000, 4096), (b"\x20" + b"\x00" * 5000, 4096), (b"\x10" + b"\x00" * 100, 1 << 20)]
    out += [(b"\x15abcd\x40\xff\x11\x00\x00", 4096), (b"\x11\x00\x00\x00", 4096), (b"\x11\x00\x00", 0)]
    return out


def test_lzo1x_decompress_rejects_damaged_streams_as_liblzo_does() -> None:
    """Corrupt input raises ValueError (never a crash or an overrun), and exactly where liblzo2 reports an error.

    Where both decode, they give the same bytes.  Truncated streams all fail: the end marker is gone.
    """
    _native_or_skip()
    lzo = _liblzo()
    damaged = _damaged_streams()
    rejected = 0
    for stream, size in damaged:
        got = _native_decompress(stream, size)
        assert got == _liblzo_decompress(lzo, stream, size), (stream[:16].hex(), len(stream), size)
        rejected += got is None
        if got is not None:
            assert len(got) <= size
    assert rejected > len(damaged) // 2
    assert _native_decompress(b"\x11\x00\x00", 0) == b""


class _PlanSource:
    """Just enough of a Source for encode_from_file: a page plan over a given descriptor."""

    page_size = 4096

    def __init__(self, fd: int, offsets: np.ndarray, map_window: int = 0, file_size: int = 0) -> None:
        self.fd = fd
        self.offsets = offsets
        self.map_window = map_window
        self.file_size = file_size

    def page_plan(self, pfns: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        return self.fd, self.offsets, np.zeros(len(pfns), bool)


@pytest.mark.parametrize("codec", ["none", "zlib", "lzo"])
def test_mapped_reads_equal_preadv(tmp_path: Path, codec: str) -> None:
    """The mapped read path (map_window, as for /proc/vmcore) encodes exactly what preadv reads.

    Offsets cross window boundaries, skip windows and run past the end of the file.
    """
    _native_or_skip()
    raw, _ = _pages(4096, 7)
    img = tmp_path / "img"
    img.write_bytes(raw)
    n = len(raw) // 4096
    rng = np.random.default_rng(3)
    offsets = np.sort(rng.choice(n + 8, n // 2, replace=False)).astype(np.int64) * 4096
    loop = codecs.page_loop(get_codec(codec), 4096)
    assert loop is not None
    out = []
    for window in (0, 4096, 8 * 4096, 1 << 22):
        dst = bytearray(len(offsets) * 4096 + loop.headroom)
        sizes = np.empty(len(offsets), np.int64)
        fd = os.open(img, os.O_RDONLY)
        try:
            total = loop.encode_file(fd, offsets.data, 4096, True, dst, sizes.data, window)
        finally:
            os.close(fd)
        out.append((bytes(dst[:total]), sizes.tolist()))
    assert all(o == out[0] for o in out[1:])
    assert out[0][1][-1] == -1  # past the end of the file: a zero page


def test_mapped_read_survives_sigbus(tmp_path: Path) -> None:
    """A fault in a mapped page (SIGBUS) falls back to pread for that page instead of killing the run.

    The file shrinks after its size was taken (the Source's file_size), so the
    mapped windows reach past its end, where an access faults as a page
    /proc/vmcore cannot read does; pread there reads zeros (end of file).
    """
    _native_or_skip()
    pages = [b"kept page %d " % i * 300 + bytes(4096 - 300 * len(b"kept page %d " % i)) for i in range(6)]
    img = tmp_path / "img"
    img.write_bytes(b"".join(pages))
    size = img.stat().st_size
    offsets = np.arange(6, dtype=np.int64) * 4096
    codec = get_codec("zlib")
    fd = os.open(img, os.O_RDWR)
    try:
        os.ftruncate(fd, 3 * 4096)  # pages 3-5 are gone; the mapping still spans them
        src = _PlanSource(fd, offsets, map_window=1 << 22, file_size=size)
        enc = pack_encoding.encode_from_file(src, np.arange(6), codec, True)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert enc is not None
    assert bytes(enc.data) == b"".join(zlib.compress(p, 1) for p in pages[:3])
    assert enc.zero == 3
    # And the process still dies of a SIGBUS that is not a guarded copy.
    code = (
        "import os, signal, sys, numpy as np\n"
        "from vmcorepack import codecs\n"
        "loop = codecs.page_loop(codecs.get_codec('none'), 4096)\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "loop.encode_file(fd, np.zeros(1, np.int64).data, 4096, True, bytearray(3 * 4096),"
        " np.empty(1, np.int64).data, 1 << 22)\n"
        "os.kill(os.getpid(), signal.SIGBUS)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(img)], check=False)
    assert r.returncode == -7


def test_read_range_equals_pread(tmp_path: Path) -> None:
    """read_range (the page pass's mapped reads) returns the file's bytes across windows, short at the end."""
    _native_or_skip()
    data = os.urandom(5 * 4096 + 123)
    img = tmp_path / "img"
    img.write_bytes(data)
    mod = native_mod.module()
    fd = os.open(img, os.O_RDWR)
    try:
        for off, n in ((0, 4096), (100, 3 * 4096), (4095, 2), (2 * 4096 - 7, 9000), (5 * 4096, 500), (len(data), 10)):
            out = bytearray(n)
            got = mod.read_range(fd, off, out, 4096, len(data))
            assert got == min(n, len(data) - off)
            assert bytes(out[:got]) == data[off : off + got]
        os.ftruncate(fd, 4096)  # past the new end the windows fault: read, as zeros
        out = bytearray(3 * 4096)
        assert mod.read_range(fd, 0, out, 8192, len(data)) == 3 * 4096
        assert bytes(out) == data[:4096] + bytes(2 * 4096)
    finally:
        os.close(fd)


def test_encode_from_file_reads_pages_and_gives_way_on_read_errors(tmp_path: Path) -> None:
    """Pages come from the planned offsets (EOF reads as zeros); a failing read returns None for the fallback."""
    _native_or_skip()
    pages = [b"first page " * 372 + bytes(4), os.urandom(4096), b"third page " * 372 + bytes(4)]
    img = tmp_path / "img"
    img.write_bytes(b"".join(pages))
    # Pages 0 and 2 of the file (a one-page gap read through), then one past its end.
    offsets = np.array([0, 4096 * 2, 4096 * 3], np.int64)
    codec = get_codec("zlib")
    fd = os.open(img, os.O_RDONLY)
    try:
        enc = pack_encoding.encode_from_file(_PlanSource(fd, offsets), np.arange(3), codec, True)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert enc is not None
    want = [zlib.compress(pages[0], 1), zlib.compress(pages[2], 1)]
    assert bytes(enc.data) == b"".join(want)
    assert enc.zero == 1  # the page past the end of the file
    assert enc.descs["size"].tolist() == [len(want[0]), len(want[1]), 4096]
    dfd = os.open(tmp_path, os.O_RDONLY)  # preadv on a directory fails (EISDIR)
    try:
        assert pack_encoding.encode_from_file(_PlanSource(dfd, offsets), np.arange(3), codec, True) is None  # type: ignore[arg-type]
    finally:
        os.close(dfd)


def _descs_reference(got: np.ndarray, known: np.ndarray, ps: int, flag: int) -> np.ndarray:
    """page_desc records as the numpy pipeline built them before chunk_descs (the spec's rules, §5)."""
    from vmcorepack.formats import kdump

    sizes = np.full(len(known), ps, np.int64)
    is_zero = known.copy()
    is_zero[~known] = got < 0
    sizes[~known] = np.where(got < 0, ps, got)
    stored = np.where(is_zero, 0, sizes)
    descs = np.zeros(len(known), kdump.PAGE_DESC)
    descs["offset"] = np.where(is_zero, -1, np.cumsum(stored) - stored)
    descs["size"] = sizes
    descs["flags"] = np.where(~is_zero & (sizes < ps), flag, 0)
    return descs


@pytest.mark.parametrize("seed", range(6))
def test_chunk_descs_equals_numpy(seed: int) -> None:
    """Offsets run over stored pages only, zero pages (read or known) get -1, raw pages no flag."""
    _native_or_skip()
    from vmcorepack.formats import kdump

    rng = np.random.default_rng(seed)
    ps = (4096, 16384)[seed % 2]
    n = int(rng.integers(0, 3000))
    known = rng.random(n) < (0.0, 0.3, 1.0)[seed % 3]
    m = int((~known).sum())
    # Zero pages (-1), compressed sizes, and raw pages (exactly ps).
    got = np.where(rng.random(m) < 0.3, -1, rng.integers(1, ps + 1, m)).astype(np.int64)
    got[rng.random(m) < 0.2] = ps
    flag = int(rng.choice([1, 2, 4, 0x20]))
    descs = np.empty(n, kdump.PAGE_DESC)
    zero, compressed = native.module().chunk_descs(got, known, ps, flag, descs)
    want = _descs_reference(got, known, ps, flag)
    assert descs.tobytes() == want.tobytes()
    assert zero == int(known.sum() + (got < 0).sum())
    assert compressed == int(((got > 0) & (got < ps)).sum())


def test_chunk_descs_rejects_mismatched_sizes() -> None:
    _native_or_skip()
    from vmcorepack.formats import kdump

    mod = native.module()
    known = np.array([False, True, False])
    descs = np.empty(3, kdump.PAGE_DESC)
    with pytest.raises(ValueError, match="do not match"):
        mod.chunk_descs(np.array([10], np.int64), known, 4096, 1, descs)  # one size for two pages read
    with pytest.raises(ValueError, match="do not match"):
        mod.chunk_descs(np.array([10, 20, 30], np.int64), known, 4096, 1, descs)  # one too many
    with pytest.raises(ValueError, match="do not match"):
        mod.chunk_descs(np.array([10, 4097], np.int64), known, 4096, 1, descs)  # larger than a page
    with pytest.raises(ValueError, match="buffer sizes"):
        mod.chunk_descs(np.array([10, 20], np.int64), known, 4096, 1, np.empty(2, kdump.PAGE_DESC))


def test_place_descs_equals_numpy() -> None:
    """Stored pages move by the chunk's base; -1 becomes the zero page's offset, -2 becomes 0."""
    _native_or_skip()
    from vmcorepack.formats import kdump

    rng = np.random.default_rng(5)
    descs = np.zeros(5000, kdump.PAGE_DESC)
    descs["offset"] = np.where(rng.random(5000) < 0.3, rng.choice([-1, -2], 5000), rng.integers(0, 1 << 30, 5000))
    descs["size"] = rng.integers(1, 4097, 5000)
    o = descs["offset"]
    want = descs.copy()
    want["offset"] = np.where(o == -1, 8192, np.where(o == -2, 0, o + (5 << 32)))
    native.module().place_descs(descs, 5 << 32, 8192)
    assert descs.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="whole number"):
        native.module().place_descs(bytearray(25), 0, 0)


def _rules_variant(rng: np.random.Generator, old_kernel: bool) -> Any:
    """Rules with each optional fact present or absent, as kernel generations export them."""
    from vmcorepack.filter import Rules

    def maybe(v: int) -> int | None:
        return v if rng.random() < 0.5 else None

    hugetlb_value = maybe(-1025)
    return Rules(
        lru=1 << 4,
        private=1 << 13,
        swapcache=1 << 10,
        swapbacked=maybe(1 << 19),
        hwpoison=maybe(1 << 23),
        slab=1 << 7,
        head=1 << 6,
        slab_value=maybe(-1001),
        buddy_value=None if old_kernel else -129,
        buddy_flag=(1 << 19) if old_kernel else None,
        offline_value=maybe(-257),
        unaccepted_value=maybe(-513),
        hugetlb_value=hugetlb_value,
        pg_hugetlb=None if hugetlb_value is not None else maybe(1 << 8),
        hugetlb_dtors=(2, 0xFFFFFFFF81234560) if rng.random() < 0.5 else (),
        free_area_len=maybe(11),
    )


def _struct_pages(seed: int) -> tuple[Any, np.ndarray, int, Any, bool]:
    """Generated struct pages for the page-pass tests: (pages, examined, start pfn, rules, has mapcount)."""
    from vmcorepack.kernel.memmap import PageArrays, PageLayout

    rng = np.random.default_rng(seed)
    old_kernel = seed % 4 == 3
    n = 4096
    size = 64
    # Field values drawn from the few that matter, so that every rule fires.
    flag_bits = np.array([4, 6, 7, 8, 10, 13, 19, 23, 31, 40], np.uint64)
    flags = np.zeros(n, np.uint64)
    for b in flag_bits:
        flags |= (rng.random(n) < 0.25).astype(np.uint64) << b
    mapcount = rng.choice(np.array([-1, 0, 3, -129, -257, -513, -1001, -1025], np.int32), n)
    layout_names = ["flags", "mapping", "mapcount", "private", "chead", "order", "dtor"]
    formats = ["<u8", "<u8", "<i4", "<u8", "<u8", "u1" if seed % 2 else "<u2", "u1" if seed % 3 else "<u8"]
    offsets = [0, 24, 48, 40, 8, 32, 34 if seed % 3 else 16]
    if seed % 5 == 4:  # no compound_head, private or mapcount exported
        keep = [0, 1, 5, 6]
        layout_names = [layout_names[i] for i in keep]
        formats = [formats[i] for i in keep]
        offsets = [offsets[i] for i in keep]
    dt = np.dtype({"names": layout_names, "formats": formats, "offsets": offsets, "itemsize": size})
    has = {name: name in layout_names for name in ("mapcount", "private", "chead")}
    layout = PageLayout(size, dt, has["mapcount"], has["private"], has["chead"], True, True)
    rec = np.zeros(n, dt)
    rec["flags"] = flags
    rec["mapping"] = rng.integers(0, 4, n, np.uint64) * np.uint64(0x1000) + rng.integers(0, 2, n, np.uint64)
    rec["order"] = rng.choice(np.array([0, 1, 2, 9, 10, 70], np.uint64), n)
    rec["dtor"] = rng.choice(np.array([0, 2, 3], np.uint64), n)
    if "mapcount" in layout_names:
        rec["mapcount"] = mapcount
        rec["private"] = rng.choice(np.array([0, 1, 3, 10, 11, 12, 63, 200], np.uint64), n)
        rec["chead"] = rng.integers(0, 2, n, np.uint64) * np.uint64(0xFFFF888000000001)
    read = rng.random(n) < 0.9
    rec[~read] = np.zeros(1, dt)
    raw = np.frombuffer(rec.tobytes(), np.uint8).copy()
    tail_ok = np.zeros(n, bool)
    tail_ok[:-1] = read[:-1] & read[1:] & (rng.random(n - 1) < 0.95)
    start = int(rng.integers(0, 1 << 20)) * 512
    examined = read & (rng.random(n) < 0.9)
    rules = _rules_variant(rng, old_kernel)
    return PageArrays(start, raw, layout, read, tail_ok), examined, start, rules, has["mapcount"]


@pytest.mark.parametrize("seed", range(12))
def test_decide_pages_equals_numpy(seed: int) -> None:
    """The C page pass (``_native.decide_pages``) classifies every page as the numpy one does."""
    _native_or_skip()
    from vmcorepack.filter import decide

    pages, examined, _, rules, has_mapcount = _struct_pages(seed)
    seen: set[int] = set()
    for level in range(32):
        native_mod.ENABLED = True
        try:
            k_c, l_c = decide(pages, examined, rules, level)
        finally:
            native_mod.ENABLED = False
        try:
            k_py, l_py = decide(pages, examined, rules, level)
        finally:
            native_mod.ENABLED = True
        assert np.array_equal(k_c, k_py), (seed, level, np.flatnonzero(k_c != k_py)[:5])
        keep = k_py != 0  # log2n only matters where a page is excluded
        assert np.array_equal(l_c[keep], l_py[keep]), (seed, level)
        seen.update(np.unique(k_py).tolist())
    # The inputs reach the cache, private-cache and user rules, and the free
    # one when struct page exports what it needs.
    assert {2, 3, 4} | ({1} if has_mapcount else set()) <= seen, seen


@pytest.mark.parametrize("seed", range(12))
def test_scan_pages_equals_numpy(seed: int) -> None:
    """One step of the page pass in C (``_native.scan_pages``) does what the numpy reference does.

    Same bits cleared, same counts, same resume pfn and last range, with the
    scan resuming inside the run or before it, and the cycle ending at the
    run's end (ranges cut short) or past it.
    """
    _native_or_skip()
    mod = native.module()
    from vmcorepack.filter import scan_native, scan_numpy

    pages, examined, lo, rules, has_mapcount = _struct_pages(seed)
    n = len(examined)
    rng = np.random.default_rng(seed + 100)
    ranges = 0
    for level in range(32):
        start = lo - int(rng.choice([0, 512]))
        end = lo + n + int(rng.choice([0, 0, 700]))
        resume = lo + int(rng.choice([-3, 0, 5, 1000]))
        bits0 = rng.random(end - start) < 0.8
        steps = []
        for scan in (functools.partial(scan_native, mod), scan_numpy):
            bits = bits0.copy()
            step = scan(pages, examined, rules, level, bits, start, end, resume)
            steps.append((bits, step))
        (b_c, s_c), (b_py, s_py) = steps
        assert np.array_equal(b_c, b_py), (seed, level, np.flatnonzero(b_c != b_py)[:5] + start)
        assert np.array_equal(s_c.counts, s_py.counts), (seed, level, s_c.counts, s_py.counts)
        assert (s_c.resume, s_c.last_end, s_c.last_kind) == (s_py.resume, s_py.last_end, s_py.last_kind), (seed, level)
        ranges += s_py.last_end is not None
    # Free blocks (their order is in private, next to _mapcount) were executed as ranges.
    assert ranges > 0 or not has_mapcount
