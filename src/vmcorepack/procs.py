"""Forked worker processes with the least machinery: shared memory, eventfd wake-ups, one pipe each.

The pipeline needs little from its workers' process layer: counters both
sides can see, a mutex, a way to wake a waiting process, and one report per
worker at its end.  ``multiprocessing`` brings all that and more, at a cost
that shows on short runs: importing it with the tempfile, socket, subprocess
and compression modules it pulls in took 17-24 ms here (seven runs of
``import multiprocessing.synchronize, multiprocessing.queues`` timed after
``import numpy, argparse``), its POSIX semaphores need /dev/shm (which a bare capture initramfs
may lack: tools/e2e/init mounts none), and its queue feeder threads and exit
handlers run between a worker's last report and its exit.  Here:

- :class:`SharedInts`: int64 slots in an anonymous ``MAP_SHARED`` mapping,
  inherited by every process forked after it is made;
- :class:`Semaphore`: an ``eventfd`` in semaphore mode (no file system needed);
- :class:`Wakers`: one ``eventfd`` per process to wake it after shared state
  changed (it then checks the state again);
- :class:`Worker`: a forked child that runs a function and reports one
  ``marshal``-able value through its own pipe; the pipe's end of file tells
  the parent that the child is gone, whatever killed it.

Shared counters are plain loads and stores.  Where their order matters, the
users make it not matter: ``pipeline.Sequencer`` vouches for each offset with
a check word a reader verifies (arm64 and ppc64 may show stores out of
order), and the chunk claims go through a :class:`Semaphore`, whose
``eventfd`` system calls order memory on every architecture.
"""

from __future__ import annotations

import gc
import marshal
import mmap
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np


class SharedInts:
    """int64 slots shared with processes forked later.

    Attributes:
        values: The slots (a numpy view of the shared mapping).
    """

    def __init__(self, count: int) -> None:
        """Map ``count`` zeroed slots.

        Args:
            count: Number of int64 slots.
        """
        self._map = mmap.mmap(-1, max(8, 8 * count))
        self.values = np.frombuffer(self._map, np.int64, count=count)


def _wait_readable(fd: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000))
    return bool(poller.poll(ms))


class Semaphore:
    """A counting semaphore shared with forked children (``eventfd`` with ``EFD_SEMAPHORE``)."""

    def __init__(self, value: int = 0) -> None:
        """Create it.

        Args:
            value: Initial count.
        """
        self.fd = os.eventfd(value, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one unit, waiting up to ``timeout`` seconds (None: forever).

        Args:
            timeout: Seconds to wait.

        Returns:
            Whether a unit was taken.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                os.eventfd_read(self.fd)
                return True
            except BlockingIOError:
                pass  # another process took it first: wait again
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            _wait_readable(self.fd, left)

    def release(self) -> None:
        """Give one unit back."""
        os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        """Close the descriptor (in the process that made it, once its workers are gone)."""
        os.close(self.fd)

    def __enter__(self) -> Semaphore:
        """Acquire (a semaphore of 1 used as a mutex)."""
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        """Release."""
        self.release()


class Wakers:
    """One wake-up counter per process: ``wake_all`` after changing shared state, ``wait`` to sleep until then."""

    def __init__(self, count: int) -> None:
        """Create the counters.

        Args:
            count: Number of processes that may wait.
        """
        self.fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(count)]

    def wait(self, me: int, timeout: float) -> None:
        """Sleep until woken or ``timeout`` seconds pass, then clear the wake-up.

        A wake-up sent between the caller's last look at the shared state and
        this call is not lost: the counter stays readable until cleared.

        Args:
            me: The caller's index.
            timeout: Seconds.
        """
        fd = self.fds[me]
        if _wait_readable(fd, timeout):
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                pass

    def wake_all(self) -> None:
        """Wake every process (each then checks the shared state again)."""
        for fd in self.fds:
            os.eventfd_write(fd, 1)

    def close(self) -> None:
        """Close the descriptors."""
        for fd in self.fds:
            os.close(fd)


class Worker:
    """A forked child running one function, with a pipe for its single report.

    Attributes:
        pid: Process id.
        fd: Read end of the report pipe (end of file: the child is gone).
        exitcode: Exit status once reaped: the code, or minus the signal number.
    """

    def __init__(self, target: Callable[[Callable[[Any], None]], None]) -> None:
        """Fork a child that runs ``target(send)`` and exits.

        ``send(value)`` writes one ``marshal``-able value to the parent.  The
        child ends with ``os._exit``: no exit handlers, no flushing of stdio
        buffers it inherited from the parent.

        Args:
            target: The child's work.
        """
        r, w = os.pipe()
        parent = os.getpid()
        # Forked children must not copy the parent's heap page by page: their
        # first garbage collection would touch every inherited object.  A
        # freeze already in place (the console entry freezes what its imports
        # made) is the caller's: left as it is, and not undone afterwards.
        # Only the parent unfreezes: the child keeps the inherited objects
        # frozen for its whole life.
        ours = gc.get_freeze_count() == 0
        if ours:
            gc.freeze()
        pid = -1
        try:
            pid = os.fork()
        finally:
            if ours and pid != 0:
                gc.unfreeze()
        if pid == 0:  # pragma: no cover - the child; tests see its effects
            code = 1
            try:
                _die_with(parent)
                os.close(r)
                target(lambda value: _send(w, value))
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        os.set_blocking(r, False)
        self.pid = pid
        self.fd = r
        self.exitcode: int | None = None
        self._buf = bytearray()
        self._eof = False

    def read_report(self) -> tuple[bool, Any]:
        """Read what the pipe holds without blocking.

        Returns:
            (the pipe reached end of file, the report or None when none came whole).
        """
        while not self._eof:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self._eof = True
                break
            self._buf += chunk
        report = None
        if len(self._buf) >= 8:
            size = int.from_bytes(self._buf[:8], "little")
            if len(self._buf) >= 8 + size:
                report = marshal.loads(bytes(self._buf[8 : 8 + size]))
        return self._eof, report

    def poll_exit(self) -> int | None:
        """Reap the child if it has exited.

        Returns:
            Its exit status (see :attr:`exitcode`), or None while it runs.
        """
        if self.exitcode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.exitcode
            if pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit.

        Args:
            timeout: Seconds.

        Returns:
            Whether it has exited (and was reaped).
        """
        deadline = time.monotonic() + timeout
        while self.poll_exit() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def kill(self) -> None:
        """Send SIGKILL (nothing if it is already reaped)."""
        if self.exitcode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Close the report pipe."""
        os.close(self.fd)


def _die_with(parent: int) -> None:
    """Have the kernel kill this child when its parent dies (``PR_SET_PDEATHSIG``).

    A main process killed outright (the OOM killer in a small capture kernel,
    ``kill -9``) would otherwise leave its workers compressing for nobody.
    """
    import ctypes  # already loaded by numpy

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG (linux/prctl.h)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _send(fd: int, value: Any) -> None:
    data = marshal.dumps(value)
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view) :]


def wait_any(workers: list[Worker], timeout: float) -> None:
    """Sleep until some worker's pipe has data or end of file, or ``timeout`` seconds pass.

    Args:
        workers: The workers.
        timeout: Seconds.
    """
    poller = select.poll()
    for w in workers:
        poller.register(w.fd, select.POLLIN)
    poller.poll(max(0, int(timeout * 1000)))
