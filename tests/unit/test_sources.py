"""Where a page's data lies in an input file (sources.Source.file_offsets)."""

from __future__ import annotations

import numpy as np
import pytest

from vmcorepack.formats import elf
from vmcorepack.sources import NoteInfo, Source


def _source(rng: np.random.Generator, nseg: int, overlap: bool, ps: int) -> Source:
    """Segments in random table order, some partial pages and file-less tails; overlapping if asked."""
    segs = np.zeros(nseg, elf.SEGMENT_DTYPE)
    if overlap:
        start = rng.integers(0, 400, nseg) * ps + rng.integers(0, 2, nseg) * (ps // 2)
    else:
        gaps = rng.integers(0, 20, nseg) * ps
        lens = rng.integers(1, 60, nseg) * ps
        start = np.cumsum(gaps + lens) - lens
        rng.shuffle(start)
    length = rng.integers(1, 80, nseg) * ps - rng.integers(0, 2, nseg) * (ps // 4)
    filesz = np.where(rng.random(nseg) < 0.2, length // 2, length)
    filesz[rng.random(nseg) < 0.1] = 0
    segs["phys_start"] = start
    segs["phys_end"] = start + length
    segs["file_size"] = filesz
    segs["file_offset"] = rng.permutation(nseg) * (100 * ps) + 64
    return Source("img", segs, NoteInfo(b"", 0, -1, 0), None, ps, 1 << 40)


def _by_owner(src: Source, pfns: np.ndarray) -> np.ndarray:
    """The reference: page_owner's segment (first in table order), then that segment's offset."""
    owner = src.page_owner(0, int(pfns.max()) + 1)[pfns]
    seg = src.segments[np.maximum(owner, 0)]
    pa = pfns * src.page_size
    want = seg["file_offset"].astype(np.int64) + pa - seg["phys_start"].astype(np.int64)
    return np.where(owner >= 0, want, -1)


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_file_offsets_follow_the_first_owning_segment(seed: int, overlap: bool) -> None:
    rng = np.random.default_rng(seed)
    ps = 4096
    src = _source(rng, int(rng.integers(1, 12)), overlap, ps)
    pfns = np.arange(0, int(src.segments["phys_end"].max()) // ps + 3, dtype=np.int64)
    got = src.file_offsets(pfns)
    assert got.tolist() == _by_owner(src, pfns).tolist()
    # A second call answers from the cached run table, the same way.
    assert src.file_offsets(pfns[::3]).tolist() == got[::3].tolist()


def test_file_offsets_without_file_data() -> None:
    segs = np.zeros(1, elf.SEGMENT_DTYPE)
    segs["phys_end"] = 1 << 20
    src = Source("img", segs, NoteInfo(b"", 0, -1, 0), None, 4096, 0)
    assert src.file_offsets(np.arange(4, dtype=np.int64)).tolist() == [-1] * 4
