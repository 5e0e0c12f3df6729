"""Erasure in the page pass on a generated image: any worker count, only the erased bytes change (issue 21).

Runs without the real fixture: the erase plan is made of physical ranges
directly (a stand-in Program that translates identically), so this checks
the pipeline hook, the makedumpfile cut at undumped pages and the erase info.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import file_sha256
from vmcorepack import pipeline, sources
from vmcorepack.erase import ErasePlan, Target
from vmcorepack.fixtures import FixtureSpec, build
from vmcorepack.reader import KdumpReader


class Identity:
    """Just what ErasePlan uses of a Program: vtop (here physical = virtual)."""

    def vtop(self, address: int) -> int:
        return address


def _pack(img: Path, out: Path, workers: int, plan: ErasePlan | None) -> None:
    with sources.open_elf(str(img)) as src:
        pipeline.pack(src, str(out), pipeline.PackOptions(dump_level=31, codec="zlib", workers=workers, erase=plan))


@pytest.mark.parametrize("generation", ["6.1"])
def test_erase_any_workers(tmp_path: Path, generation: str) -> None:
    img = build(FixtureSpec(size_bytes=96 << 20, generation=generation, seed=7), tmp_path / "img.vmcore")
    plain = tmp_path / "plain.kdump"
    _pack(img.path, plain, 0, None)
    r = KdumpReader(str(plain))
    kept = r.dumpable_pfns()
    # Three ranges: inside a kept page, across the end of a kept page into a
    # kept page, and across into a page that is not dumped (stops there).
    runs = np.flatnonzero(np.diff(kept) == 1)
    a, b = int(kept[0]), int(kept[runs[0]])
    gap = int(kept[np.flatnonzero(np.diff(kept) > 1)[0]])
    targets = [
        Target(a * 4096 + 100, 20, False, "a", 1),
        Target(b * 4096 + 4090, 12, False, "b", 2),
        Target(gap * 4096 + 4088, 16, True, "c", 3),
    ]
    digests = set()
    for workers in (0, 2):
        out = tmp_path / f"e{workers}.kdump"
        _pack(img.path, out, workers, ErasePlan(Identity(), targets))  # type: ignore[arg-type]
        digests.add(file_sha256(out))
    assert len(digests) == 1
    e = KdumpReader(str(tmp_path / "e0.kdump"))
    assert e.dumpable_pfns().tolist() == kept.tolist()
    changed = {int(p) for p in kept if e.read_page(int(p)) != r.read_page(int(p))}
    assert changed <= {a, b, b + 1, gap}
    assert e.read_page(a)[100:120] == b"X" * 20 and e.read_page(a)[:100] == r.read_page(a)[:100]
    assert e.read_page(b)[4090:] == b"X" * 6 and e.read_page(b + 1)[:6] == b"X" * 6
    assert e.read_page(gap)[4088:] == bytes(8)
    text = b"erase a size 20\nerase b size 12\nerase c nullify\n"
    with open(tmp_path / "e0.kdump", "rb") as f:
        f.seek(e.header.offset_eraseinfo)
        assert f.read(e.header.size_eraseinfo) == text
    # Without a plan the output is the plain run's, byte for byte.
    again = tmp_path / "again.kdump"
    _pack(img.path, again, 2, None)
    assert file_sha256(again) == file_sha256(plain)
