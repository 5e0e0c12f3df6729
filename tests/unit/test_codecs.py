from __future__ import annotations

import dataclasses
import os

import pytest

from conftest import codec_params
from vmcorepack import codecs, native
from vmcorepack.errors import CompressionError, UnsupportedError


@pytest.mark.parametrize("name", codec_params())
def test_roundtrip(name: str) -> None:
    codec = codecs.get_codec(name)
    page = (b"PFN42:" * 700)[:4096]
    data = codec.compress(page)
    assert codecs.decode_page(codec.flag, data, 4096) == page


def test_known_bytes() -> None:
    # docs/kdump-format.md §5.3: zlib level 1 starts 78 01.
    assert codecs.get_codec("zlib").compress(bytes(4096))[:2] == b"\x78\x01"
    if codecs.available("snappy"):
        assert codecs.get_codec("snappy").compress(bytes(4096))[:2] == b"\x80\x20"
    if codecs.available("zstd"):
        assert codecs.get_codec("zstd").compress(bytes(4096))[:4] == b"\x28\xb5\x2f\xfd"


def test_wrong_size_is_an_error() -> None:
    with pytest.raises(CompressionError, match="expected 4096"):
        codecs.decode_page(0, b"x" * 100, 4096, pfn=7)
    with pytest.raises(CompressionError):
        codecs.decode_page(1, os.urandom(50), 4096, pfn=7)


def test_unknown_codec() -> None:
    with pytest.raises(UnsupportedError, match="unknown codec"):
        codecs.get_codec("lz4")


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch):
    """only(name, *loaders): make ``name`` use just these loaders (a fallback, or nothing at all)."""

    def set_loaders(name: str, *loaders) -> None:
        monkeypatch.setitem(codecs.CODECS, name, dataclasses.replace(codecs.CODECS[name], loaders=loaders))
        codecs._impl.cache_clear()

    yield set_loaders
    monkeypatch.undo()
    codecs._impl.cache_clear()


def _pages() -> list[bytes]:
    return [bytes(4096), (b"PFN42:" * 700)[:4096], os.urandom(4096), bytes(4000) + os.urandom(96)]


def test_lzo_is_the_extension_when_built() -> None:
    if not native.built():
        pytest.skip("vmcorepack._native is not built")
    assert codecs.get_codec("lzo").impl().label.startswith("C extension")
    assert native.library() is not None


def test_lzo_falls_back_to_python_lzo(only) -> None:
    lzo = pytest.importorskip("lzo")
    only("lzo", codecs._lzo_python)
    codec = codecs.get_codec("lzo")
    assert codec.impl().label.startswith("python-lzo")
    for page in _pages():
        data = codec.compress(page)
        assert data == lzo.compress(page, 1, False)
        assert codecs.decode_page(codec.flag, data, 4096) == page


def test_python_snappy_fallback_is_valid_snappy(only) -> None:
    """python-snappy's bytes decode through libsnappy (what crash and libkdumpfile link) and back."""
    if not codecs.available("snappy"):
        pytest.skip("no snappy")
    lib = codecs._libsnappy()
    py = codecs._python_snappy()
    for page in _pages():
        assert lib.decompress(py.compress(page), 4096) == page
        assert py.decompress(lib.compress(page), 4096) == page
    only("snappy", codecs._python_snappy)
    codec = codecs.get_codec("snappy")
    assert codec.impl().label.startswith("python-snappy")
    assert codecs.decode_page(codec.flag, codec.compress(_pages()[1]), 4096) == _pages()[1]


def test_python_snappy_refuses_a_length_past_the_page() -> None:
    py = codecs._python_snappy()
    with pytest.raises(ValueError, match="claims 4097"):
        py.decompress(b"\x81\x20" + b"\x00" * 8, 4096)
    with pytest.raises(ValueError, match="malformed"):
        py.decompress(b"\xff" * 6, 4096)
    with pytest.raises(CompressionError):
        codecs.decode_page(codecs.CODECS["snappy"].flag, b"\xff\xff\xff\xff\x0f", 4096)


def test_missing_codec_names_what_to_install(only) -> None:
    def missing() -> codecs.Impl:
        raise ImportError("no")

    only("zstd", missing)
    with pytest.raises(UnsupportedError, match="zstd support is missing: apt-get install libzstd1"):
        codecs.get_codec("zstd")
    assert codecs.status("zstd") == (False, codecs.CODECS["zstd"].hint)
    assert not codecs.available("zstd")


def test_registry_drives_the_options_and_masks() -> None:
    from vmcorepack.cli import build_parser

    p = build_parser()
    for c in codecs.CODECS.values():
        if c.option:
            assert p.parse_args([c.option, "a", "b"]).codec == c.name
            assert codecs.codec_for_flags(c.flag) is c
    assert codecs.CODEC_FLAGS == 0x27  # DumpStatus: zlib 1, lzo 2, snappy 4, zstd 0x20 (not 8, incomplete)
    # Readers test zlib first (crash, libkdumpfile): a descriptor with two bits is zlib.
    assert codecs.codec_for_flags(0x21).name == "zlib"


def test_version_lists_every_codec(capsys: pytest.CaptureFixture[str]) -> None:
    from vmcorepack.cli import main

    assert main(["-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("vmcorepack: version ")
    names = [line.split("\t")[0] for line in lines[1:]]
    assert names == ["zlib", "lzo", "snappy", "zstd", "fast-zlib", "C extension"]
    for line in lines[1:6]:
        assert line.split("\t")[1].startswith(("enabled (", "disabled ("))
    if native.module() is not None:
        # Each codec the C loop loads a library for names that library's file.
        for line in lines[3:6]:
            name = line.split("\t")[0]
            if codecs.loop_library(name) is not None:
                assert f"C page loop: {codecs.loop_library(name)}" in line
                assert name in lines[6]


def test_plot_without_matplotlib_fails_before_the_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import importlib.util

    from vmcorepack.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a))
    assert main(["--info", "--plot", str(tmp_path / "m.png"), str(tmp_path / "no-such.kdump")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == "vmcorepack: --plot needs matplotlib: pip install 'vmcorepack[plot]'"


def test_mkfixture_checks_the_codec_before_writing(only, capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from vmcorepack import mkfixture

    def missing() -> codecs.Impl:
        raise OSError("no")

    only("snappy", missing)
    img = tmp_path / "img.elf"
    rc = mkfixture.main(["--size", "64M", str(img), "--pack", "31", "--codec", "snappy", str(tmp_path / "o.kdump")])
    assert rc == 1
    assert not img.exists()
    assert "snappy support is missing" in capsys.readouterr().err


def test_fast_zlib_goes_with_c_only(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from vmcorepack.cli import main

    for opts in (["--fast-zlib"], ["--fast-zlib", "-l"], ["-z", "--fast-zlib"]):
        assert main([*opts, str(tmp_path / "in"), str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["vmcorepack: --fast-zlib goes with -c (it is another encoder of zlib pages)"]
    assert not (tmp_path / "out").exists()


def test_fast_zlib_without_libdeflate_fails_up_front(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    """One line naming what to install, before the input is opened; plain -c still works."""
    from vmcorepack.cli import main

    def missing() -> codecs.Impl:
        raise OSError("libdeflate.so.0: cannot open shared object file")

    monkeypatch.setattr(codecs, "FAST_ZLIB", dataclasses.replace(codecs.FAST_ZLIB, loaders=(missing,)))
    codecs._impl.cache_clear()
    try:
        assert main(["--fast-zlib", "-c", str(tmp_path / "absent"), str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["vmcorepack: fast-zlib support is missing: " + codecs.FAST_ZLIB.hint]
        assert "apt-get install libdeflate0" in err[0]
        assert codecs.status("fast-zlib") == (False, codecs.FAST_ZLIB.hint)
        assert codecs.available("zlib")
    finally:
        codecs._impl.cache_clear()
