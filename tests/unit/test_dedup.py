"""Duplicate pages inside a chunk (--dedup): which page shares whose data."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vmcorepack import pipeline
from vmcorepack.codecs import get_codec
from vmcorepack.formats import kdump
from vmcorepack.pack import encoding

PS = 4096


def _chunk() -> tuple[bytes, list[bytes]]:
    a, b, c = os.urandom(PS), os.urandom(PS), b"\x11" * PS
    pages = [a, b, a, bytes(PS), c, b, bytes(PS), a, c]
    return b"".join(pages), pages


def test_duplicate_of_points_at_first_equal_page() -> None:
    raw, _pages = _chunk()
    rep = pipeline.duplicate_of(raw, PS)
    assert rep.tolist() == [0, 1, 0, 3, 4, 1, 3, 0, 4]


def test_hash_collisions_never_share(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every page hashes alike: only the byte comparison tells them apart.
    monkeypatch.setattr(encoding, "_hash_keys", lambda words: np.zeros(words, np.uint64))
    raw, pages = _chunk()
    rep = pipeline.duplicate_of(raw, PS)
    for j, r in enumerate(rep.tolist()):
        assert r <= j and pages[r] == pages[j]
    assert rep[2] == 0  # equal to the group's first page: still shared


@pytest.mark.parametrize("share_zero", [True, False])
@pytest.mark.parametrize("codec", ["zlib", "none"])
def test_encode_dedup_decodes_to_every_page(codec: str, share_zero: bool) -> None:
    raw, pages = _chunk()
    known = np.array([False, True, False, False, False, False, False, False, False, False])
    if not share_zero:
        known[:] = False
    n = len(pages) + int(known.sum())
    enc = pipeline.encode_dedup(raw, PS, get_codec(codec), share_zero, known if share_zero else None)
    data = bytes(enc.data) if isinstance(enc.data, bytes | memoryview) else b"".join(enc.data)
    plain = pipeline.encode_chunk(raw, PS, get_codec(codec), share_zero, None, known if share_zero else None)
    plain_data = bytes(plain.data) if isinstance(plain.data, bytes | memoryview) else b"".join(plain.data)
    assert len(data) < len(plain_data)  # a, b and c are stored once
    it = iter(pages)
    for i, d in enumerate(np.frombuffer(enc.descs.tobytes(), kdump.PAGE_DESC)):
        if share_zero and known[i]:
            assert d["offset"] == -1
            continue
        page = next(it)
        if d["offset"] == -1:
            assert share_zero and page == bytes(PS)
            continue
        stored = data[int(d["offset"]) : int(d["offset"]) + int(d["size"])]
        got = get_codec(codec).decompress(stored, PS) if d["flags"] else stored
        assert got == page, f"page {i}"
    assert n == len(enc.descs)
