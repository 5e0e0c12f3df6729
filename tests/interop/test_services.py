"""The kdump services' own command lines, with vmcorepack in place of makedumpfile (issue 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_kdumpfile, require_tool

pytestmark = [pytest.mark.interop, pytest.mark.slow]
VMCOREPACK = [sys.executable, "-m", "vmcorepack"]


def _libkdumpfile_opens(path: Path) -> None:
    kdumpfile = require_kdumpfile()
    k = kdumpfile.kdumpfile(str(path))
    assert k.attr["file.format"] == "diskdump"
    assert len(k.read(kdumpfile.KDUMP_MACHPHYSADDR, 0x100000, 4096)) == 4096


def _sh(cmd: str, cwd: Path) -> None:
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd}\n{r.stderr}"


def test_fedora_core_collector(real_vmcore: Path, tmp_path: Path) -> None:
    # kdump-utils: core_collector makedumpfile -l --message-level 7 -d 31
    _sh(
        f"{' '.join(VMCOREPACK)} -l --message-level 7 -d 31 {real_vmcore} vmcore-incomplete"
        " && mv vmcore-incomplete vmcore",
        tmp_path,
    )
    _libkdumpfile_opens(tmp_path / "vmcore")


def test_fedora_ssh_target_flattened(real_vmcore: Path, tmp_path: Path) -> None:
    # ssh targets add -F and pipe the stream: "... -F | ssh host 'cat > vmcore.flat'".
    _sh(f"{' '.join(VMCOREPACK)} -F -l --message-level 7 -d 31 {real_vmcore} | cat > vmcore.flat", tmp_path)
    _sh(f"{' '.join(VMCOREPACK)} -R vmcore < vmcore.flat", tmp_path)
    _libkdumpfile_opens(tmp_path / "vmcore")


@pytest.mark.parametrize("compress", ["lz4", "gzip", "xz", "bzip2", "none"])
def test_debian_kdump_tools(real_vmcore: Path, tmp_path: Path, compress: str) -> None:
    # kdump-tools: makedumpfile -F -c -d 31 VMCORE | compress > FILE (KDUMP_COMPRESSION)
    if compress != "none":
        require_tool(compress)
        tool = f"{compress} -c" if compress != "lz4" else "lz4 -c -q"
        _sh(f"{' '.join(VMCOREPACK)} -F -c -d 31 {real_vmcore} | {tool} > dump.{compress}", tmp_path)
        src = f"dump.{compress}"
    else:
        _sh(f"{' '.join(VMCOREPACK)} -F -c -d 31 {real_vmcore} > dump.flat", tmp_path)
        src = "dump.flat"
    # Our -R reads the compressed stream directly; makedumpfile -R needs it decompressed.
    _sh(f"{' '.join(VMCOREPACK)} -R dump < {src}", tmp_path)
    _libkdumpfile_opens(tmp_path / "dump")


def test_debian_dump_dmesg(real_vmcore: Path, tmp_path: Path) -> None:
    # kdump-tools: makedumpfile --dump-dmesg VMCORE FILE
    _sh(f"{' '.join(VMCOREPACK)} --dump-dmesg {real_vmcore} dmesg.txt", tmp_path)
    assert (tmp_path / "dmesg.txt").read_text().count("\n") > 100


def test_suse_split(real_vmcore: Path, tmp_path: Path) -> None:
    # SUSE kdump: makedumpfile -d 31 --split VMCORE vmcore1 vmcore2 (KDUMP_CPUS), then a reader gets all parts.
    _sh(f"{' '.join(VMCOREPACK)} -l -d 31 --split {real_vmcore} vmcore1 vmcore2", tmp_path)
    crash = require_tool("crash")
    r = subprocess.run(
        [crash, "-d", "1", "--osrelease", "vmcore1", "vmcore2"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("6.1.0-56-amd64")
    _sh(f"{' '.join(VMCOREPACK)} --reassemble vmcore1 vmcore2 vmcore", tmp_path)
    _libkdumpfile_opens(tmp_path / "vmcore")
