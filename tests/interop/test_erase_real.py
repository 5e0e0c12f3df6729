"""Erase filters on the real Debian 6.1 vmcore (issue 21): kallsyms, BTF, --config.

Without a vmlinux the erase config runs on the dump's own kallsyms and BTF.
With ``VMCOREPACK_VMLINUX`` naming the fixture's debug vmlinux (Debian's
``linux-image-6.1.0-56-amd64-dbg``, fixtures README) and makedumpfile 1.7.9
(``VMCOREPACK_MAKEDUMPFILE_179``), the output must equal makedumpfile's byte
for byte, with ``-x`` and without it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import require_drgn, require_kdumpfile
from vmcorepack.cli import main
from vmcorepack.kernel import kallsyms
from vmcorepack.kernel.arch import for_source
from vmcorepack.kernel.btf import Btf
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import open_elf

#: What the configs erase: init_task.comm, 16 bytes of core_pattern, 14 of modprobe_path.
CONFIG = "erase {cast}init_task.comm\nerase core_pattern size 16\nerase modprobe_path size 14\n"
KALLSYMS_IN_VMCOREINFO = (
    "init_uts_ns",
    "_stext",
    "vmap_area_list",
    "prb",
    "printk_rb_static",
    "clear_seq",
    "init_top_pgt",
    "node_data",
)
ERASEINFO = b"erase init_task.comm size 16\nerase core_pattern size 16\nerase modprobe_path size 14\n"


def _vmlinux() -> Path:
    given = os.environ.get("VMCOREPACK_VMLINUX")
    if not given:
        pytest.skip("set VMCOREPACK_VMLINUX to the fixture's debug vmlinux (fixtures README)")
    return Path(given)


def _mdf179() -> Path:
    given = os.environ.get("VMCOREPACK_MAKEDUMPFILE_179")
    if not given:
        pytest.skip("set VMCOREPACK_MAKEDUMPFILE_179 to makedumpfile 1.7.9")
    return Path(given)


def test_kallsyms_and_btf(real_vmcore: Path) -> None:
    with open_elf(str(real_vmcore)) as src:
        vi = src.vmcoreinfo
        assert vi is not None
        mem = for_source(src).walker(src)
        ks = kallsyms.decode(mem, vi)
        assert ks.encoding == "absolute_percpu" and len(ks) == 94266
        # The symbols VMCOREINFO names that kallsyms lists have the same address
        # there (swapper_pg_dir and node_online_map are macros, the kallsyms_*
        # tables are not listed in themselves).
        for name in KALLSYMS_IN_VMCOREINFO:
            assert ks.lookup(name) == vi.symbol(name), name
        assert ks.lookup("swapper_pg_dir") is None and ks.lookup("init_top_pgt") == vi.symbol("swapper_pg_dir")
        btf = Btf.from_memory(mem, ks)
        task = btf.type("struct task_struct")
        assert task.size == 9792
        assert task.find_member("comm") is not None
        page = btf.type("struct page")
        # VMCOREINFO's own OFFSET()s agree with BTF, anonymous unions included.
        for m in ("flags", "_refcount", "mapping", "lru", "_mapcount", "private", "compound_head"):
            found = page.find_member(m)
            assert found is not None and found[0] == vi.offset(f"page.{m}"), m
        assert btf.type("struct list_head").size == vi.size("list_head")


def test_btf_agrees_with_dwarf(real_vmcore: Path) -> None:
    drgn = require_drgn()
    vmlinux = _vmlinux()
    prog = drgn.Program()
    prog.set_core_dump(str(real_vmcore))
    prog.load_debug_info([str(vmlinux)])
    with open_elf(str(real_vmcore)) as src:
        mem = for_source(src).walker(src)
        assert src.vmcoreinfo is not None
        btf = Btf.from_memory(mem, kallsyms.decode(mem, src.vmcoreinfo))
        for struct in ("task_struct", "mm_struct", "page", "key", "user_key_payload", "file", "dentry"):
            bt, dt = btf.type(f"struct {struct}"), prog.type(f"struct {struct}")
            assert bt.size == dt.size, struct
            for m in dt.members:
                if m.name:
                    found = bt.find_member(m.name)
                    assert found is not None and found[0] == m.bit_offset // 8, f"{struct}.{m.name}"


def _pages(path: Path) -> dict[int, bytes]:
    r = KdumpReader(str(path))
    return {pfn: r.read_page(pfn) for pfn in r.dumpable_pfns().tolist()}


def test_config_without_vmlinux(real_vmcore: Path, tmp_path: Path) -> None:
    conf = tmp_path / "erase.conf"
    conf.write_text(CONFIG.format(cast="(struct task_struct)"))
    plain, erased = tmp_path / "plain.kdump", tmp_path / "erased.kdump"
    assert main(["-l", "-d", "31", "--message-level", "0", str(real_vmcore), str(plain)]) == 0
    assert main(["-l", "-d", "31", "--message-level", "0", "--config", str(conf), str(real_vmcore), str(erased)]) == 0
    r = KdumpReader(str(erased))
    h = r.header
    assert (h.offset_eraseinfo, h.size_eraseinfo) == (erased.stat().st_size - len(ERASEINFO), len(ERASEINFO))
    assert erased.read_bytes()[-len(ERASEINFO) :] == ERASEINFO
    with open_elf(str(real_vmcore)) as src:
        mem = for_source(src).walker(src)
        want = {
            mem.vtop(0xFFFFFFFF8B21AA40 + 2976): b"X" * 16,  # init_task.comm (kallsyms, BTF offset)
            mem.vtop(0xFFFFFFFF8B3819A0): b"X" * 16,  # core_pattern
            mem.vtop(0xFFFFFFFF8B25C6A0): b"X" * 14,  # modprobe_path
        }
    a, b = _pages(plain), _pages(erased)
    assert a.keys() == b.keys()
    differ = sorted(p for p in a if a[p] != b[p])
    assert differ == sorted({pa // 4096 for pa in want})
    for pa, text in want.items():
        page = bytearray(a[pa // 4096])
        page[pa % 4096 : pa % 4096 + len(text)] = text
        assert b[pa // 4096] == bytes(page)
    # Re-filtering carries the erase info over (makedumpfile's write_kdump_eraseinfo
    # copies it first); a second --config appends its own lines.
    again = tmp_path / "again.kdump"
    assert main(["-l", "-d", "31", "--message-level", "0", "--config", str(conf), str(erased), str(again)]) == 0
    h2 = KdumpReader(str(again)).header
    assert h2.size_eraseinfo == 2 * len(ERASEINFO)
    assert again.read_bytes()[-2 * len(ERASEINFO) :] == ERASEINFO * 2
    assert _pages(again) == b


def test_config_matches_makedumpfile(real_vmcore: Path, tmp_path: Path) -> None:
    vmlinux, mdf = _vmlinux(), _mdf179()
    require_drgn()
    conf = tmp_path / "erase.conf"
    conf.write_text(CONFIG.format(cast=""))
    ref = tmp_path / "mdf.kdump"
    args = ["-l", "-d", "31", "-x", str(vmlinux), "--config", str(conf)]
    subprocess.run([str(mdf), *args, str(real_vmcore), str(ref)], check=True, capture_output=True)
    ours = tmp_path / "ours.kdump"
    assert main([*args, "--message-level", "0", str(real_vmcore), str(ours)]) == 0
    assert ours.read_bytes() == ref.read_bytes()
    # Without the vmlinux (init_task's type given as a cast) the dump is the same,
    # and libkdumpfile reads the same pages from both.
    cast = tmp_path / "cast.conf"
    cast.write_text(CONFIG.format(cast="(struct task_struct)"))
    btf = tmp_path / "btf.kdump"
    assert main(["-l", "-d", "31", "--config", str(cast), "--message-level", "0", str(real_vmcore), str(btf)]) == 0
    kdumpfile = require_kdumpfile()
    k1, k2 = kdumpfile.kdumpfile(str(ref)), kdumpfile.kdumpfile(str(btf))
    pfns = KdumpReader(str(ref)).dumpable_pfns().tolist()
    assert len(pfns) == 33748
    for pfn in pfns:
        got = k2.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096)
        assert got == k1.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096), f"pfn {pfn:#x}"
    assert btf.read_bytes() == ref.read_bytes()
