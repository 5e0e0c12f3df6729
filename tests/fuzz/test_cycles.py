"""Cycles in kernel structures end, in an error or in a result, never in a hang (issue 6).

The x86_64 walk descends a fixed number of levels, so a page table whose
entries point back at itself is translated (to garbage) or refused; the
printk_log walk of dmesg.py keeps a set of visited indices.  These tests pin
the first: a top-level table made only of self-references, under every
dump level that reads kernel memory.
"""

from __future__ import annotations

import signal
import struct
from pathlib import Path

import fuzzlib
import pytest

FILT = fuzzlib.VECTORS / "filt.vmcore"
#: filt.vmcore: SYMBOL(init_top_pgt)=ffffffff8000c000, phys_base 0, file offset == physical address.
TOP_TABLE = 0xC000


def _self_referencing(flags: int) -> bytes:
    data = bytearray(FILT.read_bytes())
    data[TOP_TABLE : TOP_TABLE + 4096] = struct.pack("<Q", TOP_TABLE | flags) * 512
    return bytes(data)


@pytest.mark.skipif(not FILT.exists(), reason=f"missing {FILT}")
@pytest.mark.parametrize("flags", [0x1, 0x3, 0x83], ids=["present", "present-rw", "present-pse"])
@pytest.mark.parametrize("level", ["2", "31"])
def test_page_table_cycle_ends(tmp_path: Path, flags: int, level: str) -> None:
    def _hang(signum: int, frame: object) -> None:
        raise TimeoutError("page-table cycle did not end")

    old = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(60)
    try:
        fuzzlib.run_target(lambda b, w: fuzzlib.target_cli(b, w, ("-d", level)), _self_referencing(flags), tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
