"""Hostile input (issue 6): mutated vectors may only ever raise our own errors.

Each test mutates the small vectors of tests/data/vectors with structure-aware
edits (fuzzlib.py) and runs one parser, or the whole command in-process, under
the oracle: success or a ``VmcorepackError``; no other exception, no allocation
over 256 MiB, and a failed ``vmcorepack`` run leaves no file that looks
complete.  The budget is fixed for CI (about two minutes in all on 2 cores);
``VMCOREPACK_FUZZ_EXAMPLES=N`` raises every test's to N examples.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fuzzlib
import pytest
from fuzzlib import HypothesisChooser, memory_cap, mutate, mutate_vmcoreinfo, run_target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _settings(default: int) -> settings:
    return settings(
        max_examples=fuzzlib.examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
        database=None,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(autouse=True)
def _cap_memory() -> object:
    with memory_cap():
        yield


def _fuzz_bytes(kind: str, target: Callable[[bytes, Path], None], data: st.DataObject, work: Path) -> None:
    ch = HypothesisChooser(data)
    name = str(ch.pick(fuzzlib.SEEDS[kind]))
    run_target(target, mutate(ch, kind, name), work)


@_settings(1000)
@given(data=st.data())
def test_fuzz_elf(data: st.DataObject, work: Path) -> None:
    _fuzz_bytes("elf", fuzzlib.target_elf, data, work)


@_settings(1200)
@given(data=st.data())
def test_fuzz_notes(data: st.DataObject, work: Path) -> None:
    _fuzz_bytes("notes", fuzzlib.target_notes, data, work)


@_settings(1000)
@given(data=st.data())
def test_fuzz_vmcoreinfo_text(data: st.DataObject, work: Path) -> None:
    ch = HypothesisChooser(data)
    run_target(fuzzlib.target_vmcoreinfo, mutate_vmcoreinfo(ch, base=str(ch.pick(("filt", "sparse")))), work)


@_settings(1000)
@given(raw=st.binary(max_size=2048))
def test_fuzz_vmcoreinfo_binary(raw: bytes, work: Path) -> None:
    run_target(fuzzlib.target_vmcoreinfo, raw, work)


@_settings(1200)
@given(data=st.data())
def test_fuzz_kdump(data: st.DataObject, work: Path) -> None:
    _fuzz_bytes("kdump", fuzzlib.target_kdump, data, work)


@_settings(800)
@given(data=st.data())
def test_fuzz_split(data: st.DataObject, work: Path) -> None:
    _fuzz_bytes("split", fuzzlib.target_kdump, data, work)


@_settings(800)
@given(data=st.data())
def test_fuzz_flat(data: st.DataObject, work: Path) -> None:
    _fuzz_bytes("flat", fuzzlib.target_flat, data, work)


@_settings(1000)
@given(data=st.data())
def test_fuzz_cli_elf(data: st.DataObject, work: Path) -> None:
    ch = HypothesisChooser(data)
    name = str(ch.pick(fuzzlib.SEEDS["elf"]))
    options = ch.pick(fuzzlib.CLI_OPTIONS)
    run_target(lambda b, w: fuzzlib.target_cli(b, w, options), mutate(ch, "elf", name), work)  # type: ignore[arg-type]


@_settings(800)
@given(data=st.data())
def test_fuzz_cli_vmcoreinfo(data: st.DataObject, work: Path) -> None:
    ch = HypothesisChooser(data)
    options = ch.pick(fuzzlib.CLI_OPTIONS)
    run_target(lambda b, w: fuzzlib.target_cli_vmcoreinfo(b, w, options), mutate_vmcoreinfo(ch), work)  # type: ignore[arg-type]


@_settings(150)
@given(data=st.data())
def test_fuzz_cli_sparse(data: st.DataObject, work: Path) -> None:
    ch = HypothesisChooser(data)
    options = ch.pick(fuzzlib.CLI_OPTIONS)
    run_target(lambda b, w: fuzzlib.target_cli_sparse(b, w, options), mutate_vmcoreinfo(ch, base="sparse"), work)  # type: ignore[arg-type]
