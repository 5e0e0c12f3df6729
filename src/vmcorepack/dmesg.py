r"""The crashed kernel's log, extracted like ``makedumpfile --dump-dmesg``.

Three kernel layouts exist, chosen the way makedumpfile's ``dump_dmesg()``
chooses them:

* ``SYMBOL(prb)`` (5.10+, kernel commit 896fbe20b4e2 "printk: use the
  lockless ringbuffer"): descriptors, infos and a text data ring
  (makedumpfile ``printk.c``, ``dump_lockless_dmesg``);
* ``SYMBOL(log_first_idx)``/``SYMBOL(log_next_idx)`` (3.5 - 5.9): variable
  length ``struct printk_log`` records in ``log_buf``;
* ``SYMBOL(log_end)`` (before 3.5): ``log_buf`` is plain text, written out as is.

Records are formatted as makedumpfile's ``dump_record``/``dump_log_entry``
do, byte for byte: ``"[%5llu.%06lu] "``, then ``"[%8s] "`` with ``T<pid>`` or
``C<cpu>`` when the caller id is exported (makedumpfile 1.7.5+, commit
48bb1e0 "add PRINTK_CALLER id support"), then the text.  Dictionaries and
``dev_info`` are not printed.  In the text a newline becomes a newline plus
as many spaces as the prefix is long; bytes that are neither ``isprint`` nor
``isspace`` in the C locale become ``\x%02x`` of a *signed* char, so
0x80-0xff print as ``\xffffff80``-``\xffffffff`` (x86_64 ``char`` is signed).

Reading is bounded: every structure is read once into memory, rings are
walked by index arithmetic and never by following unchecked pointers, and a
cycle or an out-of-range index raises :class:`CorruptLogError`, which carries
the records formatted before the fault (makedumpfile writes those, then fails).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Protocol

from vmcorepack.errors import KernelMemoryError, UnsupportedError, VmcoreinfoError
from vmcorepack.kernel import arch
from vmcorepack.sources import Source
from vmcorepack.vmcoreinfo import VmcoreInfo

#: ``DESC_SV_BITS - 2``: the two state bits on top of a 64-bit ``state_var``.
_DESC_FLAGS_SHIFT = 62
#: ``DESC_ID_MASK``.
DESC_ID_MASK = (1 << _DESC_FLAGS_SHIFT) - 1
#: ``desc_committed`` and ``desc_finalized``: the states makedumpfile prints.
_PRINTED_STATES = (1, 2)
#: Caller ids with this bit are CPU numbers (``printk_caller_id``), else pids.
_CALLER_CPU = 0x8000_0000
#: makedumpfile ``PID_CHARS_DEFAULT``: width of the caller id column.
_PID_CHARS = 8
#: Refuse rings larger than this (the kernel caps log_buf_len at 1 << 31; 256 MiB is already absurd).
MAX_LOG_BYTES = 1 << 28
#: Refuse descriptor rings with more entries than this.
MAX_DESCS = 1 << 24

# C-locale classification of makedumpfile's ``isprint(*p) || isspace(*p)``.
_KEPT = frozenset(range(0x20, 0x7F)) | frozenset(range(0x09, 0x0E))


class CorruptLogError(KernelMemoryError):
    """The log structures are inconsistent; the records before the fault are kept.

    Attributes:
        partial: The formatted log up to the fault (makedumpfile writes it).
    """

    def __init__(self, address: int, msg: str, partial: bytes) -> None:
        """Create the error.

        Args:
            address: Kernel address of the bad structure.
            msg: What is wrong.
            partial: Log formatted before the fault.
        """
        self.partial = partial
        super().__init__(address, msg)


@dataclasses.dataclass(frozen=True)
class KernelLog:
    """An extracted kernel log.

    Attributes:
        text: The log file's contents.
        layout: ``"lockless"``, ``"printk_log"`` or ``"plain"``.
        records: Records written (bytes for the plain layout).
    """

    text: bytes
    layout: str
    records: int


def _escape_table() -> list[bytes]:
    table = []
    for b in range(256):
        if b in _KEPT:
            table.append(bytes([b]))
        else:
            # sprintf("\\x%02x", *p) with a signed char promoted to int.
            table.append(b"\\x%02x" % (b if b < 0x80 else b | 0xFFFF_FF00))
    return table


_ESCAPE = _escape_table()


def format_record(ts_nsec: int, text: bytes, caller_id: int | None) -> bytes:
    """Format one record as makedumpfile's ``dump_record`` does.

    Args:
        ts_nsec: Timestamp in nanoseconds.
        text: The message text (``text_len`` bytes).
        caller_id: ``caller_id`` when the kernel exports it, else None.

    Returns:
        The record's lines, ending with a newline.
    """
    prefix = b"[%5d.%06d] " % (ts_nsec // 1_000_000_000, ts_nsec % 1_000_000_000 // 1000)
    if caller_id is not None:
        cid = b"%c%d" % (ord("C") if caller_id & _CALLER_CPU else ord("T"), caller_id & ~_CALLER_CPU & 0xFFFF_FFFF)
        prefix += b"[%*s] " % (_PID_CHARS, cid)
    newline = b"\n" + b" " * len(prefix)
    if all(b in _KEPT for b in text):
        body = text.replace(b"\n", newline)
    else:
        body = b"".join(newline if b == 0x0A else _ESCAPE[b] for b in text)
    return prefix + body + b"\n"


class KernelReader(Protocol):
    """What the extraction needs from a translator: reads of kernel virtual memory."""

    def read(self, vaddr: int, size: int) -> bytes:
        """Return ``size`` bytes at kernel virtual ``vaddr`` (KernelMemoryError if unmapped)."""
        ...


class _Mem:
    """Little-endian reads of kernel memory and of buffers copied from it."""

    def __init__(self, walker: KernelReader, vi: VmcoreInfo) -> None:
        self.walker = walker
        self.vi = vi

    def read(self, vaddr: int, size: int, what: str) -> bytes:
        if size < 0 or size > MAX_LOG_BYTES:
            raise KernelMemoryError(vaddr, f"{what}: implausible size {size} bytes")
        try:
            return self.walker.read(vaddr, size)
        except KernelMemoryError as e:
            raise KernelMemoryError(vaddr, f"cannot read {what} at {vaddr:#x}: {e}") from e

    def word(self, vaddr: int, size: int, what: str) -> int:
        return int.from_bytes(self.read(vaddr, size, what), "little")

    def off(self, name: str) -> int:
        return self.vi.require("OFFSET", name)

    def size(self, name: str) -> int:
        return self.vi.require("SIZE", name)


def _u(buf: bytes, off: int, size: int) -> int:
    if off < 0 or off + size > len(buf):
        raise KernelMemoryError(off, f"field at {off:#x} (+{size}) lies outside a {len(buf)}-byte structure")
    return int.from_bytes(buf[off : off + size], "little")


# ----------------------------------------------------------------------------
# 5.10+: the lockless ring buffer
# ----------------------------------------------------------------------------


def _lockless(mem: _Mem, partial: bool) -> KernelLog:
    """Extract the log from ``prb`` (makedumpfile ``dump_lockless_dmesg``)."""
    vi = mem.vi
    prb_sym = vi.require("SYMBOL", "prb")
    prb_addr = mem.word(prb_sym, 8, "prb")
    prb = mem.read(prb_addr, mem.size("printk_ringbuffer"), "printk_ringbuffer")
    counter = vi.offset("atomic_long_t.counter") or 0

    desc_ring = mem.off("printk_ringbuffer.desc_ring")
    count_bits = _u(prb, desc_ring + mem.off("prb_desc_ring.count_bits"), 4)
    if count_bits > 24:
        raise KernelMemoryError(prb_addr, f"prb desc_ring count_bits {count_bits} is implausible")
    count = 1 << count_bits
    desc_size = mem.size("prb_desc")
    info_size = mem.size("printk_info")
    descs = mem.read(_u(prb, desc_ring + mem.off("prb_desc_ring.descs"), 8), desc_size * count, "prb.desc_ring.descs")
    infos = mem.read(_u(prb, desc_ring + mem.off("prb_desc_ring.infos"), 8), info_size * count, "prb.desc_ring.infos")
    data_ring = mem.off("printk_ringbuffer.text_data_ring")
    size_bits = _u(prb, data_ring + mem.off("prb_data_ring.size_bits"), 4)
    if size_bits > 28:
        raise KernelMemoryError(prb_addr, f"prb text_data_ring size_bits {size_bits} is implausible")
    ring_size = 1 << size_bits
    text_data = mem.read(_u(prb, data_ring + mem.off("prb_data_ring.data"), 8), ring_size, "prb.text_data_ring")

    tail_id = _u(prb, desc_ring + mem.off("prb_desc_ring.tail_id") + counter, 8)
    head_id = _u(prb, desc_ring + mem.off("prb_desc_ring.head_id") + counter, 8)
    clear_sym = vi.symbol("clear_seq")
    if partial and clear_sym is not None:
        clear_seq = mem.word(clear_sym, 8, "clear_seq")
        if vi.size("latched_seq") is not None:
            # 5.13+ (commit 7d7a23a91c91): clear_seq is a latched_seq; the
            # low bit of its seqcount picks the valid copy of val[2].
            clear_seq = mem.word(clear_sym + mem.off("latched_seq.val") + (clear_seq & 1) * 8, 8, "latched clear_seq")
        # makedumpfile keeps head's lap and puts tail on clear_seq's slot.
        tail_id = (head_id - head_id % count + clear_seq % count) & ((1 << 64) - 1)

    sv_off = mem.off("prb_desc.state_var") + counter
    lpos = mem.off("prb_desc.text_blk_lpos")
    begin_off = lpos + mem.off("prb_data_blk_lpos.begin")
    next_off = lpos + mem.off("prb_data_blk_lpos.next")
    ts_off = mem.off("printk_info.ts_nsec")
    len_off = mem.off("printk_info.text_len")
    cid_off = vi.offset("printk_info.caller_id")

    # makedumpfile visits every id from tail_id to head_id (both included,
    # wrapping at DESC_ID_MASK) and prints the ones whose descriptor carries
    # that id.  A slot holds one id, so the same output comes from ordering
    # the matching slots by their distance from tail_id: count steps whatever
    # head and tail hold (makedumpfile itself would loop for 2**62 ids on a
    # bad pair).
    if head_id > DESC_ID_MASK:
        # The loop compares unmasked head_id with masked ids: it never ends,
        # and the final "head record" is never reached.
        raise KernelMemoryError(prb_addr, f"prb head_id {head_id:#x} has state bits set; the ring is corrupt")
    tail = tail_id & DESC_ID_MASK
    span = (head_id - tail_id) & DESC_ID_MASK
    found: list[tuple[int, int]] = []
    for slot in range(count):
        sv = _u(descs, slot * desc_size + sv_off, 8)
        sid = sv & DESC_ID_MASK
        if (sv >> _DESC_FLAGS_SHIFT) not in _PRINTED_STATES or sid % count != slot:
            continue
        dist = (sid - tail) & DESC_ID_MASK
        # An unmasked first id (state bits set) never matches a descriptor.
        if dist <= span and (dist or tail == tail_id):
            found.append((dist, slot))
    found.sort()

    out: list[bytes] = []
    for _, slot in found:
        d = slot * desc_size
        begin = _u(descs, d + begin_off, 8) % ring_size
        nxt = _u(descs, d + next_off, 8) % ring_size
        if begin == nxt:
            continue  # data-less record
        inf = slot * info_size
        text_len = _u(infos, inf + len_off, 2)
        if begin > nxt:
            begin = 0  # the data block wrapped to the start of the ring
        begin += 8  # skip the block's descriptor id
        if nxt >= begin and nxt - begin < text_len:
            text_len = nxt - begin  # truncated message
        text = text_data[begin : begin + text_len]
        cid = _u(infos, inf + cid_off, 4) if cid_off is not None else None
        out.append(format_record(_u(infos, inf + ts_off, 8), text, cid))
    return KernelLog(b"".join(out), "lockless", len(out))


# ----------------------------------------------------------------------------
# 3.5 - 5.9: struct printk_log records
# ----------------------------------------------------------------------------


def _printk_log(mem: _Mem, log_buf: int, log_buf_len: int, partial: bool) -> KernelLog:
    """Walk ``printk_log`` records from log_first_idx (or clear_idx) to log_next_idx."""
    vi = mem.vi
    first_sym = vi.symbol("clear_idx") if partial else None
    first_idx = mem.word(first_sym or vi.require("SYMBOL", "log_first_idx"), 4, "log_first_idx")
    next_idx = mem.word(vi.require("SYMBOL", "log_next_idx"), 4, "log_next_idx")
    hdr = vi.size("printk_log")
    len_off = vi.offset("printk_log.len")
    text_len_off = vi.offset("printk_log.text_len")
    ts_off = vi.offset("printk_log.ts_nsec")
    if hdr is None or len_off is None or text_len_off is None or ts_off is None:
        raise VmcoreinfoError("SIZE(printk_log)", "VMCOREINFO lacks the printk_log structure needed for the log")
    cid_off = vi.offset("printk_log.caller_id")
    buf = mem.read(log_buf, log_buf_len, "log_buf")

    def rec_len(pos: int) -> int:
        return _u(buf, pos + len_off, 2)

    out: list[bytes] = []
    seen: set[int] = set()
    pos = first_idx
    if pos > log_buf_len - hdr:
        raise CorruptLogError(log_buf + pos, f"printk log index {pos:#x} outside log_buf ({log_buf:#x})", b"")
    while pos != next_idx:
        if pos in seen:
            # makedumpfile (detect_cycle.c) keeps the records up to one full
            # turn of the cycle: each distinct record once, then fails.
            raise CorruptLogError(
                log_buf + pos,
                f"cycle in the printk log at index {pos:#x} (log_buf = {log_buf:#x}); the log buffer is corrupt",
                b"".join(out),
            )
        seen.add(pos)
        # A zero length marks the end of the buffer: the record is at the start.
        length = rec_len(pos)
        rec = pos if length else 0
        text_len = _u(buf, rec + text_len_off, 2)
        cid = _u(buf, rec + cid_off, 4) if cid_off is not None else None
        out.append(format_record(_u(buf, rec + ts_off, 8), buf[rec + hdr : rec + hdr + text_len], cid))
        pos = pos + length if length else rec_len(0)
        if pos > log_buf_len - hdr:
            # makedumpfile checks every next index, the last one included.
            raise CorruptLogError(
                log_buf + pos,
                f"printk log index {pos:#x} outside log_buf (log_buf = {log_buf:#x}); the log buffer is corrupt",
                b"".join(out),
            )
    return KernelLog(b"".join(out), "printk_log", len(out))


# ----------------------------------------------------------------------------
# before 3.5: plain text
# ----------------------------------------------------------------------------

_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def _kernel_version(vi: VmcoreInfo) -> tuple[int, int, int] | None:
    m = _RELEASE.match(vi.osrelease or "")
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _plain(mem: _Mem, log_buf: int, log_buf_len: int, version: tuple[int, int, int] | None) -> KernelLog:
    """Copy the text of a pre-3.5 ``log_buf`` (the last log_buf_len bytes up to log_end)."""
    vi = mem.vi
    # 2.6.25 (commit 6a4bbb94) changed log_end from unsigned long to unsigned.
    width = 8 if version is not None and version < (2, 6, 25) else 4
    log_end = mem.word(vi.require("SYMBOL", "log_end"), width, "log_end")
    if log_end < log_buf_len:
        text = mem.read(log_buf, log_end, "log_buf")
    else:
        index = log_end & (log_buf_len - 1)
        text = mem.read(log_buf + index, log_buf_len - index, "log_buf") + mem.read(log_buf, index, "log_buf")
    return KernelLog(text, "plain", len(text))


# ----------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------


def extract(source: Source, partial: bool = False, walker: KernelReader | None = None) -> KernelLog:
    """Extract the kernel log of a dump.

    Args:
        source: The dump (needs VMCOREINFO).
        partial: Only the records since the last ``dmesg --clear``
            (``--partial-dmesg``: ``clear_seq`` or ``clear_idx``).
        walker: Reader of kernel memory to use (the architecture's :class:`~vmcorepack.kernel.walk.Walker`
            of ``source`` if None).

    Returns:
        The log.

    Raises:
        VmcoreinfoError: VMCOREINFO lacks what the kernel's layout needs.
        KernelMemoryError: Structures unreadable or inconsistent
            (:class:`CorruptLogError` when part of the log was formatted).
        UnsupportedError: The kernel exports no known log layout.
    """
    machine = arch.for_source(source)  # the log's structures are read through the kernel's page tables
    vi = source.vmcoreinfo
    if vi is None:
        raise VmcoreinfoError("*", f"{source.path}: --dump-dmesg needs VMCOREINFO (in the vmcore or with -i)")
    mem = _Mem(walker or machine.walker(source), vi)
    if vi.symbol("prb") is not None:
        return _lockless(mem, partial)
    if vi.symbol("log_buf") is None or vi.symbol("log_buf_len") is None:
        raise UnsupportedError(f"{source.path}: VMCOREINFO has neither SYMBOL(prb) nor SYMBOL(log_buf)/log_buf_len")
    log_buf = mem.word(vi.require("SYMBOL", "log_buf"), 8, "log_buf")
    # log_buf_len is an int in every kernel that has it.
    log_buf_len = mem.word(vi.require("SYMBOL", "log_buf_len"), 4, "log_buf_len")
    if log_buf_len <= 0 or log_buf_len > MAX_LOG_BYTES:
        raise KernelMemoryError(vi.require("SYMBOL", "log_buf_len"), f"log_buf_len {log_buf_len} is implausible")
    if vi.symbol("log_end") is not None:
        version = _kernel_version(vi)
        if version is None or version < (3, 5, 0):
            return _plain(mem, log_buf, log_buf_len, version)
    if vi.symbol("log_first_idx") is None or vi.symbol("log_next_idx") is None:
        raise VmcoreinfoError("SYMBOL(log_first_idx)", "VMCOREINFO lacks the variable-length record symbols")
    return _printk_log(mem, log_buf, log_buf_len, partial)
