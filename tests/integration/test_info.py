"""--info: header fields agree with crash, page kinds with libkdumpfile and makedumpfile's --show-stats (issue 5)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_CI, VECTORS, reference_stats, require_kdumpfile, require_tool
from vmcorepack import cli, info
from vmcorepack.info import PageKind
from vmcorepack.sources import open_elf

ps = 4096


def makedumpfile(args: list[str], vmcore: Path, out: Path) -> Path:
    """Run Debian's makedumpfile (1.7.2) on ``vmcore``."""
    require_tool("makedumpfile")
    subprocess.run(["makedumpfile", *args, str(vmcore), str(out)], check=True, capture_output=True)
    return out


def crash_fields(path: Path) -> dict[str, str]:
    """Header fields as crash parses them (`crash -d 1 --osrelease`), first occurrence of each name."""
    require_tool("crash")
    out = subprocess.run(
        ["crash", "-d", "1", "--osrelease", str(path)], capture_output=True, text=True, timeout=120
    ).stdout
    fields: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"^\s+(\w+): (\S.*)$", line)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2).strip()
    assert "block_size" in fields, out
    return fields


def assert_header_matches_crash(path: Path, d: dict) -> None:
    c = crash_fields(path)
    h = d["header"]
    assert int(c["header_version"]) == h["header_version"]
    assert c.get("release", "") == h["utsname"]["release"]
    assert int(c["status"].split()[0], 16) == h["status"]  # crash prints it in hex
    for name in ("block_size", "sub_hdr_size", "bitmap_blocks", "nr_cpus"):
        assert int(c[name]) == h[name], name
    assert int(c["max_mapnr_64"].split()[0]) == h["max_mapnr"]
    assert int(c["phys_base"], 16) == h["phys_base"]
    assert int(c["dump_level"].split()[0]) == h["dump_level"]
    for name in ("offset_vmcoreinfo", "size_vmcoreinfo", "offset_note", "size_note"):
        if h[name]:
            assert int(c[name].split()[0]) == h[name], name


def kinds_by_libkdumpfile(path: Path, max_mapnr: int) -> dict[str, int]:
    """Count pfns libkdumpfile reads (and which read as zeros) or refuses."""
    kdumpfile = require_kdumpfile()
    k = kdumpfile.kdumpfile(str(path))
    readable = zero = 0
    for pfn in range(max_mapnr):
        try:
            page = k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * ps, ps)
        except (kdumpfile.exceptions.NoDataException, kdumpfile.exceptions.CorruptException):
            continue
        readable += 1
        zero += not any(page)
    return {"readable": readable, "zero": zero}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- makedumpfile's vectors ---------------------------------------------------

VECTOR_FILES = [
    "tiny_d0_raw.kdump",
    "tiny_d1_raw.kdump",
    "tiny_d1_zlib.kdump",
    "tiny_d1_lzo.kdump",
    "tiny_d1_snappy.kdump",
    "tiny_d1_zstd.kdump",
    "filt_d31.kdump",
    "filt_d8.kdump",
]


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_info_json_on_vectors_agrees_with_crash_and_libkdumpfile(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = VECTORS / name
    rc, out, _ = run_cli(["--info", "--json", str(path)], capsys)
    assert rc == 0
    d = json.loads(out)
    p = d["pages"]
    assert p["kept"] + p["zero"] + p["excluded"] + p["holes"] + p["missing"] == p["max_mapnr"]
    assert p["kept"] + p["zero"] == p["dumpable"]
    assert sum(d["codec_mix"].values()) == p["dumpable"]
    assert_header_matches_crash(path, d)
    got = kinds_by_libkdumpfile(path, p["max_mapnr"])
    assert got["readable"] == p["kept"] + p["zero"]
    assert got["zero"] >= p["zero"]


def test_info_flat_stream_equals_regular(capsys: pytest.CaptureFixture[str]) -> None:
    a = info.dump_info([str(VECTORS / "tiny_d1_raw.flat")]).to_dict()
    b = info.dump_info([str(VECTORS / "tiny_d1_raw.kdump")]).to_dict()
    assert a["parts"][0]["container"] == "flattened"
    assert b["parts"][0]["container"] == "regular"
    a.pop("parts")
    b.pop("parts")
    assert a == b
    # tiny: pfn 5 is a hole, 1, 3, 8 are zero pages (vectors/README.md).
    assert a["pages"]["zero"] == 3
    assert a["pages"]["kept"] == 6
    assert a["codec_mix"] == {"raw": 6, "zero-page": 3}


def test_info_split_parts(capsys: pytest.CaptureFixture[str]) -> None:
    parts = [str(VECTORS / "tiny_split2.kdump"), str(VECTORS / "tiny_split1.kdump")]
    whole = info.dump_info([str(VECTORS / "tiny_reassembled.kdump")])
    split = info.dump_info(parts)
    assert [(p.start_pfn, p.end_pfn) for p in split.parts] == [(0, 4), (4, 10)]
    assert split.pages == whole.pages
    assert split.codec_mix == whole.codec_mix
    one = info.dump_info(parts[:1])
    assert one.pages.missing == 4  # pfns 0-3 are in the other part
    rc, out, _ = run_cli(["--info", *parts], capsys)
    assert rc == 0
    assert "Split part      : [0x0, 0x4)" in out
    for part in parts:
        assert_header_matches_crash(Path(part), json.loads(json.dumps(info.dump_info([part]).to_dict())))


def test_info_incomplete_vector(capsys: pytest.CaptureFixture[str]) -> None:
    d = info.dump_info([str(VECTORS / "tiny_incomplete.kdump")])
    assert d.incomplete
    # PFNs 0-2 readable, 3, 4, 6-9 descriptors zeroed (kdump-format.md §12).
    assert d.pages.kept + d.pages.zero == 3
    assert d.pages.missing == 6
    assert d.codec_mix["incomplete"] == 6
    rc, out, _ = run_cli(["--info", str(VECTORS / "tiny_incomplete.kdump")], capsys)
    assert rc == 0
    assert "INCOMPLETE" in out


def test_map_geometry_is_bounded() -> None:
    for max_mapnr in (10, 262_144, 1 << 28, (1 << 38) + 5):  # 40 KiB, 1 GiB, 1 TiB, 1 PiB of 4 KiB pages
        group, width = info.map_geometry(max_mapnr)
        groups = -(-max_mapnr // group)
        assert groups <= info.MAX_PIXELS
        assert width <= info.MAX_WIDTH
        assert -(-groups // width) <= info.MAX_PIXELS // 1 and -(-groups // width) * width <= 2 * info.MAX_PIXELS
    assert info.map_geometry(262_144) == (1, 512)
    assert info.map_geometry(1 << 28) == (256, 1024)


def test_plot_on_vector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not IN_CI:
        pytest.importorskip("matplotlib")
    png = tmp_path / "map.png"
    rc, _, _ = run_cli(["--info", str(VECTORS / "filt_d31.kdump"), "--plot", str(png)], capsys)
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = info.page_map([str(VECTORS / "filt_d31.kdump")])
    d = info.dump_info([str(VECTORS / "filt_d31.kdump")])
    t = m.totals()
    assert (t[PageKind.KEPT], t[PageKind.ZERO], t[PageKind.EXCLUDED], t[PageKind.HOLE]) == (
        d.pages.kept,
        d.pages.zero,
        d.pages.excluded,
        d.pages.holes,
    )


# -- the real fixture ----------------------------------------------------------


@pytest.mark.interop
@pytest.mark.slow
def test_info_real_fixture_matches_show_stats(
    real_vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = makedumpfile(["-l", "-d", "31"], real_vmcore, tmp_path / "d31.kdump")
    rc, out, _ = run_cli(["--info", "--json", str(dump)], capsys)
    assert rc == 0
    d = json.loads(out)
    assert_header_matches_crash(dump, d)
    stats = reference_stats(31)
    p = d["pages"]
    assert p["zero"] == stats["Pages filled with zero"]
    assert p["holes"] + p["ram"] == p["max_mapnr"] == stats["Total pages"]
    assert d["codec_mix"]["lzo"] + d["codec_mix"]["raw"] == p["kept"]
    assert d["kernel_release"] == "6.1.0-56-amd64"
    assert d["stored_bytes"] < p["dumpable"] * ps
    # With the source, excluded pages are told apart exactly as --show-stats counts them.
    with open_elf(str(real_vmcore)) as src:
        m = info.page_map([str(dump)], src)
    t = m.totals()
    assert t[PageKind.FREE] == stats["Free pages"]
    assert t[PageKind.USER] == stats["User process data pages"]
    assert t[PageKind.CACHE] == stats["Non-private cache pages"] + stats["Private cache pages"]
    assert t[PageKind.EXCLUDED] == 0
    assert t[PageKind.KEPT] + t[PageKind.ZERO] == p["dumpable"]
    # libkdumpfile reads exactly the kept pages.
    got = kinds_by_libkdumpfile(dump, p["max_mapnr"])
    assert got["readable"] == p["dumpable"]


@pytest.mark.interop
@pytest.mark.slow
def test_plot_real_fixture(real_vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not IN_CI:
        pytest.importorskip("matplotlib")
    dump = makedumpfile(["-l", "-d", "31"], real_vmcore, tmp_path / "d31.kdump")
    png = tmp_path / "map.png"
    rc, _, _ = run_cli(["--info", str(dump), "--plot", str(png), "--source", str(real_vmcore)], capsys)
    assert rc == 0
    from PIL import Image

    w, h = Image.open(png).size
    assert 500 < w < 1600 and 500 < h < 1600
    colours = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    present = {tuple(c) for c in np.unique(colours, axis=0).tolist()}
    for kind in (PageKind.KEPT, PageKind.ZERO, PageKind.CACHE, PageKind.USER, PageKind.FREE, PageKind.HOLE):
        assert info.KIND_STYLE[kind][0] in present, kind


def test_map_kinds_other_than_holes_add_up_to_ram() -> None:
    # One part of two: the pfns of the other are MISSING where the 1st bitmap has RAM, HOLE elsewhere.
    for parts in (["tiny_split1.kdump"], ["tiny_split2.kdump"], ["tiny_split1.kdump", "tiny_split2.kdump"]):
        paths = [str(VECTORS / p) for p in parts]
        t = info.page_map(paths).totals()
        d = info.dump_info(paths)
        assert sum(v for k, v in t.items() if k != PageKind.HOLE) == d.pages.ram, parts
        assert t[PageKind.HOLE] == d.pages.max_mapnr - d.pages.ram, parts


def test_address_ticks_are_power_of_two_boundaries() -> None:
    gib = 1 << 30
    assert info.address_ticks(1023 << 20) == [0, gib // 4, gib // 2, 3 * gib // 4]
    assert info.address_ticks(16 * gib) == [k * gib for k in range(16)]
    assert info.address_ticks(17 * gib) == [k * 2 * gib for k in range(9)]
    assert info.address_ticks(1 << 40) == [k * (1 << 36) for k in range(16)]
    for span in (1 << 12, 5 << 20, 3 * gib, (1 << 40) + 1, 1 << 50):
        ticks = info.address_ticks(span)
        step = ticks[1]
        assert 4 <= len(ticks) <= 16 and step & (step - 1) == 0 and ticks == list(range(0, span, step)), span


@pytest.mark.slow
def test_plot_classifies_kept_pages_with_source(real_vmcore: Path, tmp_path: Path) -> None:
    # Per pfn (1 pixel = 1 page on this 1 GiB fixture): what -d 1 keeps as page cache, user
    # data or free is exactly what -d 31 excludes as such, and kernel pages are kept by both.
    from vmcorepack.pipeline import PackOptions, pack

    maps = {}
    with open_elf(str(real_vmcore)) as src:
        for level in (1, 31):
            dump = tmp_path / f"d{level}.kdump"
            pack(src, str(dump), PackOptions(dump_level=level, codec="lzo"))
            maps[level] = info.page_map([str(dump)], src)
    assert maps[1].group == 1
    k1, k31 = maps[1].kinds(), maps[31].kinds()
    pairs = {
        PageKind.KEPT: PageKind.KEPT,
        PageKind.CACHE_KEPT: PageKind.CACHE,
        PageKind.USER_KEPT: PageKind.USER,
        PageKind.FREE_KEPT: PageKind.FREE,
    }
    for kept, excluded in pairs.items():
        at = k1 == kept
        assert at.sum() > 0, kept
        assert (k31[at] == excluded).all(), (kept, np.unique(k31[at], return_counts=True))
    # Pages only -d 1 stores as the zero page are whatever -d 31 says; nothing is left unsorted.
    t1 = maps[1].totals()
    assert t1[PageKind.EXCLUDED] == t1[PageKind.CACHE] == t1[PageKind.USER] == t1[PageKind.FREE] == 0
    assert sum(t1[k] for k in pairs) + t1[PageKind.ZERO] == 212_856
    if not IN_CI:
        pytest.importorskip("matplotlib")
    from PIL import Image

    png = tmp_path / "d1.png"
    info.render_map(info.dump_info([str(tmp_path / "d1.kdump")]), maps[1], str(png))
    present = {tuple(c) for c in np.unique(np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3), axis=0).tolist()}
    for kind in (*pairs, PageKind.ZERO, PageKind.HOLE):
        assert info.KIND_STYLE[kind][0] in present, kind
