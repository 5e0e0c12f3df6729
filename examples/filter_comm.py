"""vmcorepack filter: erase the name (``comm``) of every task, as makedumpfile's sample extension does.

    vmcorepack -l -d 31 --filter examples/filter_comm.py /proc/vmcore dumpfile

Each task's 16-byte ``comm`` is overwritten with 'X' before compression; the
dump's erase info records ``erase task_struct.comm size 16`` once per task.
"""

from __future__ import annotations

from vmcorepack.userfilter import FilterContext


def filter(ctx: FilterContext) -> None:
    """Erase every task's comm (the task list from init_task, threads of each group too)."""
    prog = ctx.prog
    # The idle tasks of CPUs other than 0 ("swapper/N") are not on the task
    # list: each CPU's runqueue points at its own.
    init = prog.symbol("init_task")
    for cpu in prog.cpus():
        idle = prog.per_cpu("runqueues", cpu).idle.deref()
        if idle.address != init:
            ctx.erase(idle.comm, name="task_struct.comm")
    for task in prog.tasks():
        ctx.erase(task.comm, name="task_struct.comm")
        # Threads other than the group leader hang off signal->thread_head in 6.1.
        leader = task.address
        for thread in prog.list_for_each_entry(task.signal.deref().thread_head.address, task.type, "thread_node"):
            if thread.address != leader:
                ctx.erase(thread.comm, name="task_struct.comm")
