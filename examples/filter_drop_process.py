"""vmcorepack filter: leave out the user pages of one named process.

    VMCOREPACK_DROP_COMM=memhog vmcorepack -l -d 1 --filter examples/filter_drop_process.py /proc/vmcore dumpfile

Every task whose ``comm`` is the name gives the pages its page table maps in
user space; they are dropped whatever the dump level keeps (shared pages,
such as its libraries' page cache, go too: they are mapped by it).
"""

from __future__ import annotations

import os

from vmcorepack.userfilter import FilterContext


def filter(ctx: FilterContext) -> None:
    """Drop the user pages of every task called $VMCOREPACK_DROP_COMM."""
    name = os.environ.get("VMCOREPACK_DROP_COMM", "memhog").encode()
    for task in ctx.prog.tasks():
        if task.comm.string_() == name:
            ctx.drop(ctx.user_pfns(task))
