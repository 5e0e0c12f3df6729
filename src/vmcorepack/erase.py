"""makedumpfile's ``--config`` erase filters: parse, resolve, plan, apply, record.

The file syntax is makedumpfile.conf(5) (makedumpfile's erase_info.c)::

    erase SYMBOL[.member[...]] [size N[K|M] | size SYMBOL[.member...] | nullify]
    for ID in ARRAY | STRUCTVAR via NEXT | LISTHEAD within STRUCT[:MEMBER]
        erase ID[.member...] [size ... | nullify]
    endfor

``#`` starts a comment, tokens are separated by blanks and a command may span
lines; ``[module]`` sections name a module the following commands are for
(only ``[vmlinux]`` is supported: module symbols are not read).  vmcorepack
adds a C cast in front of a symbol, ``erase (struct task_struct)init_task.comm``,
for a type backend that does not record variables' types (BTF); the cast is
not part of the expression recorded in the dump, so the erase info reads as
makedumpfile's.

Resolution follows erase_info.c's ``resolve_config_entry``: a member chain
reads through pointers; an array's size is its length times its element
size; a ``char *`` leaf erases the string it points to (``strlen`` bytes); a
``void *`` leaf needs ``size``; ``nullify`` zeroes a pointer's 8 bytes.  Each
resolved item becomes a physical range starting at the translation of its
first byte.

Applying the ranges reproduces makedumpfile's ``filter_data_buffer``: ranges
are consumed as the pages that hold them are written, a range running past
its page continues at the next *physical* page and stops at the first page
that is not dumped; only the bytes of written pages count in the erase info.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence

import numpy as np

from vmcorepack.errors import FilterError, KernelMemoryError
from vmcorepack.kernel.program import Program
from vmcorepack.kernel.types import CType

#: Byte written over erased data (erase_info.c ``fl_info->erase_ch = 'X'``).
ERASE_CHAR = 0x58
#: Words that cannot be a symbol (erase_info.c ``IS_KEYWORD``).
KEYWORDS = ("erase", "size", "nullify", "for", "in", "as", "within", "endfor", "via")
_CAST = re.compile(r"^\((struct|union)\s+([A-Za-z_]\w*)\)(.*)$")


@dataclasses.dataclass(frozen=True)
class EraseCommand:
    """One ``erase`` line.

    Attributes:
        expr: The expression as makedumpfile records it (no cast).
        cast: ``struct NAME`` given in front of the symbol, or None.
        size: ``size`` argument: an int, an expression, or None.
        nullify: ``nullify`` was given.
        line: Line number in the file.
    """

    expr: str
    cast: str | None
    size: int | str | None
    nullify: bool
    line: int


@dataclasses.dataclass(frozen=True)
class Loop:
    """A ``for ... endfor`` block.

    Attributes:
        var: Iteration variable.
        over: The array, struct or list_head expression (no cast).
        cast: Cast in front of ``over``.
        via: ``via NEXT``: the member linking struct entries.
        within: ``within STRUCT[:MEMBER]``: the list entries' type and list_head member.
        commands: The erase commands inside.
        line: Line of ``for``.
    """

    var: str
    over: str
    cast: str | None
    via: str | None
    within: tuple[str, str] | None
    commands: tuple[EraseCommand, ...]
    line: int


Entry = EraseCommand | Loop


def _tokens(text: str) -> Iterator[tuple[str, int]]:
    """Yield (token, line); a cast ``(struct x)sym`` stays one token."""
    section = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].replace("\t", " ")
        if line.startswith("["):
            end = line.find("]")
            if end < 0:
                raise FilterError(f"line {no}: invalid module section entry")
            section = line[1:end]
            continue
        if section not in (None, "vmlinux"):
            raise FilterError(f"line {no}: module sections ([{section}]) are not supported")
        # Keep a cast one token: its blank becomes a NUL until split.
        line = re.sub(r"\(\s*(struct|union)\s+(\w+)\s*\)\s*", "(\\1\0\\2)", line)
        for tok in line.split():
            yield tok.replace("\0", " "), no


def _split_cast(tok: str) -> tuple[str, str | None]:
    m = _CAST.match(tok)
    return (m.group(3), f"{m.group(1)} {m.group(2)}") if m else (tok, None)


def parse_config(text: str) -> list[Entry]:
    """Parse a filter config.

    Args:
        text: The file's contents.

    Returns:
        Its commands in order.

    Raises:
        FilterError: A syntax error (message starts with ``line N:``).
    """
    toks = list(_tokens(text))
    pos = 0

    def take(what: str) -> tuple[str, int]:
        nonlocal pos
        if pos >= len(toks) or toks[pos][0] in KEYWORDS:
            line = toks[pos][1] if pos < len(toks) else (toks[-1][1] if toks else 0)
            raise FilterError(f"line {line}: expected {what}")
        pos += 1
        return toks[pos - 1]

    def peek(word: str) -> bool:
        nonlocal pos
        if pos < len(toks) and toks[pos][0] == word:
            pos += 1
            return True
        return False

    def erase() -> EraseCommand:
        tok, line = take("kernel symbol after 'erase' command")
        expr, cast = _split_cast(tok)
        size: int | str | None = None
        nullify = peek("nullify")
        if not nullify and peek("size"):
            stok, sline = take("size symbol after 'size' keyword")
            size = _size_value(stok, sline)
        return EraseCommand(expr, cast, size, nullify, line)

    out: list[Entry] = []
    while pos < len(toks):
        tok, line = toks[pos]
        pos += 1
        if tok == "erase":
            out.append(erase())
        elif tok == "for":
            var, _ = take("iteration VAR entry after 'for' keyword")
            if not peek("in"):
                raise FilterError(f"line {line}: expected token 'in'")
            over_tok, _ = take("list symbol after 'in' keyword")
            over, cast = _split_cast(over_tok)
            via = within = None
            if peek("via"):
                via = take("member name after 'via' keyword")[0]
            elif peek("within"):
                w, _ = take("struct name after 'within' keyword")
                sname, _, member = w.partition(":")
                within = (sname, member or "list")
            cmds = []
            while not peek("endfor"):
                if pos >= len(toks):
                    raise FilterError(f"line {line}: no matching 'endfor' found")
                if not peek("erase"):
                    raise FilterError(f"line {toks[pos][1]}: invalid token {toks[pos][0]!r}")
                cmd = erase()
                if cmd.expr.split(".")[0] != var:
                    raise FilterError(f"line {cmd.line}: unused iteration variable {var!r}")
                cmds.append(cmd)
            out.append(Loop(var, over, cast, via, within, tuple(cmds), line))
        else:
            raise FilterError(f"line {line}: invalid token {tok!r}")
    return out


def _size_value(tok: str, line: int) -> int | str:
    """``N``, ``NK``, ``NM`` (erase_info.c ``create_config_entry``) or an expression."""
    m = re.match(r"^(-?\d+)([KkMm]?)", tok)
    if not m:
        return tok
    n = int(m.group(1))
    if n < 0:
        raise FilterError(f"line {line}: size value must be positive")
    return n * {"": 1, "k": 1 << 10, "m": 1 << 20}[m.group(2).lower()]


@dataclasses.dataclass
class Target:
    """One resolved erasure: a virtual range and how to overwrite it.

    Attributes:
        vaddr: First byte.
        size: Bytes.
        nullify: Overwrite with zeros (else with ``'X'``).
        expr: Expression recorded in the erase info.
        line: Config line.
    """

    vaddr: int
    size: int
    nullify: bool
    expr: str
    line: int


class _Resolved:
    """An expression's value: where it is, what it is, where it points."""

    def __init__(self, addr: int, t: CType, prog: Program) -> None:
        self.addr = addr  # the object's own address (mdf sym_addr)
        self.t = t
        s = t.strip()
        # A pointer (not an array) leads to what it points to (mdf vaddr).
        self.vaddr = prog.read_u64(addr) if s.kind == "ptr" else addr

    def leaf_size(self, prog: Program) -> int:
        """The size makedumpfile erases without ``size``."""
        s = self.t.strip()
        if s.kind == "array":
            # Array of pointers: length * pointer size; else length * element size.
            return s.size
        if s.kind == "ptr":
            pointee = s.target.strip()
            if pointee.kind == "void":
                return 0
            if pointee.kind == "int" and pointee.size == 1:
                # char *: the string it points to, NUL excluded (mdf get_strlen).
                return len(prog.read(self.vaddr, 4096).split(b"\0", 1)[0]) if self.vaddr else 0
            return pointee.size
        return s.size


def _walk(prog: Program, base: _Resolved, members: Sequence[str], line: int) -> _Resolved | None:
    """Follow a member chain from ``base``, through pointers; None at a NULL pointer."""
    cur = base
    for name in members:
        if cur.vaddr == 0:
            return None
        s = cur.t.strip()
        struct = s.target.strip() if s.kind == "ptr" else s
        found = struct.find_member(name)
        if found is None:
            raise FilterError(f"line {line}: {struct.spelling()} has no member {name!r}")
        cur = _Resolved(cur.vaddr + found[0], found[1], prog)
    return cur


def _address(prog: Program, name: str, line: int) -> int:
    try:
        return prog.symbol(name)
    except LookupError as e:
        raise FilterError(f"line {line}: {e}") from e


def _symbol(prog: Program, name: str, cast: str | None, line: int) -> _Resolved:
    try:
        obj = prog.variable(name, cast)
    except LookupError as e:
        raise FilterError(f"line {line}: {e}") from e
    return _Resolved(obj.address, obj.type, prog)


def _target(prog: Program, cmd: EraseCommand, res: _Resolved | None, env: dict[str, _Resolved]) -> Target | None:
    """Turn a resolved erase expression into a range (None: nothing to erase, as makedumpfile skips it)."""
    if res is None:
        return None
    if cmd.nullify:
        if res.t.strip().kind != "ptr":
            return None
        return Target(res.addr, 8, True, cmd.expr, cmd.line)
    if isinstance(cmd.size, int):
        size = cmd.size
    elif isinstance(cmd.size, str):
        size = _size_of_expr(prog, cmd.size, env, cmd.line)
    else:
        size = res.leaf_size(prog)
    if size <= 0 or res.vaddr == 0:
        return None
    return Target(res.vaddr, size, False, cmd.expr, cmd.line)


def _size_of_expr(prog: Program, expr: str, env: dict[str, _Resolved], line: int) -> int:
    """``size SYMBOL[.member]``: the value of a base-type object of at most 8 bytes."""
    expr, cast = _split_cast(expr)
    head, *rest = expr.split(".")
    base = env[head] if head in env else _symbol(prog, head, cast, line)
    res = _walk(prog, base, rest, line)
    if res is None:
        return 0
    s = res.t.strip()
    if s.kind not in ("int", "bool", "enum") or s.size > 8:
        raise FilterError(f"line {line}: size symbol/member {expr!r} is not of base type")
    return int.from_bytes(prog.read(res.vaddr, s.size), "little")


def _iterate(prog: Program, loop: Loop) -> Iterator[_Resolved]:
    """Yield each element a ``for`` block visits, as erase_info.c's ``get_next_list_entry``."""
    head, *rest = loop.over.split(".")
    over = _walk(prog, _symbol(prog, head, loop.cast, loop.line), rest, loop.line)
    if over is None:
        return
    s = over.t.strip()
    if loop.within is not None:
        sname, member = loop.within
        try:
            entry = prog.type(f"struct {sname}")
        except LookupError as e:
            raise FilterError(f"line {loop.line}: can't find structure {sname!r}") from e
        found = entry.find_member(member)
        if found is None or found[1].strip().name != "list_head":
            raise FilterError(f"line {loop.line}: member {member!r} of struct {sname} is not a list_head")
        for node in prog.list_for_each(over.addr):
            yield _Resolved(node - found[0], entry, prog)
    elif s.kind == "array":
        elem = s.target
        es = elem.strip()
        for i in range(s.length or 0):
            item = _Resolved(over.addr + i * es.size, elem, prog)
            if es.kind == "ptr" and item.vaddr == 0:
                continue  # arrays of pointers skip NULL slots
            yield item
    elif s.kind == "ptr" or s.kind == "struct":
        if loop.via is None:
            raise FilterError(f"line {loop.line}: {loop.over!r} is not an array: use 'via' or 'within'")
        cur: _Resolved | None = over
        seen = over.vaddr
        while cur is not None and cur.vaddr:
            yield cur
            cur = _walk(prog, cur, [loop.via], loop.line)
            if cur is not None and cur.vaddr == seen:
                break  # circular list guard (mdf cmp_addr)
    else:
        raise FilterError(f"line {loop.line}: cannot iterate over {s.spelling()}")


def resolve(prog: Program, entries: Sequence[Entry]) -> list[Target]:
    """Resolve parsed commands against the kernel, in file order.

    Raises:
        FilterError: A symbol, type or member is unknown (``line N:`` first).
    """
    out: list[Target] = []
    for e in entries:
        try:
            if isinstance(e, EraseCommand):
                head, *rest = e.expr.split(".")
                if not rest and e.cast is None and isinstance(e.size, int) and not e.nullify:
                    # "erase SYM size N" needs only the address: no type,
                    # so BTF's missing variable types do not matter.
                    base = _Resolved(_address(prog, head, e.line), CType("void", "void", 0), prog)
                else:
                    base = _symbol(prog, head, e.cast, e.line)
                t = _target(prog, e, _walk(prog, base, rest, e.line), {})
                if t is not None:
                    out.append(t)
                continue
            for item in _iterate(prog, e):
                env = {e.var: item}
                for cmd in e.commands:
                    _, *rest = cmd.expr.split(".")
                    t = _target(prog, cmd, _walk(prog, item, rest, cmd.line), env)
                    if t is not None:
                        out.append(t)
        except KernelMemoryError as err:
            raise FilterError(f"line {e.line}: {err}") from err
    return out


@dataclasses.dataclass
class _Node:
    """An erase info node: one per erase command (erase_info.c ``struct erase_info``)."""

    expr: str
    sizes: list[int]
    erased: bool = False


class ErasePlan:
    """Erasures as physical ranges, in makedumpfile's order, and what the dump records.

    Attributes:
        ranges: (paddr, size, fill byte, node index, size index) sorted by paddr.
    """

    def __init__(self, prog: Program, targets: Sequence[Target]) -> None:
        """Translate targets, merging equal start addresses as ``insert_filter_info`` does.

        Raises:
            FilterError: A target's first byte is not mapped.
        """
        self._nodes: list[_Node] = []
        by_cmd: dict[tuple[str, int], int] = {}
        ranges: dict[int, list[int]] = {}
        for t in targets:
            try:
                paddr = prog.vtop(t.vaddr)
            except KernelMemoryError as e:
                raise FilterError(f"line {t.line}: {t.expr}: {e}") from e
            if paddr in ranges:
                r = ranges[paddr]
                r[1] = max(r[1], t.size)
                continue
            key = (t.expr, t.line)
            if key not in by_cmd:
                by_cmd[key] = len(self._nodes)
                self._nodes.append(_Node(t.expr, []))
            node = self._nodes[by_cmd[key]]
            node.sizes.append(0)
            ranges[paddr] = [paddr, t.size, 0 if t.nullify else ERASE_CHAR, by_cmd[key], len(node.sizes) - 1]
        self.ranges = [(r[0], r[1], r[2], r[3], r[4]) for r in (ranges[p] for p in sorted(ranges))]

    def __len__(self) -> int:
        """Return the number of ranges."""
        return len(self.ranges)

    def pieces(self, bm2: np.ndarray, max_mapnr: int, page_size: int) -> Erasure:
        """Cut the ranges at page ends, keeping what written pages hold (``extract_filter_info``).

        Args:
            bm2: Packed 2nd bitmap (little bit order), the pages that are written.
            max_mapnr: Number of pfns.
            page_size: Page size.

        Returns:
            The byte runs to overwrite; the erase info sizes are filled in.
        """
        bits = np.unpackbits(bm2, bitorder="little")
        starts: list[int] = []
        sizes: list[int] = []
        fills: list[int] = []
        for node in self._nodes:
            node.sizes = [0] * len(node.sizes)
            node.erased = False
        for paddr, size, fill, idx, sidx in self.ranges:
            pos, left = paddr, size
            node = self._nodes[idx]
            while left > 0:
                pfn = pos // page_size
                if pfn >= max_mapnr or not bits[pfn]:
                    break
                n = min(left, (pfn + 1) * page_size - pos)
                starts.append(pos)
                sizes.append(n)
                fills.append(fill)
                node.erased = True
                if fill == 0:
                    node.sizes[sidx] = -1
                else:
                    node.sizes[sidx] += n
                pos += n
                left -= n
        order = np.argsort(np.array(starts, np.int64), kind="stable")
        return Erasure(
            np.array(starts, np.int64)[order],
            np.array(sizes, np.int64)[order],
            np.array(fills, np.uint8)[order],
            page_size,
        )

    def eraseinfo(self) -> bytes:
        """Return the erase info text, as ``write_eraseinfo`` writes it (call after :meth:`pieces`)."""
        out = []
        size_str = ""
        for node in self._nodes:
            if not node.erased:
                continue
            for s in node.sizes:
                # makedumpfile keeps the previous line's size text for a
                # loop iteration that erased nothing (size 0).
                if s > 0:
                    size_str = f"size {s}\n"
                elif s == -1:
                    size_str = "nullify\n"
                out.append(f"erase {node.expr} {size_str}")
        return "".join(out).encode()


@dataclasses.dataclass(frozen=True)
class Erasure:
    """Byte runs to overwrite in written pages, sorted by physical address; small and picklable.

    Attributes:
        starts: Physical address of each run (a run never crosses a page).
        sizes: Bytes.
        fills: Byte written (``'X'`` or 0).
        page_size: Page size.
    """

    starts: np.ndarray
    sizes: np.ndarray
    fills: np.ndarray
    page_size: int

    def touched(self, pfns: np.ndarray) -> np.ndarray:
        """Return which of the sorted ``pfns`` hold a run."""
        return np.isin(pfns, self.starts // self.page_size)

    def apply_sparse(
        self, raw: bytes | bytearray | memoryview, known_zero: np.ndarray, pfns: np.ndarray
    ) -> tuple[bytearray, np.ndarray]:
        """Erase in a chunk read by ``Source.read_pfns_sparse`` (pages known zero left out).

        A known-zero page that holds a run is put back in first: erasing
        makes it non-zero, as makedumpfile's filter runs before its zero test.

        Returns:
            (the erased pages, the updated known-zero mask).
        """
        ps = self.page_size
        if known_zero.any() and (known_zero & self.touched(pfns)).any():
            full = bytearray(len(pfns) * ps)
            have = np.flatnonzero(~known_zero)
            src = memoryview(raw)
            for j, i in enumerate(have.tolist()):
                full[i * ps : (i + 1) * ps] = src[j * ps : (j + 1) * ps]
            buf, known_zero = full, np.zeros(len(pfns), bool)
        else:
            buf = bytearray(raw)
        self.apply(buf, pfns[~known_zero])
        return buf, known_zero

    def apply(self, raw: bytearray, pfns: np.ndarray) -> None:
        """Overwrite the runs that fall in ``raw``, the concatenated pages of sorted ``pfns``."""
        ps = self.page_size
        run_pfn = self.starts // ps
        lo, hi = np.searchsorted(run_pfn, [pfns[0], pfns[-1] + 1]) if len(pfns) else (0, 0)
        for i in range(int(lo), int(hi)):
            slot = int(np.searchsorted(pfns, run_pfn[i]))
            if slot < len(pfns) and pfns[slot] == run_pfn[i]:
                at = slot * ps + int(self.starts[i]) % ps
                raw[at : at + int(self.sizes[i])] = bytes([int(self.fills[i])]) * int(self.sizes[i])


def load(path: str, prog: Program) -> list[Target]:
    """Read, parse and resolve a ``--config`` file.

    Raises:
        FilterError: The file cannot be read or is wrong; the message names
            the file and line.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise FilterError(f"{path}: {e.strerror}") from e
    try:
        return resolve(prog, parse_config(text))
    except FilterError as e:
        raise FilterError(f"{path}: {e}") from e
