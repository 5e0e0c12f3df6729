"""Inputs from machines vmcorepack cannot walk, or that contradict themselves, are refused in every mode.

Issue 17, point 1.  The vectors are x86-64 vmcores; patching ``e_machine``
(or the kdump header's ``utsname.machine``, or VMCOREINFO) makes them claim
another machine.  Each mode must then exit 1 with one line naming the
machine and leave no output.  AArch64 is walked, so an AArch64 header over
the vectors' x86-64 VMCOREINFO is refused as a contradiction.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VECTORS

FILT = (VECTORS / "filt.vmcore").read_bytes()
#: e_machine sits after e_ident (16 bytes) and e_type (2) in every ELF header.
E_MACHINE = 18
#: The message for each machine, with the vectors' x86-64 VMCOREINFO under its header.
FOREIGN = {
    183: "the header says AArch64 but its VMCOREINFO says x86-64",
    21: "PPC64 vmcores are not supported yet",
    22: "S390 vmcores are not supported yet",
    243: "RISC-V vmcores are not supported yet",
}
NAMES = {183: "AArch64", 21: "PPC64", 22: "S390", 243: "RISC-V"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "vmcorepack", *args], capture_output=True, cwd=cwd)


def _foreign(tmp_path: Path, machine: int) -> Path:
    src = tmp_path / "foreign.vmcore"
    src.write_bytes(FILT[:E_MACHINE] + struct.pack("<H", machine) + FILT[E_MACHINE + 2 :])
    return src


def _assert_refused(res: subprocess.CompletedProcess[bytes], what: str, tmp_path: Path, inputs: set[str]) -> None:
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert err.count("\n") == 1, err
    assert err.startswith("vmcorepack: ") and what in err, err
    assert res.stdout == b"" or b"vmcorepack Completed" not in res.stdout
    assert {p.name for p in tmp_path.iterdir()} == inputs, "an output file was left behind"


MODES = {
    "pack": ["-l", "-d", "31", "{src}", "out.kdump"],
    "elf": ["-E", "-d", "31", "{src}", "out.elf"],
    "dmesg": ["--dump-dmesg", "{src}", "dmesg.txt"],
    "split": ["-l", "-d", "31", "--split", "{src}", "part1", "part2"],
    "level0": ["-d", "0", "{src}", "out.kdump"],
    "verify": ["--verify", "good.kdump", "{src}"],
    "plot-source": ["--info", "good.kdump", "--plot", "map.png", "--source", "{src}"],
}


@pytest.mark.parametrize("machine", sorted(FOREIGN), ids=[NAMES[m] for m in sorted(FOREIGN)])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_foreign_elf_refused(tmp_path: Path, machine: int, mode: str) -> None:
    src = _foreign(tmp_path, machine)
    inputs = {src.name}
    if mode in ("verify", "plot-source"):
        (tmp_path / "good.kdump").write_bytes((VECTORS / "filt_d31.kdump").read_bytes())
        inputs.add("good.kdump")
    args = [a.format(src=src) for a in MODES[mode]]
    res = _run(args, tmp_path)
    _assert_refused(res, f"{src}: {FOREIGN[machine]} (at offset 0x12)", tmp_path, inputs)


def test_foreign_flattened_stream_writes_nothing(tmp_path: Path) -> None:
    src = _foreign(tmp_path, 21)
    with open(tmp_path / "stream", "wb") as out:
        res = subprocess.run(
            [sys.executable, "-m", "vmcorepack", "-F", "-l", "-d", "31", str(src)], stdout=out, stderr=subprocess.PIPE
        )
    assert res.returncode == 1
    assert "PPC64 vmcores are not supported yet" in res.stderr.decode()
    assert (tmp_path / "stream").stat().st_size == 0


@pytest.mark.parametrize(
    ("uname", "message"),
    [
        (b"aarch64", "the header says AArch64 but its VMCOREINFO says x86-64"),
        (b"ppc64le", "PPC64 vmcores are not supported yet"),
        (b"sparc64", "sparc64 dumps are not supported yet"),
    ],
)
def test_foreign_kdump_refiltering_refused(tmp_path: Path, uname: bytes, message: str) -> None:
    """A kdump file records its machine in utsname.machine: a foreign one is refused when re-filtered."""
    data = bytearray((VECTORS / "filt_d0.kdump").read_bytes())
    machine = 12 + 4 * 65  # signature, header_version, then utsname's sysname..version (65 bytes each)
    assert data[machine : machine + 7] == b"x86_64\0"
    data[machine : machine + len(uname) + 1] = uname + b"\0"
    src = tmp_path / "foreign.kdump"
    src.write_bytes(bytes(data))
    res = _run(["-l", "-d", "31", str(src), "out.kdump"], tmp_path)
    _assert_refused(res, f"{src}: {message}", tmp_path, {src.name})
    assert f"(at offset {machine:#x})" in res.stderr.decode()


def _arm64_vmcoreinfo(data: bytes) -> bytes:
    """Swap the vector's x86-64 marker for an AArch64 one of the same length (the note keeps its size)."""
    x86 = b"SYMBOL(init_top_pgt)=ffffffff8000c000"
    arm = b"NUMBER(kimage_voffset)=0x800000000000"
    assert len(x86) == len(arm) and data.count(x86) == 1
    return data.replace(x86, arm)


def test_vmcoreinfo_contradicting_header_refused(tmp_path: Path) -> None:
    src = tmp_path / "mixed.vmcore"
    src.write_bytes(_arm64_vmcoreinfo(FILT))
    res = _run(["-l", "-d", "31", str(src), "out.kdump"], tmp_path)
    _assert_refused(
        res, "the header says x86-64 but its VMCOREINFO says AArch64 (at offset 0x12)", tmp_path, {src.name}
    )


def test_raw_image_with_foreign_vmcoreinfo_refused(tmp_path: Path) -> None:
    """A raw image records no machine: its VMCOREINFO (-i) decides."""
    info = tmp_path / "vmcoreinfo.txt"
    info.write_bytes(b"OSRELEASE=6.1.0-ppc64le\nPAGESIZE=65536\nSYMBOL(mmu_psize_defs)=c000000002a1b2c0\n")
    img = tmp_path / "mem.img"
    img.write_bytes(bytes(1 << 16))
    res = _run(["--raw", "-i", str(info), "-d", "1", str(img), "out.kdump"], tmp_path)
    _assert_refused(res, "its VMCOREINFO says PPC64, which is not supported yet", tmp_path, {img.name, info.name})


def test_x86_vectors_still_pack(tmp_path: Path) -> None:
    """The check passes what it should: the unpatched vector packs byte-identically to makedumpfile 1.7.9."""
    res = _run(["-d", "31", str(VECTORS / "filt.vmcore"), "out.kdump"], tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert (tmp_path / "out.kdump").read_bytes() == (VECTORS / "filt_head_d31.kdump").read_bytes()
