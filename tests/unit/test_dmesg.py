"""dmesg extraction on synthetic printk structures: formatting, rings, partial logs, corruption."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from vmcorepack import dmesg
from vmcorepack.errors import KernelMemoryError
from vmcorepack.vmcoreinfo import VmcoreInfo


class FakeMem:
    """Kernel virtual memory made of a few byte regions."""

    def __init__(self) -> None:
        self.regions: dict[int, bytes] = {}

    def put(self, vaddr: int, data: bytes) -> None:
        self.regions[vaddr] = data

    def read(self, vaddr: int, size: int) -> bytes:
        for base, data in self.regions.items():
            if base <= vaddr and vaddr + size <= base + len(data):
                return data[vaddr - base : vaddr - base + size]
        raise KernelMemoryError(vaddr, "not mapped")


def source(lines: str) -> SimpleNamespace:
    return SimpleNamespace(path="<synthetic>", vmcoreinfo=VmcoreInfo.parse(lines.encode()), e_machine=None)


# ----------------------------------------------------------------------------
# Formatting (makedumpfile dump_record)
# ----------------------------------------------------------------------------


def test_format_plain_and_caller_id() -> None:
    assert dmesg.format_record(1_234_567_891, b"hello", None) == b"[    1.234567] hello\n"
    assert dmesg.format_record(5, b"x", 17) == b"[    0.000000] [     T17] x\n"
    assert dmesg.format_record(123456_000_000_000, b"x", 0x80000001) == b"[123456.000000] [      C1] x\n"


def test_format_escapes_like_signed_char_sprintf() -> None:
    # isprint || isspace kept (tab, CR, VT, FF too); others \x%02x of a signed char.
    text = b"a\tb\rc\x0bd\x0ce\x00f\x7fg\x1b\xe2\x82\xac"
    assert dmesg.format_record(0, text, None) == (
        b"[    0.000000] a\tb\rc\x0bd\x0ce\\x00f\\x7fg\\x1b\\xffffffe2\\xffffff82\\xffffffac\n"
    )


def test_format_newline_indents_continuation() -> None:
    out = dmesg.format_record(0, b"one\ntwo\n", 1)
    pad = b" " * len(b"[    0.000000] [      T1] ")
    assert out == b"[    0.000000] [      T1] one\n" + pad + b"two\n" + pad + b"\n"


# ----------------------------------------------------------------------------
# Lockless ring buffer (5.10+)
# ----------------------------------------------------------------------------

LOCKLESS_VI = """OSRELEASE=6.1.0
SYMBOL(prb)=ffffffff81000000
SYMBOL(clear_seq)=ffffffff81000800
SIZE(printk_ringbuffer)=88
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(prb_data_ring.head_lpos)=16
OFFSET(prb_data_ring.tail_lpos)=24
OFFSET(atomic_long_t.counter)=0
SIZE(latched_seq)=24
OFFSET(latched_seq.val)=8
"""
PRB_PTR, PRB, DESCS, INFOS, DATA, CLEAR = (
    0xFFFFFFFF81000000,
    0xFFFFFFFF81000100,
    0xFFFFFFFF81001000,
    0xFFFFFFFF81002000,
    0xFFFFFFFF81003000,
    0xFFFFFFFF81000800,
)
COUNT_BITS, SIZE_BITS = 3, 8
COUNT, RING = 1 << COUNT_BITS, 1 << SIZE_BITS
COMMITTED, FINALIZED, REUSABLE = 1, 2, 3


def build_ring(
    records: list[tuple[int, bytes]], first_seq: int = 0, clear_seq: int = 0, state: int = FINALIZED
) -> tuple[FakeMem, list[int]]:
    """Write records (ts, text) with seqs from first_seq; ids equal seqs (id ≡ seq mod count, as in the kernel)."""
    descs = bytearray(24 * COUNT)
    infos = bytearray(88 * COUNT)
    data = bytearray(RING)
    lpos = first_seq * 40  # arbitrary logical start
    ids = []
    for i, (ts, text) in enumerate(records):
        seq = first_seq + i
        rid = seq
        size = 8 + len(text)
        begin = lpos
        if begin % RING + size > RING:
            begin = (begin // RING + 1) * RING  # wrap: data block at the ring start
        nxt = begin + size
        data[begin % RING : begin % RING + 8] = struct.pack("<Q", rid)
        data[begin % RING + 8 : begin % RING + size] = text
        slot = rid % COUNT
        struct.pack_into("<QQQ", descs, slot * 24, (state << 62) | rid, lpos, nxt)
        struct.pack_into("<QQHxxI", infos, slot * 88, seq, ts, len(text), 100 + i)
        lpos = nxt
        ids.append(rid)
    prb = bytearray(88)
    struct.pack_into("<IxxxxQQQQ", prb, 0, COUNT_BITS, DESCS, INFOS, ids[-1], ids[0])
    struct.pack_into("<IxxxxQQQ", prb, 48, SIZE_BITS, DATA, lpos, 0)
    mem = FakeMem()
    mem.put(PRB_PTR, struct.pack("<Q", PRB))
    mem.put(PRB, bytes(prb))
    mem.put(DESCS, bytes(descs))
    mem.put(INFOS, bytes(infos))
    mem.put(DATA, bytes(data))
    # latched_seq: seqcount 2 (even: val[0] valid), val[0] = clear_seq.
    mem.put(CLEAR, struct.pack("<QQQ", 2, clear_seq, 0))
    return mem, ids


def expected(records: list[tuple[int, bytes]], first: int = 0) -> bytes:
    return b"".join(dmesg.format_record(ts, text, 100 + first + i) for i, (ts, text) in enumerate(records[first:]))


def test_lockless_in_order_with_wrapped_block() -> None:
    recs = [(i * 1_000_000, b"message number %d with some text" % i) for i in range(6)]
    mem, _ = build_ring(recs, first_seq=3)
    log = dmesg.extract(source(LOCKLESS_VI), walker=mem)  # type: ignore[arg-type]
    assert log.layout == "lockless"
    assert log.text == expected(recs)


def test_lockless_skips_reserved_and_stale_descriptors() -> None:
    recs = [(i, b"r%d" % i) for i in range(4)]
    mem, ids = build_ring(recs)
    descs = bytearray(mem.regions[DESCS])
    struct.pack_into("<Q", descs, (ids[1] % COUNT) * 24, (REUSABLE << 62) | ids[1])
    struct.pack_into("<Q", descs, (ids[2] % COUNT) * 24, (FINALIZED << 62) | (ids[2] + COUNT))  # other lap
    mem.put(DESCS, bytes(descs))
    log = dmesg.extract(source(LOCKLESS_VI), walker=mem)  # type: ignore[arg-type]
    assert log.text == dmesg.format_record(0, b"r0", 100) + dmesg.format_record(3, b"r3", 103)


def test_lockless_partial_uses_latched_clear_seq() -> None:
    recs = [(i, b"r%d" % i) for i in range(6)]
    mem, _ = build_ring(recs, clear_seq=4)
    log = dmesg.extract(source(LOCKLESS_VI), partial=True, walker=mem)  # type: ignore[arg-type]
    assert log.text == expected(recs, 4)
    # Without --partial-dmesg everything is printed.
    assert dmesg.extract(source(LOCKLESS_VI), walker=mem).text == expected(recs)  # type: ignore[arg-type]


def test_lockless_truncated_text_and_bad_head_id() -> None:
    mem, ids = build_ring([(0, b"abcdef")])
    infos = bytearray(mem.regions[INFOS])
    struct.pack_into("<H", infos, (ids[0] % COUNT) * 88 + 16, 200)  # text_len beyond the block
    mem.put(INFOS, bytes(infos))
    assert dmesg.extract(source(LOCKLESS_VI), walker=mem).text == dmesg.format_record(0, b"abcdef", 100)  # type: ignore[arg-type]
    prb = bytearray(mem.regions[PRB])
    struct.pack_into("<Q", prb, 24, (1 << 63) | ids[0])
    mem.put(PRB, bytes(prb))
    with pytest.raises(KernelMemoryError, match="head_id"):
        dmesg.extract(source(LOCKLESS_VI), walker=mem)  # type: ignore[arg-type]


def test_lockless_unreadable_ring_is_one_error() -> None:
    mem, _ = build_ring([(0, b"x")])
    del mem.regions[DATA]
    with pytest.raises(KernelMemoryError, match="text_data_ring"):
        dmesg.extract(source(LOCKLESS_VI), walker=mem)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# struct printk_log records (3.5 - 5.9)
# ----------------------------------------------------------------------------

PRINTK_LOG_VI = """OSRELEASE=5.4.0
SYMBOL(log_buf)=ffffffff82000000
SYMBOL(log_buf_len)=ffffffff82000008
SYMBOL(log_first_idx)=ffffffff82000010
SYMBOL(log_next_idx)=ffffffff82000018
SYMBOL(clear_idx)=ffffffff82000020
SIZE(printk_log)=16
OFFSET(printk_log.ts_nsec)=0
OFFSET(printk_log.len)=8
OFFSET(printk_log.text_len)=10
"""
LOG_BUF = 0xFFFFFFFF83000000
LOG_LEN = 256


def log_record(ts: int, text: bytes, dict_: bytes = b"") -> bytes:
    size = (16 + len(text) + len(dict_) + 7) // 8 * 8
    rec = struct.pack("<QHHBBH", ts, size, len(text), len(dict_), 0, 0) + text + dict_
    return rec.ljust(size, b"\0")


def build_log(buf: bytes, first: int, nxt: int, clear: int = 0) -> FakeMem:
    mem = FakeMem()
    mem.put(0xFFFFFFFF82000000, struct.pack("<QIxxxxIxxxxIxxxxIxxxx", LOG_BUF, len(buf), first, nxt, clear))
    mem.put(LOG_BUF, buf)
    return mem


def test_printk_log_wraps_at_zero_length_marker() -> None:
    a, b, c = log_record(1, b"first"), log_record(2, b"second", b"SUBSYSTEM=pci"), log_record(3, b"third")
    buf = bytearray(LOG_LEN)
    buf[0 : len(c)] = c  # wrapped record at the start
    start = 200
    buf[start - len(a) - len(b) : start - len(b)] = a
    buf[start - len(b) : start] = b
    # buf[start:start+16] is zero: a len == 0 end-of-buffer marker.
    mem = build_log(bytes(buf), start - len(a) - len(b), len(c))
    log = dmesg.extract(source(PRINTK_LOG_VI), walker=mem)  # type: ignore[arg-type]
    assert log.layout == "printk_log"
    assert log.text == b"".join(
        dmesg.format_record(t, s, None) for t, s in ((1, b"first"), (2, b"second"), (3, b"third"))
    )
    # --partial-dmesg starts at clear_idx.
    mem = build_log(bytes(buf), start - len(a) - len(b), len(c), clear=start - len(b))
    part = dmesg.extract(source(PRINTK_LOG_VI), partial=True, walker=mem)  # type: ignore[arg-type]
    assert part.text == dmesg.format_record(2, b"second", None) + dmesg.format_record(3, b"third", None)


def test_printk_log_cycle_keeps_records_then_fails() -> None:
    a, b = log_record(1, b"one"), log_record(2, b"two")
    buf = bytearray(LOG_LEN)
    buf[0 : len(a)] = a
    buf[len(a) : len(a) + len(b)] = b
    # After them a zero-length marker wraps to index 0: a loop that never reaches next_idx.
    mem = build_log(bytes(buf), 0, 128)
    with pytest.raises(dmesg.CorruptLogError, match="cycle") as ei:
        dmesg.extract(source(PRINTK_LOG_VI), walker=mem)  # type: ignore[arg-type]
    # The marker prints the record at index 0 as itself, then the walk returns to "two".
    one, two = dmesg.format_record(1, b"one", None), dmesg.format_record(2, b"two", None)
    assert ei.value.partial == one + two + one


def test_printk_log_index_outside_buffer() -> None:
    buf = bytearray(LOG_LEN)
    rec = bytearray(log_record(1, b"one"))
    struct.pack_into("<H", rec, 8, 0x4000)
    buf[0 : len(rec)] = rec
    mem = build_log(bytes(buf), 0, 64)
    with pytest.raises(dmesg.CorruptLogError, match="outside log_buf") as ei:
        dmesg.extract(source(PRINTK_LOG_VI), walker=mem)  # type: ignore[arg-type]
    assert ei.value.partial == dmesg.format_record(1, b"one", None)


# ----------------------------------------------------------------------------
# Plain text log_buf (before 3.5)
# ----------------------------------------------------------------------------

PLAIN_VI = """OSRELEASE=2.6.32-431.el6.x86_64
SYMBOL(log_buf)=ffffffff82000000
SYMBOL(log_buf_len)=ffffffff82000008
SYMBOL(log_end)=ffffffff82000010
"""


@pytest.mark.parametrize(("log_end", "want"), [(5, b"<6>ab"), (16 + 3, b"abc<4>efghijk<6>")])
def test_plain_log_buf(log_end: int, want: bytes) -> None:
    text = b"<6>abc<4>efghijklmn"[:16]
    mem = FakeMem()
    mem.put(0xFFFFFFFF82000000, struct.pack("<QIxxxxI", LOG_BUF, 16, log_end))
    mem.put(LOG_BUF, text)
    log = dmesg.extract(source(PLAIN_VI), walker=mem)  # type: ignore[arg-type]
    assert log.layout == "plain"
    assert log.text == want


def test_no_log_symbols_is_unsupported() -> None:
    from vmcorepack.errors import UnsupportedError

    with pytest.raises(UnsupportedError):
        dmesg.extract(source("OSRELEASE=6.1\n"), walker=FakeMem())  # type: ignore[arg-type]
