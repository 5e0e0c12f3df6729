"""``vmcorepack -F ... | head -c 5000``: one line, exit 1, no traceback (issue 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import message_lines


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "workers"])
def test_flat_to_closed_pipe(tmp_path: Path, workers: int) -> None:
    raw = tmp_path / "mem.raw"
    raw.write_bytes(os.urandom(4 << 20))  # 4 MiB of incompressible pages: far more than a pipe holds
    cmd = [sys.executable, "-m", "vmcorepack", "-F", "--raw", "--page-size", "4096", "--workers", str(workers)]
    p = subprocess.Popen([*cmd, "-d", "0", str(raw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    head = p.stdout.read(5000)
    p.stdout.close()  # the reader goes away, like head -c 5000
    err = p.stderr.read().decode()
    rc = p.wait(60)
    assert head.startswith(b"makedumpfile")
    assert rc == 1, err
    lines = message_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("vmcorepack: ") and "broken pipe" in lines[0]
    assert "Traceback" not in err and "Exception ignored" not in err


def test_shell_pipeline_into_head(tmp_path: Path) -> None:
    raw = tmp_path / "mem.raw"
    raw.write_bytes(os.urandom(2 << 20))
    script = (
        f"{sys.executable} -m vmcorepack -F --raw --page-size 4096 -d 0 {raw} 2>{tmp_path}/err"
        " | head -c 5000 >/dev/null;"
        " echo ${PIPESTATUS[0]}"
    )
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    err = (tmp_path / "err").read_text()
    assert r.stdout.strip() == "1", err
    assert len(message_lines(err)) == 1 and "broken pipe" in err, err
