"""Nothing lost under faults: full disks, -L, dying workers, signals, unreadable pages (issue 6)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_CI, require_kdumpfile
from helpers import elf_page_reader, in_child
from vmcorepack.constants import DumpStatus
from vmcorepack.errors import IncompleteDumpError
from vmcorepack.pipeline import PackOptions, pack
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import Source, open_elf

pytestmark = pytest.mark.slow


def _cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmcorepack", *args], capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def _error_lines(stderr: str) -> int:
    """Lines of our own messages (progress lines aside)."""
    return sum(1 for line in stderr.splitlines() if line.startswith("vmcorepack:"))


def _recorded_pages_match(dump: Path, vmcore: Path) -> int:
    """Every page with a valid descriptor reads back (libkdumpfile) equal to the source; return their count."""
    require_kdumpfile()
    return in_child(_recorded_pages_match_here, dump, vmcore)


def _recorded_pages_match_here(dump: Path, vmcore: Path) -> int:
    import kdumpfile

    src = elf_page_reader(vmcore)
    with KdumpReader(str(dump)) as ours:
        assert ours.header.status & DumpStatus.COMPRESSED_INCOMPLETE
        pfns = ours.dumpable_pfns()
        descs = ours.descriptors(0, len(pfns))
    k = kdumpfile.kdumpfile(str(dump))
    recorded = pfns[descs["offset"] != 0]
    for pfn in recorded.tolist():
        assert bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096)) == src(pfn), f"pfn {pfn:#x}"
    # Every descriptor that is not recorded is all zero (no dangling entries).
    rest = descs[descs["offset"] == 0]
    assert not rest["size"].any() and not rest["flags"].any()
    return len(recorded)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs (CI runs as root): {r.stderr!r}")
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("size", ["40k", "1m", "20m", "90m"])
def test_full_disk_leaves_readable_incomplete_dump(real_vmcore: Path, tmp_path: Path, size: str) -> None:
    with _tmpfs(tmp_path / "small", size) as mnt:
        out = mnt / "dump"
        r = _cli("-l", "-d", "1", "--workers", "2", str(real_vmcore), str(out))
        assert r.returncode == 1
        assert _error_lines(r.stderr) == 1 and "incomplete" in r.stderr, r.stderr
        head = out.read_bytes()[:464]
        assert int.from_bytes(head[424:428], "little") & DumpStatus.COMPRESSED_INCOMPLETE
        sub_hdr, bitmap_blocks = int.from_bytes(head[432:436], "little"), int.from_bytes(head[436:440], "little")
        if out.stat().st_size < (1 + sub_hdr + bitmap_blocks) * 4096:
            return  # not even the bitmaps fit: nothing readable, but flagged
        n = _recorded_pages_match(out, real_vmcore)
        if size == "90m":
            assert n > 10000


@pytest.mark.parametrize("limit", ["100000", "8M", "60M"])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_size_limit(real_vmcore: Path, tmp_path: Path, limit: str, workers: str) -> None:
    out = tmp_path / "dump"
    r = _cli("-l", "-d", "1", "-L", limit, "--workers", workers, str(real_vmcore), str(out))
    assert r.returncode == 1 and "incomplete" in r.stderr
    assert out.stat().st_size <= max(int(limit.rstrip("M")) * (1 << 20 if limit.endswith("M") else 1), 464)
    _recorded_pages_match(out, real_vmcore)


def test_tiny_limit_still_flags_the_header(real_vmcore: Path, tmp_path: Path) -> None:
    # makedumpfile rewrites the header with the INCOMPLETE bit even when -L
    # cuts inside it (docs/kdump-format.md §17.2.4: -L 4000 leaves 464 bytes).
    out = tmp_path / "dump"
    r = _cli("-l", "-d", "1", "-L", "4000", str(real_vmcore), str(out))
    assert r.returncode == 1 and _error_lines(r.stderr) == 1
    head = out.read_bytes()
    assert head[:8] == b"KDUMP   " and int.from_bytes(head[424:428], "little") & DumpStatus.COMPRESSED_INCOMPLETE


def test_level_fallback_after_limit(real_vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    r = _cli("-l", "-d", "1,31", "-L", "60M", str(real_vmcore), str(out))
    assert r.returncode == 0, r.stderr
    assert "retrying at dump level 31" in r.stderr + r.stdout
    with KdumpReader(str(out)) as k:
        assert k.header.dump_level == 31
        assert not k.header.status & DumpStatus.COMPRESSED_INCOMPLETE
        assert k.nr_dumpable == 33748


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                out.extend(kids)
                todo.extend(kids)
        except OSError:
            continue
    return out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"  # gone meanwhile


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_slow(real_vmcore: Path, out: Path) -> subprocess.Popen[bytes]:
    # zlib at level 0 takes several seconds on the fixture: time to interfere.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmcorepack", "-c", "-d", "0", "--workers", "2", str(real_vmcore), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # A test run started in the background by a shell inherits SIGINT ignored,
        # and Python then keeps ignoring it: give the run the default disposition.
        preexec_fn=_default_signals,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(_descendants(proc.pid)) >= 2 and out.exists() and out.stat().st_size > (20 << 20):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run did not reach its page-writing phase")


def _ends_cleanly(proc: subprocess.Popen[bytes], kids: list[int], out: Path, t0: float) -> None:
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 5, "run did not end within 5 s"
    assert proc.returncode != 0
    assert _error_lines(err.decode()) == 1, err
    for k in kids:
        assert not Path(f"/proc/{k}").exists() or "zombie" in Path(f"/proc/{k}/status").read_text().lower()
    with KdumpReader(str(out)) as k:
        assert k.header.status & DumpStatus.COMPRESSED_INCOMPLETE


def test_killed_worker_ends_the_run(real_vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    proc = _start_slow(real_vmcore, out)
    kids = _descendants(proc.pid)
    t0 = time.monotonic()
    os.kill(kids[-1], signal.SIGKILL)
    _ends_cleanly(proc, kids, out, t0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_the_run(real_vmcore: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "dump"
    proc = _start_slow(real_vmcore, out)
    kids = _descendants(proc.pid)
    t0 = time.monotonic()
    proc.send_signal(sig)
    _ends_cleanly(proc, kids, out, t0)


class _FlakySource(Source):
    """A source whose file reads fail with EIO for chosen pfns (as /proc/vmcore can)."""

    bad: frozenset[int] = frozenset()

    def _pread(self, size: int, offset: int) -> bytes:
        orig = os.pread

        def failing(fd: int, n: int, off: int) -> bytes:
            for seg in self.segments:
                fo, fs, ps0 = int(seg["file_offset"]), int(seg["file_size"]), int(seg["phys_start"])
                if fo <= off < fo + fs:
                    first = (ps0 + off - fo) // self.page_size
                    count = -(-n // self.page_size)
                    if any(first <= b < first + count for b in self.bad):
                        raise OSError(errno.EIO, "Input/output error")
            return orig(fd, n, off)

        os.pread = failing
        try:
            return super()._pread(size, offset)
        finally:
            os.pread = orig

    def page_plan(self, pfns: np.ndarray) -> None:
        # The failures are injected into Python's pread: keep the C reader
        # (which fails over to this path on a real EIO) out of the way.
        return None


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_pages_are_left_out(real_vmcore: Path, tmp_path: Path, workers: int) -> None:
    src = open_elf(str(real_vmcore))
    flaky = _FlakySource.__new__(_FlakySource)
    flaky.__dict__.update(src.__dict__)
    # Non-zero pages: zero pages of the (sparse) decompressed fixture lie in
    # file holes, which are never read and so cannot fail.
    reader0 = elf_page_reader(real_vmcore)
    candidates = [0x1234, 0x1235, 0x1236, 0x20000, 0x20001, 0x3FF00, 0x3FF01, 0x8000, 0x8001, 0x30000]
    bad = frozenset([p for p in candidates if any(reader0(p))][:4])
    assert len(bad) == 4
    flaky.bad = bad
    # Read as /proc/vmcore is read: pread only (an mmap read cannot report EIO).
    flaky.mmap_scattered = False
    flaky.map_dense = False
    out = tmp_path / "dump"
    res = pack(flaky, str(out), PackOptions(dump_level=1, codec="lzo", workers=workers))
    assert sorted(res.unreadable) == sorted(bad)
    require_kdumpfile()
    in_child(_left_out_pages_read_back, out, real_vmcore, bad)


def _left_out_pages_read_back(out: Path, vmcore: Path, bad: frozenset[int]) -> None:
    """The dump leaves exactly ``bad`` out, and libkdumpfile and our reader agree on a sample."""
    import kdumpfile

    reader = elf_page_reader(vmcore)
    k = kdumpfile.kdumpfile(str(out))
    with KdumpReader(str(out)) as ours:
        assert not ours.header.status & DumpStatus.COMPRESSED_INCOMPLETE
        pfns = ours.dumpable_pfns()
        assert not np.isin(pfns, list(bad)).any()
        assert len(pfns) == 212856 - len(bad)
        for pfn in bad:
            with pytest.raises(kdumpfile.exceptions.NoDataException):
                k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096)
        sample = np.concatenate([pfns[:2000], pfns[-2000:], pfns[::97]])
        for pfn in sample.tolist():
            assert bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096)) == reader(pfn)
            assert ours.read_page(pfn) == reader(pfn)


def test_incomplete_api_error(real_vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    with open_elf(str(real_vmcore)) as src, pytest.raises(IncompleteDumpError) as ei:
        pack(src, str(out), PackOptions(dump_level=1, codec="lzo", workers=2, limit=8 << 20))
    assert ei.value.disk_full and ei.value.pages_written > 0


def test_main_process_killed_outright_leaves_a_flagged_file(real_vmcore: Path, tmp_path: Path) -> None:
    # The OOM killer gives no chance to clean up: the header carries the flag from the start.
    out = tmp_path / "dump"
    proc = _start_slow(real_vmcore, out)
    kids = _descendants(proc.pid)
    proc.kill()
    proc.wait(10)
    # The workers die with it (PR_SET_PDEATHSIG) instead of compressing for nobody.
    deadline = time.monotonic() + 3
    alive = kids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [k for k in kids if Path(f"/proc/{k}").exists() and "zombie" not in _state(k)]
    for k in alive:
        os.kill(k, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived the main process"
    head = out.read_bytes()[:464]
    assert int.from_bytes(head[424:428], "little") & DumpStatus.COMPRESSED_INCOMPLETE


def test_no_worker_primitives_falls_back_to_one_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from conftest import VECTORS
    from vmcorepack import pipeline

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")  # as eventfd() on a kernel without it

    monkeypatch.setattr(pipeline.Sequencer, "__init__", refused)
    out = tmp_path / "dump"
    with open_elf(str(VECTORS / "tiny.vmcore")) as src:
        res = pack(src, str(out), PackOptions(dump_level=1, workers=2))
    assert any("cannot start worker processes (Function not implemented)" in w for w in res.warnings), res.warnings
    assert out.read_bytes() == (VECTORS / "tiny_d1_raw.kdump").read_bytes()
