from __future__ import annotations

import pytest

from vmcorepack.errors import VmcoreinfoError
from vmcorepack.vmcoreinfo import VmcoreInfo

TEXT = b"""OSRELEASE=6.1.0-56-amd64
PAGESIZE=4096
SYMBOL(init_uts_ns)=ffffffff8b3fb000
SIZE(page)=64
OFFSET(page.flags)=0
LENGTH(zone.free_area)=11
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129
NUMBER(VMALLOC_START)=0xffffc90000000000
KERNELOFFSET=8800000
CRASHTIME=1795750842
\0\0\0"""


def test_parse_typed_values() -> None:
    vi = VmcoreInfo.parse(TEXT)
    assert vi.osrelease == "6.1.0-56-amd64"
    assert vi.page_size == 4096
    assert vi.symbol("init_uts_ns") == 0xFFFFFFFF8B3FB000
    assert vi.size("page") == 64
    assert vi.offset("page.flags") == 0
    assert vi.length("zone.free_area") == 11
    assert vi.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert vi.number("VMALLOC_START") == 0xFFFFC90000000000
    assert vi.kerneloffset == 0x8800000
    assert vi.crashtime == 1795750842
    assert vi.symbol("missing") is None


def test_require_names_the_missing_key() -> None:
    vi = VmcoreInfo.parse(TEXT)
    with pytest.raises(VmcoreinfoError, match=r"SYMBOL\(mem_section\)"):
        vi.require("SYMBOL", "mem_section")


@pytest.mark.parametrize("data", [b"\xff\xfe garbage", b"no equals sign here\n", b""])
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(VmcoreinfoError):
        VmcoreInfo.parse(data)


def test_bad_number_is_an_error() -> None:
    vi = VmcoreInfo.parse(b"SIZE(page)=sixty-four\n")
    with pytest.raises(VmcoreinfoError, match="not a number"):
        vi.size("page")
