"""Dump level -> 2nd bitmap (which pfns get a page descriptor).

The 2nd bitmap starts as the 1st bitmap, loses the pfns of each PT_LOAD that
have no file data (``exclude_nodata_pages``), and then, for levels that need
the kernel's ``struct page`` array, the pages the level excludes
(docs/kdump-format.md §9.6-9.7).  Zero pages are not removed here: they keep
their bit and share one data block (§5.4).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vmcorepack import bitmap
from vmcorepack.constants import DumpLevel
from vmcorepack.errors import UnsupportedError, VmcoreinfoError
from vmcorepack.sources import Source


@dataclasses.dataclass
class ExclusionCounts:
    """makedumpfile's ``--show-stats`` counters (``print_report``).

    Attributes:
        zero: Pages filled with zero (counted while writing, only for dl & 1).
        cache: Non-private cache pages.
        cache_private: Private cache pages.
        user: User process data pages.
        free: Free pages.
        hwpoison: Hwpoison pages.
        offline: Offline pages.
        extension: Extension filter pages (always 0 here).
    """

    zero: int = 0
    cache: int = 0
    cache_private: int = 0
    user: int = 0
    free: int = 0
    hwpoison: int = 0
    offline: int = 0
    extension: int = 0

    @property
    def excluded(self) -> int:
        """Sum of all counters."""
        return (
            self.zero
            + self.cache
            + self.cache_private
            + self.user
            + self.free
            + self.hwpoison
            + self.offline
            + self.extension
        )


class PageFilter:
    """Builds the 2nd bitmap cycle by cycle.

    Cycles must be asked for in increasing pfn order: an exclusion range that
    runs past the end of one cycle is finished in the next (makedumpfile
    carries it over the same way).

    Attributes:
        source: The input.
        dump_level: The dump level.
        counts: Counters accumulated so far.
    """

    def __init__(self, source: Source, dump_level: int) -> None:
        """Prepare filtering.

        Args:
            source: The input.
            dump_level: Dump level 0-31.

        Raises:
            VmcoreinfoError: Levels above 1 without VMCOREINFO.
            UnsupportedError: A level this build cannot decide.
        """
        self.source = source
        self.dump_level = dump_level
        self.counts = ExclusionCounts()
        self._nodata = bitmap.nodata_ranges(source.segments, source.page_size)
        self._loads = bitmap.load_ranges(source.segments, source.page_size, source.max_mapnr)
        needs_pages = bool(dump_level & (DumpLevel.CACHE | DumpLevel.CACHE_PRIVATE | DumpLevel.USER | DumpLevel.FREE))
        if needs_pages:
            if source.vmcoreinfo is None:
                raise VmcoreinfoError(
                    "*",
                    f"{source.path}: dump level {dump_level} needs VMCOREINFO (give -i FILE), "
                    "only levels 0 and 1 work without it",
                )
            raise UnsupportedError(f"dump level {dump_level} is not supported yet (only 0 and 1)")

    def second_bitmap(self, start: int, end: int) -> np.ndarray:
        """Return the 2nd bitmap for pfns ``[start, end)``.

        Args:
            start: First pfn of the cycle.
            end: End of the cycle.

        Returns:
            Bool array.
        """
        bits = np.zeros(end - start, bool)
        bitmap.fill_ranges(bits, self._loads, start, True)
        bitmap.fill_ranges(bits, self._nodata, start, False)
        return bits
