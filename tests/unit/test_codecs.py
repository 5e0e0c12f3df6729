from __future__ import annotations

import os

import pytest

from conftest import codec_params
from vmcorepack import codecs
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
