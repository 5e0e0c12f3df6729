"""vmcorepack filter: erase the payload of every "user" and "logon" key (passwords, tokens).

    vmcorepack -l -d 31 --filter examples/filter_keyring.py /proc/vmcore dumpfile

The same job as makedumpfile's eppic_scripts/keyring.c: every key is on the
red-black tree ``key_serial_tree`` (security/keys/key.c) through
``key->serial_node``; a user or logon key's ``payload.data[0]`` points at a
``struct user_key_payload`` whose ``datalen`` bytes of ``data`` are the secret.
"""

from __future__ import annotations

from collections.abc import Iterator

from vmcorepack.kernel.program import Program
from vmcorepack.userfilter import FilterContext


def rb_nodes(prog: Program, node: int) -> Iterator[int]:
    """Yield every node of an rbtree below ``node`` (struct rb_node: parent_color, right, left)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n:
            yield n
            stack += [prog.read_u64(n + 8), prog.read_u64(n + 16)]


def filter(ctx: FilterContext) -> None:
    """Erase user and logon key payloads."""
    prog = ctx.prog
    key_t = prog.type("struct key")
    serial = key_t.find_member("serial_node")
    assert serial is not None
    wanted = {prog.symbol(s) for s in ("key_type_user", "key_type_logon") if prog.symbols.lookup(s)}
    for node in rb_nodes(prog, prog.read_u64(prog.symbol("key_serial_tree"))):
        key = prog.object(node - serial[0], key_t)
        if key.type.find_member("type") is None or key.member("type").value_() not in wanted:
            continue
        ptr = prog.read_u64(key.payload.address)  # payload.data[0]
        if not ptr:
            continue
        upayload = prog.object(ptr, "struct user_key_payload")
        ctx.erase(upayload.data.address, upayload.datalen.value_(), name="user_key_payload.data")
