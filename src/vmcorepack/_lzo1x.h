/*
 * An LZO1X-1 compressor that writes the same bytes as liblzo2's
 * lzo1x_1_compress() (LZO 2.x, the build makedumpfile links), without its
 * per-call dictionary clear.
 *
 * Why not just call liblzo2: lzo1x_1_compress() zeroes its whole 16384-entry
 * dictionary (32 KiB) before every block, and the memset evicts the page being
 * compressed from L1.  The output only depends on the dictionary *reading as
 * zero* where this block has not written, so this version remembers which
 * slots it wrote and clears just those (or the whole table when a page wrote
 * so many that the memset is cheaper).  `benchmarks/micro.py` ("LZO encoders",
 * fresh dictionary per call against the page loop that keeps it): 2.02 ->
 * 1.02 us per page on the 8 GiB generator image, 4.38 -> 4.02 on the real
 * fixture's first 20,000 pages, where most pages probe too often to list.
 *
 * The format and the compressor's decisions, as liblzo2 2.10 makes them on a
 * little-endian machine (each one changes the output if done differently):
 *  - Input is cut into blocks of at most 49152 bytes; each starts with an
 *    empty dictionary (every slot reads as position 0 of the block).  Blocks
 *    are only searched while more than 20 bytes are left and pending + block
 *    is at least 32; the rest is one literal run.
 *    Literals still pending at the end of a block (at most the block's last
 *    20 bytes, or all of it) are carried into the next block's first run.
 *  - The dictionary has 2^14 slots of 16-bit block offsets, indexed by
 *    (load_le32(p) * 0x1824429d mod 2^32) >> 18.  Every probe overwrites its
 *    slot with the probing position, match or not.
 *  - Probing starts at block offset 4 - carry (0 when carry >= 4) and first
 *    advances once: p += 1 + (p - lit) / 32, where lit is where the pending
 *    literals start in the block; the same step follows every failed probe.
 *    After a match, probing resumes right after it without a step.
 *  - A probe at p matches when the 4 bytes at the slot's position equal the
 *    4 bytes at p.  Probing stops at the block end minus 20.
 *  - Match length: 4 plus the common prefix after that, measured 8 bytes at a
 *    time; if the position reaches the block end minus 20 during the 8-byte
 *    steps, the length is what has been counted so far (not extended).
 *  - Literal runs before a match: 1-3 bytes go in the low bits of the byte two
 *    back (op[-2]); up to 18 as one byte t - 3; longer as 0, then 255-steps
 *    as zero bytes, then the remainder of t - 18.
 *  - Matches: length <= 8 and distance <= 2048 as 2 bytes
 *    ((len-1) << 5 | ((d-1) & 7) << 2, (d-1) >> 3); distance <= 16384 as
 *    32 | (len-2) (or 32, then the length beyond 33 in 255-steps) and
 *    (d-1) << 2, (d-1) >> 6; farther as 16 | ((d-16384) >> 11 & 8) | (len-2)
 *    (or the length beyond 9 in 255-steps) and (d-16384) << 2, >> 6.
 *  - The final literal run: if nothing was output yet and it is at most 238
 *    bytes, one byte 17 + t; otherwise as above.  Then the end marker
 *    17, 0, 0.
 * tests/unit/test_native.py checks the bytes against python-lzo (liblzo2) on
 * real and generated pages of 4, 16 and 64 KiB and on odd lengths.
 */
#ifndef VMCOREPACK_LZO1X_H
#define VMCOREPACK_LZO1X_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the LZO1X-1 encoder reads words as little-endian"
#endif

#define LZ_DICT_BITS 14
#define LZ_DICT_SLOTS (1u << LZ_DICT_BITS)
#define LZ_BLOCK 49152
/* A block that probed more often than this clears the whole table (one 32 KiB
 * memset) instead of its slots one by one, and the next block skips the slot
 * list: pages of one kind tend to come together. */
#define LZ_LIST_LIMIT 512

struct lz_state {
    uint16_t dict[LZ_DICT_SLOTS];
    uint16_t written[LZ_BLOCK]; /* slots written by this block, when listing */
    size_t probes;              /* dictionary probes the last block made */
    int listing;                /* this block records the slots it writes */
};

static inline uint32_t lz_load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t lz_load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline void lz_state_init(struct lz_state *st)
{
    memset(st->dict, 0, sizeof st->dict);
    st->probes = 0;
    st->listing = 1;
}

/* Zero bytes for a length that does not fit its field, then the rest. */
static inline uint8_t *lz_put_count(uint8_t *op, size_t n)
{
    while (n > 255) {
        n -= 255;
        *op++ = 0;
    }
    *op++ = (uint8_t)n;
    return op;
}

/* The header of a literal run of t bytes (t > 0) that follows earlier output. */
static inline uint8_t *lz_put_run_header(uint8_t *op, size_t t)
{
    if (t <= 3)
        op[-2] |= (uint8_t)t;
    else if (t <= 18)
        *op++ = (uint8_t)(t - 3);
    else {
        *op++ = 0;
        op = lz_put_count(op, t - 18);
    }
    return op;
}

/* A literal run inside a block: the source has at least 20 readable bytes past
 * the run and the output has slack, so copy in 16-byte steps. */
static inline uint8_t *lz_put_run(uint8_t *op, const uint8_t *from, size_t t)
{
    op = lz_put_run_header(op, t);
    for (size_t done = 0; done < t; done += 16)
        memcpy(op + done, from + done, 16);
    return op + t;
}

#if defined(__GNUC__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline size_t lz_match_len(const uint8_t *ip, const uint8_t *m, const uint8_t *limit)
{
    size_t len = 4;
    uint64_t diff = lz_load64(ip + len) ^ lz_load64(m + len);

    if (diff == 0) {
#if defined(__GNUC__) && defined(__SSE2__)
        /* Two of the 8-byte steps below at once while both would find their
         * bytes equal and stay short of the limit, which is when they would
         * only add 16: the length stays exactly the 8-byte loop's.  The
         * loads end before limit + 8, inside the block's last 20 bytes.
         * Long matches (zero runs, repeated records) spend most of
         * lz_compress's instructions here (callgrind). */
        while (ip + len + 16 < limit) {
            __m128i a = _mm_loadu_si128((const __m128i *)(ip + len + 8));
            __m128i b = _mm_loadu_si128((const __m128i *)(m + len + 8));
            if (_mm_movemask_epi8(_mm_cmpeq_epi8(a, b)) != 0xffff)
                break;
            len += 16;
        }
#endif
        do {
            len += 8;
            diff = lz_load64(ip + len) ^ lz_load64(m + len);
            if (ip + len >= limit)
                return len;
        } while (diff == 0);
    }
    return len + (size_t)__builtin_ctzll(diff) / 8;
}

static inline uint8_t *lz_put_match(uint8_t *op, size_t len, size_t dist)
{
    if (len <= 8 && dist <= 0x800) {
        dist -= 1;
        *op++ = (uint8_t)(((len - 1) << 5) | ((dist & 7) << 2));
        *op++ = (uint8_t)(dist >> 3);
        return op;
    }
    if (dist <= 0x4000) {
        dist -= 1;
        if (len <= 33)
            *op++ = (uint8_t)(32 | (len - 2));
        else {
            *op++ = 32;
            op = lz_put_count(op, len - 33);
        }
    } else {
        dist -= 0x4000;
        uint8_t marker = (uint8_t)(16 | ((dist >> 11) & 8));
        if (len <= 9)
            *op++ = (uint8_t)(marker | (len - 2));
        else {
            *op++ = marker;
            op = lz_put_count(op, len - 9);
        }
    }
    *op++ = (uint8_t)(dist << 2);
    *op++ = (uint8_t)(dist >> 6);
    return op;
}

/* One block; carry literals precede `in`.  Returns the literals left pending.
 * Always inlined, so that each call with a constant `listing` gets its own
 * probe loop without the per-probe test. */
static inline __attribute__((always_inline)) size_t lz_block(struct lz_state *st, const uint8_t *in, size_t len,
                                                             uint8_t **opp, size_t carry, int listing)
{
    const uint8_t *const end = in + len;
    const uint8_t *const limit = end - 20;
    const uint8_t *lit = in;
    const uint8_t *ip = in + (carry < 4 ? 4 - carry : 0);
    uint16_t *const dict = st->dict;
    uint16_t *wp = st->written;
    size_t probes = 0;
    uint8_t *op = *opp;

    ip += 1 + ((size_t)(ip - lit) >> 5);
    for (;;) {
        const uint8_t *m;
        for (;;) {
            if (ip >= limit)
                goto done;
            uint32_t dv = lz_load32(ip);
            uint32_t slot = (dv * 0x1824429dU) >> (32 - LZ_DICT_BITS);
            m = in + dict[slot];
            dict[slot] = (uint16_t)(ip - in);
            probes++;
            if (listing)
                *wp++ = (uint16_t)slot;
            if (lz_load32(m) == dv)
                break;
            ip += 1 + ((size_t)(ip - lit) >> 5);
        }
        lit -= carry;
        carry = 0;
        if (ip > lit)
            op = lz_put_run(op, lit, (size_t)(ip - lit));
        size_t mlen = lz_match_len(ip, m, limit);
        op = lz_put_match(op, mlen, (size_t)(ip - m));
        ip += mlen;
        lit = ip;
    }
done:
    st->probes = probes;
    *opp = op;
    return (size_t)(end - (lit - carry));
}

/* Make every slot read as zero again, for the next block. */
static inline void lz_clear(struct lz_state *st, int listed)
{
    if (listed && st->probes <= LZ_LIST_LIMIT) {
        for (size_t i = 0; i < st->probes; i++)
            st->dict[st->written[i]] = 0;
    } else {
        memset(st->dict, 0, sizeof st->dict);
    }
    /* Pages of one kind tend to come together: a block that probed a lot
     * predicts that the next one will too, and then listing is wasted. */
    st->listing = st->probes <= LZ_LIST_LIMIT;
}

/*
 * Compress n bytes from src into out, which must hold n + n/16 + 64 + 3 bytes
 * plus 16 bytes of slack.  Returns the compressed length.  st must have been
 * set up by lz_state_init() and is left ready for the next call.
 */
static size_t lz_compress(struct lz_state *st, const uint8_t *src, size_t n, uint8_t *out)
{
    const uint8_t *ip = src;
    uint8_t *op = out;
    size_t left = n, pending = 0;

    while (left > 20) {
        size_t block = left < LZ_BLOCK ? left : LZ_BLOCK;
        /* liblzo2's guard against pointer overflow, (pending + block) / 32
         * == 0, also sends everything shorter than 32 bytes out as literals. */
        if ((pending + block) >> 5 == 0)
            break;
        int listing = st->listing;
        if (listing)
            pending = lz_block(st, ip, block, &op, pending, 1);
        else
            pending = lz_block(st, ip, block, &op, pending, 0);
        lz_clear(st, listing);
        ip += block;
        left -= block;
    }
    pending += left;
    if (pending > 0) {
        if (op == out && pending <= 238)
            *op++ = (uint8_t)(17 + pending);
        else
            op = lz_put_run_header(op, pending);
        memcpy(op, src + n - pending, pending);
        op += pending;
    }
    *op++ = 17;
    *op++ = 0;
    *op++ = 0;
    return (size_t)(op - out);
}

/*
 * The decoder: LZO1X as liblzo2's lzo1x_decompress_safe() reads it (every
 * LZO1X compressor's output, not only LZO1X-1's), for pages read back from
 * dumps, which are untrusted input.  Every read of the input and every write
 * of the output is checked first, and a match may only reach back into what
 * has been written; anything else is an error, never a read or write out of
 * bounds.  The instructions (state = literals the previous instruction
 * copied after itself; 4 = a literal run):
 *  - First byte 18..255: t = byte - 17 literals, state min(t, 4).
 *  - 0..15, state 0: a literal run of 3 + (t ?: 15 + extension) bytes.
 *  - 0..15, state 1..3: a 2-byte match at 1 + (t >> 2) + (next << 2).
 *  - 0..15, state 4: a 3-byte match at 2049 + (t >> 2) + (next << 2).
 *  - 64..255: a match of (t >> 5) + 1 bytes at 1 + (t >> 2 & 7) + (next << 3).
 *  - 32..63: a match of 2 + (t & 31 ?: 31 + extension) bytes at 1 + (le16 >> 2).
 *  - 16..31: a match of 2 + (t & 7 ?: 7 + extension) bytes at
 *    16384 + ((t & 8) << 11) + (le16 >> 2); distance 16384 ends the stream.
 *  Matches carry S = the low 2 bits of t (64..255, 0..15) or of le16: S
 *  literals follow, and S is the next state.  An extension is 255 per zero
 *  byte, then the first non-zero byte.  liblzo2 accepts any length on the end
 *  marker and ignores its S; so does this.
 * tests/unit/test_native.py checks it against liblzo2's output and feeds it
 * truncated and corrupted streams.
 */

/* Base plus an extension (255 per zero byte, then a non-zero byte); -1 when
 * the input ends first or the sum passes `limit` (what the output can take). */
static inline int lz_ext(const uint8_t **ipp, const uint8_t *ip_end, size_t base, size_t limit, size_t *len)
{
    const uint8_t *ip = *ipp;
    size_t n = base;

    for (;;) {
        if (ip == ip_end || n > limit)
            return -1;
        if (*ip != 0)
            break;
        n += 255;
        ip++;
    }
    n += *ip++;
    *ipp = ip;
    *len = n;
    return 0;
}

/*
 * Decode `in_len` bytes of LZO1X into `out`, at most `out_cap` bytes.
 * Returns the decoded length, or -1 when the stream is malformed, truncated,
 * has bytes after its end marker, or would overrun `out`.
 */
static ptrdiff_t lz_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap)
{
    const uint8_t *ip = in;
    const uint8_t *const ip_end = in + in_len;
    uint8_t *op = out;
    uint8_t *const op_end = out + out_cap;
    size_t state = 0, t, len, dist, next;

#define LZ_NEED_IN(n) \
    if ((size_t)(ip_end - ip) < (size_t)(n)) \
        return -1
#define LZ_NEED_OUT(n) \
    if ((size_t)(op_end - op) < (size_t)(n)) \
        return -1

    LZ_NEED_IN(1);
    if (*ip > 17) {
        t = (size_t)(*ip++ - 17);
        LZ_NEED_IN(t);
        LZ_NEED_OUT(t);
        memcpy(op, ip, t);
        op += t;
        ip += t;
        state = t < 4 ? t : 4;
    }
    for (;;) {
        LZ_NEED_IN(1);
        t = *ip++;
        if (t < 16) {
            if (state == 0) {
                if (t != 0)
                    len = t + 3;
                else if (lz_ext(&ip, ip_end, 18, (size_t)(op_end - op), &len) < 0)
                    return -1;
                LZ_NEED_IN(len);
                LZ_NEED_OUT(len);
                memcpy(op, ip, len);
                op += len;
                ip += len;
                state = 4;
                continue;
            }
            LZ_NEED_IN(1);
            dist = (t >> 2) + ((size_t)*ip++ << 2) + (state == 4 ? 2049 : 1);
            len = state == 4 ? 3 : 2;
            next = t & 3;
        } else if (t >= 64) {
            LZ_NEED_IN(1);
            dist = ((t >> 2) & 7) + ((size_t)*ip++ << 3) + 1;
            len = (t >> 5) + 1;
            next = t & 3;
        } else {
            size_t field = t >= 32 ? t & 31 : t & 7;
            if (field != 0)
                len = field + 2;
            else if (lz_ext(&ip, ip_end, t >= 32 ? 33 : 9, (size_t)(op_end - op), &len) < 0)
                return -1;
            LZ_NEED_IN(2);
            size_t le16 = (size_t)ip[0] | ((size_t)ip[1] << 8);
            ip += 2;
            next = le16 & 3;
            if (t >= 32) {
                dist = (le16 >> 2) + 1;
            } else {
                dist = ((t & 8) << 11) + (le16 >> 2);
                if (dist == 0)
                    return ip == ip_end ? (ptrdiff_t)(op - out) : -1;
                dist += 16384;
            }
        }
        if (dist > (size_t)(op - out))
            return -1;
        LZ_NEED_OUT(len);
        const uint8_t *m = op - dist;
        if (dist >= len) {
            memcpy(op, m, len);
            op += len;
        } else {
            /* Overlapping: each byte may be one this match wrote. */
            for (size_t i = 0; i < len; i++)
                *op++ = *m++;
        }
        LZ_NEED_IN(next);
        LZ_NEED_OUT(next);
        memcpy(op, ip, next);
        op += next;
        ip += next;
        state = next;
    }
#undef LZ_NEED_IN
#undef LZ_NEED_OUT
}

#endif
