"""kallsyms and BTF decoded from (synthetic) kernel memory: kernel/kallsyms.py, kernel/btf.py."""

from __future__ import annotations

import pytest

from ksyms import TABLES, encode_kallsyms, task_btf
from vmcorepack.errors import KernelMemoryError, VmcoreinfoError
from vmcorepack.kernel import kallsyms
from vmcorepack.kernel.btf import Btf
from vmcorepack.vmcoreinfo import VmcoreInfo

BASE = 0xFFFFFFFF81000000
SYMS = [
    ("T", "_stext", BASE),
    ("T", "start_kernel", BASE + 0x1234),
    ("D", "init_task", BASE + 0x200000),
    ("t", "init_task", BASE + 0x40),  # a static function of the same name: data wins
    ("d", "core_pattern", BASE + 0x300010),
    ("D", "modprobe_path", BASE + 0x300100),
    ("R", "__start_BTF", BASE + 0x400000),
    ("b", "x" * 130, BASE + 0x500000),  # needs a two-byte length (Linux 6.1)
]


def _vmcoreinfo(addr: dict[str, int], stext: int = BASE) -> VmcoreInfo:
    lines = [f"SYMBOL({k})={v:x}" for k, v in addr.items()] + [f"SYMBOL(_stext)={stext:x}"]
    return VmcoreInfo.parse(("\n".join(lines) + "\n").encode())


@pytest.mark.parametrize("encoding", ["relative_base", "absolute_percpu", "place_relative"])
def test_decode_each_address_encoding(encoding: str) -> None:
    addr, mem = encode_kallsyms(SYMS, encoding, BASE)
    ks = kallsyms.decode(mem, _vmcoreinfo(addr))
    assert ks.encoding == encoding
    assert len(ks) == len(SYMS)
    assert ks.lookup("init_task") == BASE + 0x200000
    assert ks.symbol_type("init_task") == "D"
    assert ks.lookup("core_pattern") == BASE + 0x300010
    assert ks.lookup("start_kernel") == BASE + 0x1234
    assert ks.lookup("x" * 130) == BASE + 0x500000
    assert ks.lookup("init") is None and ks.lookup("task") is None
    assert [(t, n, a) for n, t, a in ks.names()] == SYMS


def test_stext_decides_the_encoding() -> None:
    addr, mem = encode_kallsyms(SYMS, "relative_base", BASE)
    with pytest.raises(VmcoreinfoError, match="no kallsyms address encoding"):
        kallsyms.decode(mem, _vmcoreinfo(addr, stext=BASE + 4096))


def test_missing_vmcoreinfo_symbol_and_garbage_count() -> None:
    addr, mem = encode_kallsyms(SYMS, "relative_base", BASE)
    partial = dict(addr)
    del partial["kallsyms_token_table"]
    assert not kallsyms.has_kallsyms(_vmcoreinfo(partial))
    with pytest.raises(VmcoreinfoError, match="kallsyms_token_table"):
        kallsyms.decode(mem, _vmcoreinfo(partial))
    mem.put(addr["kallsyms_num_syms"], (0).to_bytes(4, "little"))
    mem.regions.reverse()  # the zero count is found first
    with pytest.raises(KernelMemoryError, match="kallsyms_num_syms is 0"):
        kallsyms.decode(mem, _vmcoreinfo(addr))


def test_btf_layouts() -> None:
    blob, off = task_btf()
    btf = Btf(blob)
    task = btf.type("struct task_struct")
    assert task.size == off["size"]
    for name in ("state", "tasks", "pid", "comm", "flags", "lval"):
        found = task.find_member(name)
        assert found is not None and found[0] == off[name], name
    comm = task.find_member("comm")
    assert comm is not None
    assert comm[1].kind == "array" and comm[1].length == 16 and comm[1].size == 16
    assert comm[1].target.name == "char"  # const dropped
    pid = task.find_member("pid")
    assert pid is not None and pid[1].kind == "typedef" and pid[1].strip().name == "int" and pid[1].size == 4
    tasks = task.find_member("tasks")
    assert tasks is not None
    nxt = tasks[1].find_member("next")
    assert nxt is not None and nxt[1].kind == "ptr" and nxt[1].target.name == "list_head"
    assert btf.type("pid_t").strip().signed
    assert btf.variable_type("runqueues") is not None and btf.variable_type("init_task") is None
    with pytest.raises(LookupError):
        btf.type("struct mm_struct")


def test_btf_from_memory_and_bad_blobs() -> None:
    blob, _ = task_btf()
    start = TABLES + 0x100000
    syms = [("T", "_stext", BASE), ("R", "__start_BTF", start), ("R", "__stop_BTF", start + len(blob))]
    addr, mem = encode_kallsyms(syms, "relative_base", BASE)
    mem.put(TABLES + 0x100000, blob)
    ks = kallsyms.decode(mem, _vmcoreinfo(addr))
    assert Btf.from_memory(mem, ks).type("struct list_head").size == 16
    with pytest.raises(KernelMemoryError, match="magic"):
        Btf(b"\0" * 64)
    with pytest.raises(KernelMemoryError, match="overrun"):
        # A type section that ends inside a record.
        Btf(blob[:12] + (13).to_bytes(4, "little") + blob[16:])
