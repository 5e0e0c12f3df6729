"""Python filters (``--filter FILE.py``): erase data and keep or drop pages by program.

A filter is a Python file defining ``filter(ctx)``; vmcorepack calls it once,
before the page pass, with a :class:`FilterContext`.  Through ``ctx.prog`` (a
:class:`~vmcorepack.kernel.program.Program`) it finds symbols, types and
kernel objects (from the dump's kallsyms and BTF, or ``-x``'s DWARF), walks
lists and the task list; it then asks for

- ``ctx.erase(obj_or_address, size=None, nullify=False, name=None)``: bytes
  overwritten with ``'X'`` (zeros with ``nullify``) before compression,
  recorded in the dump's erase info as ``erase NAME size N`` like a
  ``--config`` line;
- ``ctx.keep(pfns)`` / ``ctx.drop(pfns)``: pages forced into or out of the
  dump whatever the dump level says (makedumpfile's extension callback
  answers PG_INCLUDE / PG_EXCLUDE per page; a filter gives the same answers
  as pfn lists, and every other page is left to the level rules).

``ctx.user_pfns(task)`` lists the pages a process maps (its page table's
user half).  Filters only add to the erase plan and to two pfn arrays, so
the page pass and its workers stay as they are (and byte-identical when no
filter is given).
"""

from __future__ import annotations

import dataclasses
import runpy
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vmcorepack.erase import Target
from vmcorepack.errors import FilterError, KernelMemoryError
from vmcorepack.kernel.program import Object, Program
from vmcorepack.kernel.walk import TableWalker

#: x86_64 and arm64 kernels both give user space the lower half of a 512-entry top table.
_USER_TOP_SLOTS = 256


@dataclasses.dataclass
class PageDecisions:
    """Pages forced in or out of the dump by filters.

    Attributes:
        keep: Sorted unique pfns kept even if the dump level excludes them
            (only where the dump has memory: RAM is still required).
        drop: Sorted unique pfns excluded; a pfn in both is dropped.
    """

    keep: np.ndarray
    drop: np.ndarray

    def apply(self, start: int, end: int, b2: np.ndarray) -> None:
        """Apply the decisions to the 2nd-bitmap bits of pfns ``[start, end)`` (in place)."""
        for pfns, value in ((self.keep, True), (self.drop, False)):
            lo, hi = np.searchsorted(pfns, [start, end])
            b2[pfns[lo:hi] - start] = value


class FilterContext:
    """What a filter's ``filter(ctx)`` works with.

    Attributes:
        prog: The kernel's symbols, types and memory.
        name: The filter file's stem (default erase info name).
    """

    def __init__(self, prog: Program, name: str) -> None:
        """Start an empty set of requests."""
        self.prog = prog
        self.name = name
        self.targets: list[Target] = []
        self._keep: list[np.ndarray] = []
        self._drop: list[np.ndarray] = []

    def erase(
        self, what: Object | int, size: int | None = None, nullify: bool = False, name: str | None = None
    ) -> None:
        """Ask for bytes to be overwritten.

        Args:
            what: A typed object (its size is the default) or an address.
            size: Bytes to erase (required with an address).
            nullify: Write zeros instead of ``'X'``.
            name: What the erase info records (default: the filter's name).
        """
        if isinstance(what, Object):
            addr = what.address
            size = what.type.strip().size if size is None else size
        else:
            addr = what
            if size is None:
                raise FilterError(f"{self.name}: erase({addr:#x}) needs a size")
        if size > 0:
            self.targets.append(Target(addr, size, nullify, name or self.name, 0))

    def keep(self, pfns: Iterable[int] | np.ndarray) -> None:
        """Keep these pages whatever the dump level says."""
        self._keep.append(np.asarray(list(pfns) if not isinstance(pfns, np.ndarray) else pfns, np.int64))

    def drop(self, pfns: Iterable[int] | np.ndarray) -> None:
        """Leave these pages out of the dump."""
        self._drop.append(np.asarray(list(pfns) if not isinstance(pfns, np.ndarray) else pfns, np.int64))

    def user_pfns(self, task: Object) -> np.ndarray:
        """Return the pfns a task maps in user space (none for a kernel thread)."""
        mm = task.member("mm").value_()
        if mm == 0:
            return np.zeros(0, np.int64)
        mem = self.prog.mem
        if not isinstance(mem, TableWalker):
            raise FilterError(f"{self.name}: user_pfns needs a page-table walk of the dump")
        pgd = self.prog.object(mm, task.member("mm").type.strip().target).member("pgd").value_()
        return mem.mapped_pfns(self.prog.vtop(pgd), _USER_TOP_SLOTS)

    def decisions(self) -> PageDecisions:
        """Return the keep and drop requests as sorted arrays."""

        def merged(parts: list[np.ndarray]) -> np.ndarray:
            return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

        return PageDecisions(merged(self._keep), merged(self._drop))


def run(paths: Sequence[str], prog: Program) -> tuple[list[Target], PageDecisions | None]:
    """Run filter files in order.

    Args:
        paths: The ``--filter`` files.
        prog: The kernel.

    Returns:
        (erase targets, page decisions or None if no filter keeps or drops a page).

    Raises:
        FilterError: A file cannot be loaded, has no ``filter`` function, or
            fails; the message names the file.
    """
    targets: list[Target] = []
    keep: list[np.ndarray] = []
    drop: list[np.ndarray] = []
    for path in paths:
        ctx = FilterContext(prog, Path(path).stem)
        try:
            module = runpy.run_path(path)
        except OSError as e:
            raise FilterError(f"{path}: {e.strerror}") from e
        except SyntaxError as e:
            raise FilterError(f"{path}: line {e.lineno}: {e.msg}") from e
        fn = module.get("filter")
        if not callable(fn):
            raise FilterError(f"{path}: defines no filter(ctx) function")
        try:
            fn(ctx)
        except FilterError:
            raise
        except (LookupError, KernelMemoryError, TypeError, ValueError, AttributeError) as e:
            raise FilterError(f"{path}: {type(e).__name__}: {e}") from e
        targets += ctx.targets
        d = ctx.decisions()
        keep.append(d.keep)
        drop.append(d.drop)
    dec = PageDecisions(
        np.unique(np.concatenate(keep or [np.zeros(0, np.int64)])),
        np.unique(np.concatenate(drop or [np.zeros(0, np.int64)])),
    )
    return targets, (dec if len(dec.keep) or len(dec.drop) else None)
