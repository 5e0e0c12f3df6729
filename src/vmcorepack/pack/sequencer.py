"""The sequencer: chunk k may take its data offset only after chunk k-1."""

from __future__ import annotations

import time

from vmcorepack import procs
from vmcorepack.errors import (
    VmcorepackError,
)
from vmcorepack.pack.options import TURN_TIMEOUT


class Sequencer:
    """Hands out data offsets in chunk order, across processes.

    Only the process whose turn it is writes the shared slots, so no lock is
    needed; it then wakes every waiter, and each checks whether the turn is
    now its own.  The slots are plain stores, which a weakly ordered CPU
    (arm64, ppc64) may show another core out of order: the turn before the
    offset.  So the owner also stores ``offset ^ _mix(turn)``, and a reader
    takes the offset only when the three words agree; an inconsistent read
    is read again.  Each aligned 8-byte store is seen whole on every
    architecture Linux runs on.

    Attributes:
        slots: Shared int64: next chunk whose turn it is, its data offset,
            aborted flag, the check word.
    """

    NEXT_CHUNK, NEXT_OFFSET, ABORTED, CHECK = 0, 1, 2, 3

    def __init__(self, first_offset: int, waiters: int) -> None:
        """Create the shared state.

        Args:
            first_offset: Where the first chunk's data goes.
            waiters: Number of processes that may wait for a turn (indexes 0..waiters-1).
        """
        self.slots = procs.SharedInts(4)
        self.slots.values[self.NEXT_OFFSET] = first_offset
        self.slots.values[self.CHECK] = _check_word(0, first_offset)
        self.wakers = procs.Wakers(waiters)
        self.me = 0

    @property
    def aborted(self) -> bool:
        """Whether the run was abandoned."""
        return bool(self.slots.values[self.ABORTED])

    @property
    def next_offset(self) -> int:
        """Data offset of the chunk whose turn it is (after the last chunk: the end of the data)."""
        return int(self.slots.values[self.NEXT_OFFSET])

    def abort(self) -> None:
        """Make every waiting worker give up."""
        self.slots.values[self.ABORTED] = 1
        self.wakers.wake_all()

    def _wait_turn(self, chunk: int, timeout: float) -> int:
        v = self.slots.values
        deadline = time.monotonic() + timeout
        while True:
            if v[self.ABORTED]:
                raise VmcorepackError("dump abandoned")
            torn = False
            if v[self.NEXT_CHUNK] == chunk:
                offset = int(v[self.NEXT_OFFSET])
                if int(v[self.CHECK]) == _check_word(chunk, offset):
                    return offset
                torn = True  # the turn is seen before its offset: read both again
            left = deadline - time.monotonic()
            if left <= 0:
                raise VmcorepackError(f"chunk {chunk} waited {timeout:.0f} s for its turn")
            if torn:
                time.sleep(0)
            else:
                self.wakers.wait(self.me, min(left, 1.0))

    def _pass_turn(self, chunk: int, offset: int) -> None:
        v = self.slots.values
        v[self.NEXT_OFFSET] = offset
        v[self.CHECK] = _check_word(chunk + 1, offset)
        v[self.NEXT_CHUNK] = chunk + 1
        self.wakers.wake_all()

    def close(self) -> None:
        """Release the wake-up descriptors (after the workers are gone)."""
        self.wakers.close()

    def ready(self, chunk: int) -> bool:
        """Tell, without waiting, whether it is ``chunk``'s turn.

        Args:
            chunk: Chunk index.

        Returns:
            True when :meth:`take` would not wait.
        """
        return bool(self.slots.values[self.NEXT_CHUNK] == chunk)

    def take(self, chunk: int, size: int, timeout: float = TURN_TIMEOUT) -> int:
        """Wait for ``chunk``'s turn, reserve ``size`` bytes, pass the turn on.

        Args:
            chunk: Chunk index.
            size: Bytes of data the chunk writes.
            timeout: Seconds to wait.

        Returns:
            The chunk's data offset.
        """
        off = self._wait_turn(chunk, timeout)
        self._pass_turn(chunk, off + size)
        return off

    def hold(self, chunk: int, timeout: float = TURN_TIMEOUT) -> int:
        """Wait for the turn without passing it on (streams write in turn).

        Args:
            chunk: Chunk index.
            timeout: Seconds to wait.

        Returns:
            The data offset.
        """
        return self._wait_turn(chunk, timeout)

    def release(self, chunk: int, size: int) -> None:
        """Finish a turn taken with :meth:`hold`.

        Args:
            chunk: Chunk index.
            size: Bytes written.
        """
        self._pass_turn(chunk, self.next_offset + size)


def _check_word(turn: int, offset: int) -> int:
    """Return the int64 that vouches for ``offset`` being the data offset of ``turn``."""
    x = (offset ^ (turn * 0x9E3779B97F4A7C15)) & 0xFFFF_FFFF_FFFF_FFFF
    return x - (1 << 64) if x >> 63 else x
