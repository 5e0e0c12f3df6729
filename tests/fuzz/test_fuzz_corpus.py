"""Replay every input the fuzzers found crashing (tests/fuzz/corpus/<target>/*.bin.gz).

Each file made a parser raise something other than a VmcorepackError (or
allocate gigabytes) before its fix; run_long.py adds new ones.  The directory
names the target (fuzzlib.corpus_target); CLI inputs replay under every option
set of fuzzlib.CLI_OPTIONS.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import fuzzlib
import pytest

FILES = sorted(fuzzlib.CORPUS.glob("*/*.bin.gz"))


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name[:40]}" for p in FILES])
def test_corpus_input_gives_our_errors_only(path: Path, tmp_path: Path) -> None:
    data = gzip.decompress(path.read_bytes())
    with fuzzlib.memory_cap():
        for target in fuzzlib.corpus_target(path.parent.name):
            fuzzlib.run_target(target, data, tmp_path)


def test_corpus_is_small() -> None:
    assert FILES, "the regression corpus is empty"
    assert sum(p.stat().st_size for p in FILES) < 512 << 10
