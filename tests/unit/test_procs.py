"""Forked workers (procs.Worker) and the collector's frozen generation."""

from __future__ import annotations

import gc

import pytest

from vmcorepack import pipeline, procs
from vmcorepack.errors import VmcorepackError
from vmcorepack.pack import sequencer


def _run_worker() -> tuple[bool, object]:
    w = procs.Worker(lambda send: send(("done", gc.get_freeze_count() > 0)))
    try:
        procs.wait_any([w], 5.0)
        assert w.join(5.0)
        return w.read_report()
    finally:
        w.close()


def test_worker_keeps_a_freeze_it_did_not_make() -> None:
    """The console entry freezes its imports; forking a worker must not undo that."""
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        assert before > 0
        _, report = _run_worker()
        assert report == ("done", True)
        assert gc.get_freeze_count() >= before
    finally:
        gc.unfreeze()


def test_worker_undoes_its_own_freeze() -> None:
    """A library caller without a freeze gets none left behind; the child still forks frozen."""
    gc.unfreeze()
    _, report = _run_worker()
    assert report == ("done", True)
    assert gc.get_freeze_count() == 0


def test_sequencer_takes_no_offset_seen_before_its_turn_word() -> None:
    """A weakly ordered CPU may show the turn before the offset: the reader must not take the stale offset."""
    seq = pipeline.Sequencer(first_offset=4096, waiters=1)
    try:
        assert seq.take(0, 100) == 4096
        v = seq.slots.values
        # Chunk 1 passes the turn; another core sees the new turn but the old offset and check.
        v[seq.NEXT_OFFSET], v[seq.CHECK] = 4096, sequencer._check_word(0, 4096)
        with pytest.raises(VmcorepackError, match="waited"):
            seq.hold(1, timeout=0.2)
        # The stores arrive: the same read now succeeds with the real offset.
        v[seq.NEXT_OFFSET], v[seq.CHECK] = 4196, sequencer._check_word(1, 4196)
        assert seq.hold(1, timeout=0.2) == 4196
    finally:
        seq.close()
