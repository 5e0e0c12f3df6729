"""Output is the same whatever the number of workers and the cycle size (issue 4)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import IN_CI, require_tool
from helpers import file_sha256
from vmcorepack import codecs, native, pipeline, sources
from vmcorepack.cli import main
from vmcorepack.fixtures import FixtureSpec, build
from vmcorepack.pack import workers as workers_mod

Q = ["--message-level", "0"]


@pytest.mark.slow
@pytest.mark.parametrize(("level", "codec"), [(31, "-l"), (1, "-z")])
def test_real_fixture_any_workers_any_cycles(real_vmcore: Path, tmp_path: Path, level: int, codec: str) -> None:
    digests = set()
    for workers in ("0", "1", "2", "3"):
        for cycle in ([], ["--cyclic-buffer", "1"], ["--cyclic-buffer", "3"]):
            if workers in ("1", "3") and cycle:
                continue  # keep the matrix small: every worker count once, every cycle size with 0 and 2
            out = tmp_path / f"w{workers}{'-'.join(cycle)}.kdump"
            assert main([*Q, codec, "-d", str(level), "--workers", workers, *cycle, str(real_vmcore), str(out)]) == 0
            digests.add(file_sha256(out))
            out.unlink()
    assert len(digests) == 1


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.parametrize("level", [1, 16])
def test_real_fixture_equals_makedumpfile(real_vmcore: Path, tmp_path: Path, level: int) -> None:
    """Whole files equal Debian makedumpfile 1.7.2's at levels where 1.7.2 and 1.7.9 agree."""
    mdf = require_tool("makedumpfile")
    theirs, ours = tmp_path / "mdf.kdump", tmp_path / "ours.kdump"
    r = subprocess.run([mdf, "-l", "-d", str(level), str(real_vmcore), str(theirs)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert main([*Q, "-l", "-d", str(level), "--workers", "2", str(real_vmcore), str(ours)]) == 0
    assert file_sha256(ours) == file_sha256(theirs)


@pytest.mark.parametrize("generation", ["6.1", "6.12"])
def test_generated_any_workers_any_cycles(tmp_path: Path, generation: str) -> None:
    """Any worker count; any --cyclic-buffer. The default run may differ from the cycled ones in one
    1st-bitmap bit, exactly as makedumpfile's own runs do (pipeline.bitmap_in_file), so it is
    compared across worker counts only."""
    img = build(FixtureSpec(size_bytes=96 << 20, generation=generation, seed=21), tmp_path / "img.vmcore")
    by_variant: dict[str, set[str]] = {"default": set(), "cycled": set()}
    for workers in ("0", "1", "2", "3"):
        for cycle in ([], ["--cyclic-buffer", "1"], ["--cyclic-buffer", "2"]):
            out = tmp_path / f"w{workers}{len(cycle)}.kdump"
            assert main([*Q, "-c", "-d", "31", "--workers", workers, *cycle, str(img.path), str(out)]) == 0
            by_variant["cycled" if cycle else "default"].add(file_sha256(out))
            out.unlink()
    assert len(by_variant["default"]) == 1
    assert len(by_variant["cycled"]) == 1


@pytest.mark.parametrize("codec", ["lzo", "zlib", "none"])
def test_generated_any_chunk_size_either_page_loop(tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk sizes (odd ones too), the C or Python page loop, and reading pages inside the C loop
    (encode_from_file) or before it change nothing in the file."""
    if codec == "lzo" and not codecs.available("lzo"):
        pytest.fail("python-lzo missing (.ci/run installs it)") if IN_CI else pytest.skip("python-lzo missing")
    img = build(FixtureSpec(size_bytes=64 << 20, generation="6.1", seed=5), tmp_path / "img.vmcore")
    digests = set()
    for use_c, fused in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(native, "ENABLED", use_c)
        monkeypatch.setattr(workers_mod, "FUSED_READ", fused)
        for workers, chunk in ((0, 0), (0, 1), (0, 37), (2, 0), (2, 333), (3, 4096)):
            out = tmp_path / f"{use_c}-{fused}-{workers}-{chunk}.kdump"
            opts = pipeline.PackOptions(dump_level=31, codec=codec, workers=workers, chunk_pages=chunk)
            pipeline.pack(sources.open_elf(str(img.path)), str(out), opts)
            digests.add(file_sha256(out))
            out.unlink()
    assert len(digests) == 1


def test_repeated_packs_leak_no_descriptors(tmp_path: Path) -> None:
    """Each run's worker pipes, eventfds and shared state go away with it (library callers pack many times)."""
    import os

    from conftest import VECTORS

    opts = pipeline.PackOptions(dump_level=1, codec="lzo", workers=2)
    counts = []
    for i in range(4):
        with sources.open_elf(str(VECTORS / "tiny.vmcore")) as src:
            pipeline.pack(src, str(tmp_path / f"d{i}"), opts)
        counts.append(len(os.listdir("/proc/self/fd")))
    assert counts[-1] == counts[0], counts
    assert (tmp_path / "d3").read_bytes() == (VECTORS / "tiny_d1_lzo.kdump").read_bytes()


@pytest.mark.parametrize("level", ["1", "31"])
def test_mapped_reads_change_nothing(real_vmcore: Path, tmp_path: Path, level: str) -> None:
    """--mmap (mapped windows in the C loop and the page pass, as for /proc/vmcore), --non-mmap and the
    default give the same file."""
    digests = set()
    for how in ([], ["--mmap"], ["--non-mmap"]):
        out = tmp_path / f"m{'-'.join(how)}.kdump"
        assert main([*Q, "-l", "-d", level, "--workers", "0", *how, str(real_vmcore), str(out)]) == 0
        digests.add(file_sha256(out))
        out.unlink()
    assert len(digests) == 1
