"""Forked workers (procs.Worker) and the collector's frozen generation."""

from __future__ import annotations

import gc

from vmcorepack import procs


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
