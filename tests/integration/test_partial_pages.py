"""A page a PT_LOAD covers in part: kept as makedumpfile 1.7.9 keeps it, read with zeros past the data.

/proc/vmcore shows whole pages, so the file holds real memory past a PT_LOAD's
``p_filesz`` up to the page end (x86's 0x9fc00-0xa0000); makedumpfile's
``readpage_elf`` zero-fills it.  In makedumpfile's bitmap-file variant
(``pipeline.bitmap_in_file``) that page is in the 1st bitmap and stays in the
2nd (1.7.6+, commit f2c5f76).  Checked by hand against makedumpfile 1.7.9: the
same files at -d 1 and -d 31 (-l) and -d 31 (-c).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import require_kdumpfile
from helpers import in_child
from vmcorepack.cli import main
from vmcorepack.fixtures import FixtureSpec, build
from vmcorepack.pipeline import bitmap_in_file
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import open_elf


def _image_with_junk_past_filesz(tmp_path: Path) -> tuple[Path, int, bytes]:
    img = build(FixtureSpec(size_bytes=64 << 20, seed=3), tmp_path / "img.vmcore")
    (pfn,) = img.partial_pfns
    with open_elf(str(img.path)) as src:
        (seg,) = [s for s in src.segments if int(s["phys_start"]) <= pfn * 4096 < int(s["phys_end"])]
        end = int(seg["phys_start"]) + int(seg["file_size"])
        data_off = int(seg["file_offset"]) + pfn * 4096 - int(seg["phys_start"])
    valid = end - pfn * 4096
    with open(img.path, "r+b") as f:
        f.seek(data_off)
        f.write(b"\xab" * valid + b"\xcd" * (4096 - valid))  # data, then what /proc/vmcore shows past it
    return img.path, pfn, b"\xab" * valid + bytes(4096 - valid)


def test_partial_pages_of_a_source() -> None:
    from vmcorepack.formats import elf
    from vmcorepack.sources import NoteInfo, Source

    segs = np.zeros(3, elf.SEGMENT_DTYPE)
    segs["phys_start"] = [0x1000, 0x100000, 0x100800]
    segs["phys_end"] = segs["file_size"] = 0
    segs["file_size"] = [0x9EC00, 0x400, 0x800]
    segs["phys_end"] = segs["phys_start"] + segs["file_size"]
    src = Source("<test>", segs, NoteInfo(b"", 0, -1, 0), None, 4096, 1 << 30)
    # 0x9f: data up to 0xc00; 0x100: [0, 0x400) and [0x800, 0x1000) covered, the middle is not.
    assert src.partial_pages() == {0x9F: [(0xC00, 0x1000)], 0x100: [(0x400, 0x800)]}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("opt", ["-l", "-c"])
def test_partial_page_kept_and_zero_filled(tmp_path: Path, workers: int, opt: str) -> None:
    path, pfn, want = _image_with_junk_past_filesz(tmp_path)
    with open_elf(str(path)) as src:
        assert bitmap_in_file(src.max_mapnr), "64 MiB: both bitmaps fit makedumpfile's buffer"
    out = tmp_path / "out.kdump"
    args = ["--message-level", "0", "--workers", str(workers), opt, "-d", "31", str(path), str(out)]
    assert main(args) == 0
    with KdumpReader(str(out)) as r:
        assert r.is_dumpable(pfn)
        assert r.read_page(pfn) == want
    assert main(["--verify", str(out), str(path)]) == 0
    require_kdumpfile()
    assert in_child(_libkdumpfile_page, out, pfn) == want


def _libkdumpfile_page(dump: Path, pfn: int) -> bytes:
    import kdumpfile

    return bytes(kdumpfile.kdumpfile(str(dump)).read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096))
