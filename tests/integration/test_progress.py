"""Progress wherever a person watches: makedumpfile's lines where tqdm cannot draw (issue 16)."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VECTORS, require_tool
from helpers import PROGRESS_LINE
from vmcorepack import cli, pipeline


def progress_lines(text: str) -> list[tuple[str, float]]:
    out = []
    for raw in re.split(r"\r?\n|\r", text):
        m = PROGRESS_LINE.match(raw)
        if m:
            assert raw.index(":") == 50, raw
            out.append((m["phase"], float(m["pct"])))
    return out


def under_script(command: list[str], columns: int) -> str:
    """Run ``command`` on a fresh pty (util-linux script) whose terminal says ``columns`` wide."""
    script = require_tool("script")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    inner = f"stty cols {columns}; exec {shlex.join(command)}"
    r = subprocess.run(
        [script, "-qec", inner, "/dev/null"], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.slow
def test_lines_on_a_terminal_of_zero_columns(real_vmcore: Path, tmp_path: Path) -> None:
    # A serial console or `script` reports 0 columns, where tqdm draws nothing at all.
    out = tmp_path / "a.kdump"
    text = under_script([sys.executable, "-m", "vmcorepack", "-c", "-d", "1", str(real_vmcore), str(out)], 0)
    lines = progress_lines(text)
    assert len(lines) >= 3, text
    phases = [p for p, _ in lines]
    # Each pass ends with its 100 % line, in makedumpfile's order.
    assert [p for p, pct in lines if pct == 100.0] == [
        pipeline.PHASE_HOLES,
        pipeline.PHASE_EXCLUDE,
        pipeline.PHASE_COPY,
    ], text
    assert phases.count(pipeline.PHASE_COPY) >= 2, text  # 8-10 s of copying: lines in between
    copy = [pct for p, pct in lines if p == pipeline.PHASE_COPY]
    assert copy == sorted(copy)
    assert "it/s" not in text and "page/s" not in text  # no tqdm


def test_bar_on_a_terminal_of_known_width(tmp_path: Path) -> None:
    out = tmp_path / "a.kdump"
    text = under_script([sys.executable, "-m", "vmcorepack", "-d", "1", str(VECTORS / "tiny.vmcore"), str(out)], 100)
    assert progress_lines(text) == []
    assert re.search(r"Copying data: 100%\|", text), text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_rate_limited_and_end_each_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(cli.time, "monotonic", clock)
    stream = io.StringIO()
    prog = cli._Progress(stream, True)
    prog(262_106, 262_106, pipeline.PHASE_HOLES)
    prog(262_106, 262_106, pipeline.PHASE_HOLES)  # a phase ends once
    prog(0, 1000)
    prog(339, 1000)  # within the second: dropped
    clock.now += 1.0
    prog(339, 1000)
    clock.now += 0.5
    prog(999, 1000)  # dropped
    prog(1000, 1000)  # the end always shows
    assert stream.getvalue().splitlines() == [
        f"{'Checking for memory holes':<50}: [100.0 %]",
        f"{'Copying data':<50}: [ 33.9 %]",
        f"{'Copying data':<50}: [100.0 %]",
    ]


def test_split_parts_each_end_their_copy() -> None:
    # A pass starts at 0; an empty one (a --split part without pages) has only that call.
    stream = io.StringIO()
    prog = cli._Progress(stream, True)
    for total in (5, 0, 0, 5):
        prog(0, total)
        if total:
            prog(total, total)
    assert stream.getvalue().count(f"{pipeline.PHASE_COPY:<50}: [100.0 %]") == 4
