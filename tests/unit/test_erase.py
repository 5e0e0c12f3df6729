"""--config erase filters: parsing, resolution and makedumpfile's page-by-page consumption (erase.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ksyms import FakeMemory, task_btf
from vmcorepack import erase
from vmcorepack.errors import FilterError
from vmcorepack.kernel.btf import Btf
from vmcorepack.kernel.program import Program

PS = 4096
INIT = 0xFFFFFFFF81200000
OTHER = 0xFFFFFFFF81300FD0  # its comm (offset 40) crosses into the next page
PATH = 0xFFFFFFFF81400000


class Syms:
    def __init__(self, table: dict[str, int]) -> None:
        self.table = table

    def lookup(self, name: str) -> int | None:
        return self.table.get(name)


def _task(addr: int, nxt: int, prev: int, comm: bytes) -> bytes:
    t = bytearray(64)
    t[16:24] = (nxt + 16).to_bytes(8, "little")
    t[24:32] = (prev + 16).to_bytes(8, "little")
    t[40 : 40 + len(comm)] = comm
    return bytes(t)


@pytest.fixture
def prog() -> Program:
    mem = FakeMemory()
    mem.put(INIT, _task(INIT, OTHER, OTHER, b"swapper/0"))
    mem.put(OTHER, _task(OTHER, INIT, INIT, b"secret-daemon"))
    mem.put(PATH, b"/sbin/modprobe\0")
    blob, _ = task_btf()
    return Program(mem, Syms({"init_task": INIT, "modprobe_path": PATH}), Btf(blob), "test")  # type: ignore[arg-type]


def _plan(prog: Program, text: str) -> erase.ErasePlan:
    return erase.ErasePlan(prog, erase.resolve(prog, erase.parse_config(text)))


def test_parse() -> None:
    entries = erase.parse_config(
        "# comment\n[vmlinux]\nerase ( struct task_struct )init_task.comm\nerase modprobe_path size 2K\n"
        "for t in init_task.tasks within task_struct:tasks\n\terase t.comm nullify\nendfor\n"
    )
    assert entries[0] == erase.EraseCommand("init_task.comm", "struct task_struct", None, False, 3)
    assert entries[1] == erase.EraseCommand("modprobe_path", None, 2048, False, 4)
    loop = entries[2]
    assert isinstance(loop, erase.Loop)
    assert (loop.var, loop.over, loop.within, loop.via) == ("t", "init_task.tasks", ("task_struct", "tasks"), None)
    assert loop.commands == (erase.EraseCommand("t.comm", None, None, True, 6),)


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("erase\n", "line 1: expected kernel symbol"),
        ("erase x size\n", "line 1: expected size symbol"),
        ("\nerase x size -3\n", "line 2: size value must be positive"),
        ("for t in a\nerase t.x\n", "line 1: no matching 'endfor'"),
        ("for t in a\nerase u.x\nendfor\n", "line 2: unused iteration variable"),
        ("delete x\n", "line 1: invalid token 'delete'"),
        ("[ext4]\nerase x\n", "line 2: module sections"),
    ],
)
def test_parse_errors(text: str, msg: str) -> None:
    with pytest.raises(FilterError, match=msg):
        erase.parse_config(text)


def test_resolve_members_sizes_and_loops(prog: Program) -> None:
    targets = erase.resolve(
        prog,
        erase.parse_config(
            "erase (struct task_struct)init_task.comm\n"
            "erase modprobe_path size 14\n"
            "for t in (struct task_struct)init_task.tasks within task_struct:tasks\n"
            "erase t.comm\nerase t.pid size 3\nendfor\n"
        ),
    )
    got = [(t.vaddr, t.size, t.nullify, t.expr) for t in targets]
    assert got == [
        (INIT + 40, 16, False, "init_task.comm"),
        (PATH, 14, False, "modprobe_path"),
        (OTHER + 40, 16, False, "t.comm"),
        (OTHER + 32, 3, False, "t.pid"),
    ]
    with pytest.raises(FilterError, match=r"line 1: .*give it as a cast"):
        erase.resolve(prog, erase.parse_config("erase init_task.comm\n"))
    with pytest.raises(FilterError, match="line 2: struct task_struct has no member 'nope'"):
        erase.resolve(prog, erase.parse_config("\nerase (struct task_struct)init_task.nope\n"))


def test_pieces_follow_makedumpfile(prog: Program) -> None:
    plan = _plan(
        prog,
        "erase (struct task_struct)init_task.comm\n"
        "for t in (struct task_struct)init_task.tasks within task_struct:tasks\nerase t.comm\nendfor\n"
        "erase modprobe_path size 14\nerase modprobe_path size 20\n",
    )
    # Equal start addresses merge into the larger size and one erase info node.
    assert [(p, s) for p, s, *_ in plan.ranges] == [(0x1200028, 16), (0x1300FF8, 16), (0x1400000, 20)]
    bm = np.zeros(0x1500, bool)
    bm[[0x1200, 0x1300, 0x1400]] = True  # 0x1301 (the rest of t.comm) is not dumped
    pcs = plan.pieces(np.packbits(bm, bitorder="little"), 0x1500, PS)
    assert pcs.starts.tolist() == [0x1200028, 0x1300FF8, 0x1400000]
    assert pcs.sizes.tolist() == [16, 8, 20]
    assert plan.eraseinfo() == b"erase init_task.comm size 16\nerase t.comm size 8\nerase modprobe_path size 20\n"
    bm[0x1301] = True
    pcs = plan.pieces(np.packbits(bm, bitorder="little"), 0x1500, PS)
    assert pcs.sizes.tolist() == [16, 8, 8, 20]
    assert b"erase t.comm size 16\n" in plan.eraseinfo()
    bm[:] = False
    pcs = plan.pieces(np.packbits(bm, bitorder="little"), 0x1500, PS)
    assert len(pcs.starts) == 0 and plan.eraseinfo() == b""


def test_apply(prog: Program) -> None:
    plan = _plan(prog, "erase (struct task_struct)init_task.comm\nerase modprobe_path size 14\n")
    bm = np.zeros(0x1500, bool)
    bm[[0x1200, 0x1400]] = True
    pcs = plan.pieces(np.packbits(bm, bitorder="little"), 0x1500, PS)
    pfns = np.array([0x11FF, 0x1200, 0x1400], np.int64)
    raw = bytearray(b"\xaa" * (3 * PS))
    assert pcs.touched(pfns).tolist() == [False, True, True]
    pcs.apply(raw, pfns)
    want = bytearray(b"\xaa" * (3 * PS))
    want[PS + 40 : PS + 56] = b"X" * 16
    want[2 * PS : 2 * PS + 14] = b"X" * 14
    assert raw == want
    # A page known to be zero (a file hole) becomes real data when erased.
    known = np.array([False, False, True])
    buf, known2 = pcs.apply_sparse(bytes(b"\xaa" * (2 * PS)), known, pfns)
    assert not known2.any() and buf[2 * PS : 2 * PS + 15] == b"X" * 14 + b"\0"


def test_nullify_pointer(prog: Program) -> None:
    plan = _plan(
        prog,
        "for t in (struct task_struct)init_task.tasks within task_struct:tasks\nerase t.tasks.next nullify\nendfor\n",
    )
    assert [(p, s, f) for p, s, f, *_ in plan.ranges] == [(0x1300FE0, 8, 0)]
    bm = np.ones(0x1500, bool)
    plan.pieces(np.packbits(bm, bitorder="little"), 0x1500, PS)
    assert plan.eraseinfo() == b"erase t.tasks.next nullify\n"
