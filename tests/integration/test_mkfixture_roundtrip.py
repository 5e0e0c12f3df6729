"""mkfixture round trip: generate, pack, verify at every level and codec (issue 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import codec_params
from vmcorepack.fixtures import FixtureSpec, GeneratedImage, build, pack_image
from vmcorepack.verify import verify


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> GeneratedImage:
    spec = FixtureSpec(size_bytes=24 << 20, generation=request.param, paging_levels=5, seed=9)
    return build(spec, tmp_path_factory.mktemp("rt") / "img.vmcore")


@pytest.mark.parametrize("codec", codec_params())
def test_every_level_round_trips(image: GeneratedImage, tmp_path: Path, codec: str) -> None:
    for level in range(32):
        out = tmp_path / f"d{level}.kdump"
        res = pack_image(image, out, level, codec)
        assert res.dumpable == int(image.expected_second_bitmap(level).sum())
        with image.open_source() as src:
            report = verify([str(out)], src, workers=0)
        assert report.ok, f"level {level}: {[f.message for f in report.errors]}"
        out.unlink()
