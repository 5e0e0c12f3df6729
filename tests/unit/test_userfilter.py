"""Python filter plumbing: page decisions and erase requests (userfilter.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ksyms import FakeMemory, task_btf
from vmcorepack import userfilter
from vmcorepack.errors import FilterError
from vmcorepack.kernel.btf import Btf
from vmcorepack.kernel.program import Program


class Syms:
    def lookup(self, name: str) -> int | None:
        return {"init_task": 0xFFFFFFFF81200000}.get(name)


def _prog() -> Program:
    mem = FakeMemory()
    mem.put(0xFFFFFFFF81200000, bytes(64))
    return Program(mem, Syms(), Btf(task_btf()[0]), "test")  # type: ignore[arg-type]


def test_page_decisions_override_the_level() -> None:
    d = userfilter.PageDecisions(np.array([3, 9, 70], np.int64), np.array([4, 9, 12], np.int64))
    b2 = np.zeros(16, bool)
    b2[[4, 5]] = True
    d.apply(0, 16, b2)
    assert np.flatnonzero(b2).tolist() == [3, 5]  # 9 is both: dropped
    b2 = np.ones(8, bool)
    d.apply(8, 16, b2)
    assert np.flatnonzero(~b2).tolist() == [1, 4]


def test_run_collects_requests(tmp_path: Path) -> None:
    f = tmp_path / "f.py"
    f.write_text(
        "def filter(ctx):\n"
        "    t = ctx.prog.variable('init_task', 'struct task_struct')\n"
        "    ctx.erase(t.comm)\n"
        "    ctx.erase(t.pid.address, 2, nullify=True, name='pid')\n"
        "    ctx.drop([5, 1])\n"
        "    ctx.keep(range(7, 9))\n"
    )
    targets, pages = userfilter.run([str(f)], _prog())
    assert [(t.vaddr - 0xFFFFFFFF81200000, t.size, t.nullify, t.expr) for t in targets] == [
        (40, 16, False, "f"),
        (32, 2, True, "pid"),
    ]
    assert pages is not None and pages.drop.tolist() == [1, 5] and pages.keep.tolist() == [7, 8]
    f.write_text("def filter(ctx):\n    ctx.erase(0x1000)\n")
    with pytest.raises(FilterError, match=r"f: erase\(0x1000\) needs a size"):
        userfilter.run([str(f)], _prog())
    f.write_text("def filter(ctx):\n  x = (\n")
    with pytest.raises(FilterError, match=r"f.py: line 2"):
        userfilter.run([str(f)], _prog())
