"""The e2e harness's own logic that needs no QEMU (tools/e2e/kdump_qemu.py): runs in every ``make test``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


def _harness() -> ModuleType:
    path = REPO / "tools" / "e2e" / "kdump_qemu.py"
    spec = importlib.util.spec_from_file_location("kdump_qemu", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_why_no_capture_names_the_last_init_line(tmp_path: Path) -> None:
    (tmp_path / "serial.log").write_text(
        "[    1.00] Linux version 6.1.0\n"
        "[    6.10] e2e-init: uptime 5.9s, loading modules\n"
        "[    6.50] [    5.2] random kernel line e2e-init: FAILED: copy guest.sh\n"
        "[    6.60] reboot: Power down\n"
    )
    why = _harness().why_no_capture(tmp_path)
    assert "'e2e-init: FAILED: copy guest.sh'" in why
    assert "then" not in why


def test_why_no_capture_adds_guest_lines_after_it(tmp_path: Path) -> None:
    (tmp_path / "serial.log").write_text(
        "[   10.00] e2e-init: first stage, uptime 9s, running guest.sh\n"
        "[   70.00] e2e-first: crashing through sysrq now\n"
        "[   71.00] Kernel panic - not syncing: sysrq triggered crash\n"
    )
    why = _harness().why_no_capture(tmp_path)
    assert why.endswith("then 'e2e-first: crashing through sysrq now'")
    assert "'e2e-init: first stage, uptime 9s, running guest.sh'" in why


def test_why_no_capture_without_a_log(tmp_path: Path) -> None:
    assert "never reached the initramfs /init" in _harness().why_no_capture(tmp_path)


def test_kernels_from_7_1_need_the_git_head_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = _harness()
    monkeypatch.delenv("VMCOREPACK_MAKEDUMPFILE_HEAD", raising=False)
    # 6.x keeps Debian's makedumpfile; 7.1 and later refuse to run without the git head.
    assert h.reference_makedumpfile("6.12.95+deb13-amd64", None) is None
    with pytest.raises(h.E2EError, match="amd64 needs makedumpfile's git head"):
        h.reference_makedumpfile("7.1.0-1-amd64", None)
    head = tmp_path / "makedumpfile"
    head.write_text("#!/bin/sh\n")
    head.chmod(0o755)
    monkeypatch.setenv("VMCOREPACK_MAKEDUMPFILE_HEAD", str(head))
    assert h.reference_makedumpfile("7.3.4+deb13-amd64", None) == head
    assert h.reference_makedumpfile("6.1.0-56-amd64", None) is None
    # --makedumpfile PATH applies to any kernel, and must be executable.
    assert h.reference_makedumpfile("6.1.0-56-amd64", head) == head
    with pytest.raises(h.E2EError, match="no executable makedumpfile"):
        h.reference_makedumpfile("7.3.4+deb13-amd64", tmp_path / "missing")
