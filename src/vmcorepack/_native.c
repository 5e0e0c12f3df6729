/*
 * vmcorepack._native: the per-page loop of the page encoder, in C.
 *
 * Python pays about a microsecond per page to call a codec binding (slice the
 * page into a bytes object, parse arguments, allocate the result, resize it);
 * with LZO that is as much as the compression itself.  This module runs the
 * whole loop for a chunk of pages in one call, with the GIL released:
 * reading (one preadv per stretch of the input, 64 KiB at a time, so that
 * each page is compressed while still in cache), zero test, compression into
 * one output buffer, and the raw fallback.
 *
 * It must produce exactly what makedumpfile writes (docs/kdump-format.md
 * §5.3): LZO1X-1 as liblzo2's lzo1x_1_compress() writes it (our own encoder,
 * _lzo1x.h, which skips liblzo2's 32 KiB dictionary clear per page), and zlib
 * level 1 as compress2() does it (deflateInit(level 1) = deflateInit2(1,
 * Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY); deflateReset() between pages gives
 * the same stream as a fresh deflateInit()).  A page is stored compressed only
 * when the result is strictly smaller than a page; otherwise the raw page is
 * stored.
 *
 * pipeline.py falls back to the pure-Python path when this module is absent;
 * tests/unit/test_native.py checks both paths give the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <zlib.h>

#include "_lzo1x.h"

enum { CODEC_NONE = 0, CODEC_ZLIB = 1, CODEC_LZO = 2 };

/* Worst-case growth of one compressed page over its input, for the caller's
 * buffer: LZO1X needs n + n/16 + 64 + 3 bytes, and _lzo1x.h copies literals in
 * 16-byte steps (up to 15 bytes past the run); zlib's compressBound is smaller. */
static Py_ssize_t headroom(Py_ssize_t page_size)
{
    return page_size / 16 + 64 + 3 + 16;
}

static int page_is_zero(const unsigned char *p, Py_ssize_t n)
{
    const uint64_t *w = (const uint64_t *)p;
    Py_ssize_t words = n / 8;

    /* Most non-zero pages differ from zero in their first words; after that,
     * OR 64 bytes at a time (a loop the compiler vectorises) so that a zero
     * page, which has to be read to its end, costs one pass at memory speed. */
    for (Py_ssize_t i = 0; i < words && i < 4; i++)
        if (w[i])
            return 0;
    for (Py_ssize_t i = 0; i + 8 <= words; i += 8) {
        uint64_t acc = 0;
        for (int k = 0; k < 8; k++)
            acc |= w[i + k];
        if (acc)
            return 0;
    }
    for (Py_ssize_t i = words - words % 8; i < words; i++)
        if (w[i])
            return 0;
    return 1;
}

/* One codec's state for a run of pages. */
struct encoder {
    int codec;
    int share_zero;
    Py_ssize_t page_size;
    struct lz_state *lz;
    z_stream zs;
    int zinit;
};

/* Returns 0, or -1 when the codec state cannot be allocated. */
static int encoder_open(struct encoder *e, int codec, int share_zero, Py_ssize_t page_size)
{
    memset(e, 0, sizeof *e);
    e->codec = codec;
    e->share_zero = share_zero;
    e->page_size = page_size;
    if (codec == CODEC_LZO) {
        e->lz = malloc(sizeof *e->lz);
        if (e->lz == NULL)
            return -1;
        lz_state_init(e->lz);
    } else if (codec == CODEC_ZLIB) {
        if (deflateInit2(&e->zs, 1, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        e->zinit = 1;
    }
    return 0;
}

static void encoder_close(struct encoder *e)
{
    if (e->zinit)
        deflateEnd(&e->zs);
    free(e->lz);
}

/* Encode one page at `to`: returns -1 for a shared zero page (nothing stored),
 * else the bytes stored (page_size for a raw page); -2 on a zlib failure. */
static Py_ssize_t encoder_page(struct encoder *e, const unsigned char *page, unsigned char *to)
{
    Py_ssize_t ps = e->page_size, got = ps;

    if (e->share_zero && page_is_zero(page, ps))
        return -1;
    if (e->codec == CODEC_LZO) {
        got = (Py_ssize_t)lz_compress(e->lz, page, (size_t)ps, to);
    } else if (e->codec == CODEC_ZLIB) {
        if (deflateReset(&e->zs) != Z_OK)
            return -2;
        e->zs.next_in = (Bytef *)page;
        e->zs.avail_in = (uInt)ps;
        e->zs.next_out = to;
        e->zs.avail_out = (uInt)(ps + headroom(ps));
        if (deflate(&e->zs, Z_FINISH) == Z_STREAM_END)
            got = (Py_ssize_t)e->zs.total_out;
    }
    if (got >= ps) {
        memcpy(to, page, (size_t)ps);
        got = ps;
    }
    return got;
}

static int check_codec(int codec)
{
    if (codec != CODEC_NONE && codec != CODEC_ZLIB && codec != CODEC_LZO) {
        PyErr_SetString(PyExc_ValueError, "unknown codec");
        return -1;
    }
    return 0;
}

/*
 * encode_pages(codec, src, page_size, share_zero, dst, sizes) -> int
 *
 * src holds n = len(src) // page_size pages.  For page i, sizes[i] (int64)
 * becomes -1 when share_zero is true and the page is all zero (nothing
 * stored), else the number of bytes stored at the running offset of dst:
 * page_size for a raw page, less for a compressed one.  Returns the number of
 * bytes stored in dst, which must hold n * page_size + headroom(page_size).
 */
static PyObject *encode_pages(PyObject *self, PyObject *args)
{
    int codec, share_zero, failed = 0;
    Py_ssize_t page_size;
    Py_buffer src, dst, sizes;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "iy*npw*w*", &codec, &src, &page_size, &share_zero, &dst, &sizes))
        return NULL;
    if (page_size <= 0 || page_size % 8 != 0 || src.len % page_size != 0) {
        PyErr_SetString(PyExc_ValueError, "source length is not a whole number of pages");
        goto out;
    }
    Py_ssize_t n = src.len / page_size;
    if (sizes.len < n * (Py_ssize_t)sizeof(int64_t) || dst.len < n * page_size + headroom(page_size)) {
        PyErr_SetString(PyExc_ValueError, "output buffers too small");
        goto out;
    }
    if (check_codec(codec) < 0)
        goto out;

    const unsigned char *in = src.buf;
    unsigned char *o = dst.buf;
    int64_t *sz = sizes.buf;
    Py_ssize_t pos = 0;
    struct encoder enc;

    Py_BEGIN_ALLOW_THREADS
    failed = encoder_open(&enc, codec, share_zero, page_size) < 0;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        Py_ssize_t got = encoder_page(&enc, in + i * page_size, o + pos);
        failed = got == -2;
        sz[i] = got;
        if (got > 0)
            pos += got;
    }
    encoder_close(&enc);
    Py_END_ALLOW_THREADS

    if (failed)
        PyErr_SetString(PyExc_MemoryError, "codec state could not be set up");
    else
        result = PyLong_FromSsize_t(pos);
out:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&sizes);
    return result;
}

/* Largest hole between two wanted pages that a read goes through (into a
 * discarded buffer) rather than starting a new read.  At -d 31 on the 4 GiB
 * generator image (`benchmarks/micro.py IMAGE`, "gaps"), reading through
 * holes of up to 8 pages copies 398k unwanted pages besides the 460k wanted
 * ones; up to 2 pages, 204k, for 51k stretches instead of 1.8k.  A page copy
 * from the page cache (~0.7 us at the 6 GB/s of micro.py's "reading") costs
 * about what a system call does, so 2 costs the least in all. */
#define GAP_PAGES 2
#define MAX_IOV 1024

/* Read one page-sized (or shorter, at end of file) piece, retrying EINTR and
 * short reads.  Returns 0, or -1 with errno set. */
static int read_full(int fd, unsigned char *to, Py_ssize_t len, int64_t off)
{
    while (len > 0) {
        ssize_t got = pread(fd, to, (size_t)len, (off_t)off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (got == 0)
            return 0; /* end of file: the rest stays zero */
        to += got;
        len -= got;
        off += got;
    }
    return 0;
}

/*
 * Read pages i.. of offsets o[] (ascending) into consecutive rows of `rows`:
 * at most `limit` pages, as far as each next page starts within GAP_PAGES of
 * the previous one's end, with one preadv (the gaps land in `junk`, which
 * holds GAP_PAGES pages).  Returns the index after the last page read, or -1
 * with errno set on an I/O error.  A short read (end of file) falls back to
 * page-by-page reads; rows past the end of the file are zeroed.
 */
static Py_ssize_t gather(int fd, const int64_t *o, Py_ssize_t i, Py_ssize_t n, Py_ssize_t limit,
                         Py_ssize_t page_size, unsigned char *rows, unsigned char *junk)
{
    struct iovec iov[MAX_IOV];
    int k = 0;
    Py_ssize_t j = i, total = 0;

    if (limit > MAX_IOV / 2)
        limit = MAX_IOV / 2;
    for (;;) {
        iov[k].iov_base = rows + (j - i) * page_size;
        iov[k].iov_len = (size_t)page_size;
        k++;
        total += page_size;
        j++;
        if (j >= n || j - i >= limit)
            break;
        int64_t gap = o[j] - (o[j - 1] + page_size);
        if (gap < 0 || gap > GAP_PAGES * page_size || total + gap + page_size > INT_MAX / 2)
            break;
        if (gap > 0) {
            iov[k].iov_base = junk;
            iov[k].iov_len = (size_t)gap;
            k++;
            total += gap;
        }
    }
    ssize_t got;
    do
        got = preadv(fd, iov, k, (off_t)o[i]);
    while (got < 0 && errno == EINTR);
    if (got < 0)
        return -1;
    if (got < total) {
        /* Short (end of file, or a device that reads less): page by page. */
        for (Py_ssize_t p = i; p < j; p++) {
            unsigned char *row = rows + (p - i) * page_size;
            memset(row, 0, (size_t)page_size);
            if (read_full(fd, row, page_size, o[p]) < 0)
                return -1;
        }
    }
    return j;
}

/*
 * read_pages(fd, offsets, page_size, out) -> None
 *
 * Reads page i from file offset offsets[i] (int64, ascending) into
 * out[i * page_size:], one preadv per stretch (see gather()).  Past the end
 * of the file, pages read as zeros.  An I/O error raises OSError; the caller
 * then isolates the unreadable pages itself.
 */
static PyObject *read_pages(PyObject *self, PyObject *args)
{
    int fd, err = 0;
    Py_ssize_t page_size;
    Py_buffer offs, out;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "iy*nw*", &fd, &offs, &page_size, &out))
        return NULL;
    Py_ssize_t n = offs.len / (Py_ssize_t)sizeof(int64_t);
    if (page_size <= 0 || out.len < n * page_size) {
        PyErr_SetString(PyExc_ValueError, "output buffer too small");
        goto done;
    }
    const int64_t *o = offs.buf;
    unsigned char *dst = out.buf;
    unsigned char *junk = NULL;

    Py_BEGIN_ALLOW_THREADS
    junk = malloc((size_t)(GAP_PAGES * page_size));
    if (junk == NULL)
        err = ENOMEM;
    for (Py_ssize_t i = 0; i < n && !err;) {
        Py_ssize_t j = gather(fd, o, i, n, n, page_size, dst + i * page_size, junk);
        if (j < 0)
            err = errno;
        i = j;
    }
    free(junk);
    Py_END_ALLOW_THREADS

    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        result = Py_NewRef(Py_None);
    }
done:
    PyBuffer_Release(&offs);
    PyBuffer_Release(&out);
    return result;
}

/* Bytes read per batch by encode_file_pages: 64 KiB stays in L2 between the
 * read and the compressor; a whole 8 MiB chunk read first does not. */
#define BATCH_BYTES (64 * 1024)

/*
 * encode_file_pages(codec, fd, offsets, page_size, share_zero, dst, sizes) -> int
 *
 * encode_pages() over the pages at file offsets offsets[i] (int64,
 * ascending), read a few at a time (gather()) so that each page is compressed
 * while it is still in cache.  Past the end of the file, pages read as zeros.
 * An I/O error raises OSError (dst and sizes then hold nothing useful).
 */
static PyObject *encode_file_pages(PyObject *self, PyObject *args)
{
    int codec, fd, share_zero, err = 0, failed = 0;
    Py_ssize_t page_size;
    Py_buffer offs, dst, sizes;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "iiy*npw*w*", &codec, &fd, &offs, &page_size, &share_zero, &dst, &sizes))
        return NULL;
    Py_ssize_t n = offs.len / (Py_ssize_t)sizeof(int64_t);
    if (page_size <= 0 || page_size % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "bad page size");
        goto out;
    }
    if (sizes.len < n * (Py_ssize_t)sizeof(int64_t) || dst.len < n * page_size + headroom(page_size)) {
        PyErr_SetString(PyExc_ValueError, "output buffers too small");
        goto out;
    }
    if (check_codec(codec) < 0)
        goto out;

    const int64_t *o = offs.buf;
    unsigned char *d = dst.buf;
    int64_t *sz = sizes.buf;
    Py_ssize_t pos = 0, batch = BATCH_BYTES / page_size > 0 ? BATCH_BYTES / page_size : 1;
    unsigned char *rows = NULL, *junk = NULL;
    struct encoder enc;

    Py_BEGIN_ALLOW_THREADS
    failed = encoder_open(&enc, codec, share_zero, page_size) < 0;
    rows = malloc((size_t)(batch * page_size));
    junk = malloc((size_t)(GAP_PAGES * page_size));
    failed |= rows == NULL || junk == NULL;
    for (Py_ssize_t i = 0; i < n && !failed && !err;) {
        Py_ssize_t j = gather(fd, o, i, n, batch, page_size, rows, junk);
        if (j < 0) {
            err = errno;
            break;
        }
        for (Py_ssize_t p = i; p < j; p++) {
            Py_ssize_t got = encoder_page(&enc, rows + (p - i) * page_size, d + pos);
            failed |= got == -2;
            sz[p] = got;
            if (got > 0)
                pos += got;
        }
        i = j;
    }
    free(rows);
    free(junk);
    encoder_close(&enc);
    Py_END_ALLOW_THREADS

    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if (failed) {
        PyErr_SetString(PyExc_MemoryError, "codec state could not be set up");
    } else {
        result = PyLong_FromSsize_t(pos);
    }
out:
    PyBuffer_Release(&offs);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&sizes);
    return result;
}

/* ---- the page pass: makedumpfile's per-page exclusion rules ------------- */

/* Indexes into decide_pages()'s params (int64); filter.py builds the array
 * (_native_params) with the same layout. */
enum {
    P_LEVEL, P_LRU, P_PRIVATE, P_SWAPCACHE, P_HAS_SWAPBACKED, P_SWAPBACKED,
    P_HAS_HWPOISON, P_HWPOISON, P_SLAB, P_HEAD, P_HAS_SLAB_VALUE, P_SLAB_VALUE,
    P_HAS_BUDDY_VALUE, P_BUDDY_VALUE, P_HAS_BUDDY_FLAG, P_BUDDY_FLAG,
    P_HAS_OFFLINE, P_OFFLINE, P_HAS_UNACCEPTED, P_UNACCEPTED,
    P_HAS_HUGETLB_VALUE, P_HUGETLB_VALUE, P_HAS_PG_HUGETLB, P_PG_HUGETLB,
    P_HAS_FREE_AREA_LEN, P_FREE_AREA_LEN,
    P_K_FREE, P_K_CACHE, P_K_CACHE_PRIVATE, P_K_USER, P_K_HWPOISON, P_K_OFFLINE,
    P_L_CACHE, P_L_CACHE_PRIVATE, P_L_USER, P_L_FREE,
    P_N_DTORS, P_DTORS /* P_N_DTORS values follow */
};

/* Little-endian field of `width` bytes at `off` of one struct page; 0 when absent. */
static inline uint64_t field(const unsigned char *entry, Py_ssize_t off, int width)
{
    uint64_t v8;
    uint32_t v4;
    uint16_t v2;

    if (off < 0)
        return 0;
    switch (width) { /* x86_64 is little-endian, as the dumps it reads */
    case 8:
        memcpy(&v8, entry + off, 8);
        return v8;
    case 4:
        memcpy(&v4, entry + off, 4);
        return v4;
    case 2:
        memcpy(&v2, entry + off, 2);
        return v2;
    default:
        return entry[off];
    }
}

/*
 * decide_pages(raw, entry_size, offsets, widths, start_pfn, examined, tail_ok,
 *              params, kind, log2n) -> None
 *
 * filter.decide() for one run of struct pages, in one pass: raw holds n
 * entries of entry_size bytes (zero where not read); offsets gives the byte
 * offsets of flags, mapping, _mapcount, private, compound_head, the order and
 * the destructor fields (-1: not exported); widths the byte widths of the
 * order and destructor fields.  Writes kind[i] (int8, a filter.Kind) and
 * log2n[i] (int64).  The numpy version in filter.py is the reference;
 * tests/unit/test_native.py checks the two agree.
 */
static PyObject *decide_pages(PyObject *self, PyObject *args)
{
    Py_buffer raw, examined, tail_ok, params, kind, log2n;
    Py_ssize_t size, o_flags, o_mapping, o_mapcount, o_private, o_chead, o_order, o_dtor;
    int w_order, w_dtor;
    unsigned long long start_pfn;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*n(nnnnnnn)(ii)Ky*y*y*w*w*", &raw, &size, &o_flags, &o_mapping, &o_mapcount,
                          &o_private, &o_chead, &o_order, &o_dtor, &w_order, &w_dtor, &start_pfn, &examined,
                          &tail_ok, &params, &kind, &log2n))
        return NULL;
    Py_ssize_t n = examined.len;
    const int64_t *P = params.buf;
    Py_ssize_t np_ = params.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t offs[7] = {o_flags, o_mapping, o_mapcount, o_private, o_chead, o_order, o_dtor};
    int widths[7] = {8, 8, 4, 8, 8, w_order, w_dtor};
    int bad = size <= 0 || raw.len < n * size || tail_ok.len < n || kind.len < n ||
              log2n.len < n * (Py_ssize_t)sizeof(int64_t) || np_ < P_DTORS || np_ < P_DTORS + P[P_N_DTORS];
    for (int k = 0; k < 7 && !bad; k++)
        bad = offs[k] >= 0 && (widths[k] < 1 || widths[k] > 8 || offs[k] + widths[k] > size);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "decide_pages: inconsistent arguments");
        goto out;
    }

    const unsigned char *r = raw.buf;
    const unsigned char *ex = examined.buf, *tok = tail_ok.buf;
    int8_t *kd = kind.buf;
    int64_t *lg = log2n.buf;
    /* Locals, not P[]: the int8 stores to kind may alias anything, so the
     * compiler would reload every parameter for every page. */
    const uint64_t lru = (uint64_t)P[P_LRU], priv_m = (uint64_t)P[P_PRIVATE], swapc = (uint64_t)P[P_SWAPCACHE];
    const uint64_t swapb = (uint64_t)P[P_SWAPBACKED], hwp = (uint64_t)P[P_HWPOISON];
    const uint64_t slab = (uint64_t)P[P_SLAB], head_m = (uint64_t)P[P_HEAD];
    const uint64_t buddy_flag = (uint64_t)P[P_BUDDY_FLAG], pg_huge = (uint64_t)P[P_PG_HUGETLB];
    const int64_t level = P[P_LEVEL];
    const int has_swapb = P[P_HAS_SWAPBACKED] != 0, has_hwp = P[P_HAS_HWPOISON] != 0;
    const int has_slab_v = P[P_HAS_SLAB_VALUE] != 0, has_buddy_v = P[P_HAS_BUDDY_VALUE] != 0;
    const int has_buddy = has_buddy_v || P[P_HAS_BUDDY_FLAG];
    const int has_off = P[P_HAS_OFFLINE] != 0, has_unacc = P[P_HAS_UNACCEPTED] != 0;
    const int has_huge_v = P[P_HAS_HUGETLB_VALUE] != 0, has_pg_huge = P[P_HAS_PG_HUGETLB] != 0;
    const int has_fal = P[P_HAS_FREE_AREA_LEN] != 0;
    const int64_t slab_v = P[P_SLAB_VALUE], buddy_v = P[P_BUDDY_VALUE], off_v = P[P_OFFLINE];
    const int64_t unacc_v = P[P_UNACCEPTED], huge_v = P[P_HUGETLB_VALUE], fal = P[P_FREE_AREA_LEN];
    const int8_t k_free = (int8_t)P[P_K_FREE], k_cache = (int8_t)P[P_K_CACHE];
    const int8_t k_cpriv = (int8_t)P[P_K_CACHE_PRIVATE], k_user = (int8_t)P[P_K_USER];
    const int8_t k_hwp = (int8_t)P[P_K_HWPOISON], k_off = (int8_t)P[P_K_OFFLINE];
    const int l_cache = (level & P[P_L_CACHE]) != 0, l_cpriv = (level & P[P_L_CACHE_PRIVATE]) != 0;
    const int l_user = (level & P[P_L_USER]) != 0, l_free = (level & P[P_L_FREE]) != 0;
    const int64_t ndtors = P[P_N_DTORS];
    const int64_t *dtors = P + P_DTORS;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *e = r + i * size;
        const unsigned char *nx = i + 1 < n ? e + size : NULL;
        uint64_t flags = field(e, o_flags, 8);
        uint64_t mapping = field(e, o_mapping, 8);
        int32_t mapcount = (int32_t)(uint32_t)field(e, o_mapcount, 4);
        uint64_t chead = field(e, o_chead, 8);
        uint64_t nxt_flags = nx ? field(nx, o_flags, 8) : 0;

        int is_slab = (flags & slab) != 0 || (has_slab_v && mapcount == slab_v);
        int is_anon = (mapping & 1) && !is_slab;
        int is_private = (flags & priv_m) != 0;
        int swap = (flags & swapc) != 0;
        if (has_swapb)
            swap = swap && (flags & swapb) != 0;
        int is_cache = (flags & lru) != 0 || swap;
        int is_tail = (chead & 1) != 0;
        int head = (flags & head_m) != 0 && tok[i];
        int hugetlb = 0;
        uint64_t order;
        if (has_huge_v) {
            order = nxt_flags & 0xFF;
            hugetlb = mapcount == huge_v;
        } else if (has_pg_huge) {
            order = nxt_flags & 0xFF;
            hugetlb = (nxt_flags & pg_huge) != 0;
        } else {
            order = nx ? field(nx, o_order, w_order) : 0;
            uint64_t dtor = nx ? field(nx, o_dtor, w_dtor) : 0;
            for (int64_t d = 0; d < ndtors && nx; d++)
                hugetlb |= dtor == (uint64_t)dtors[d];
        }
        hugetlb = hugetlb && head;
        if (!head || order >= 64)
            order = 0;
        if (((uint64_t)start_pfn + (uint64_t)i) & ((UINT64_C(1) << order) - 1))
            order = 0;

        int8_t k = 0;
        int64_t l2 = (int64_t)order;
        int undecided = ex[i] && !is_tail;
        if (l_free && has_buddy) {
            int is_buddy = has_buddy_v ? (mapcount == buddy_v && !is_slab) : (flags & buddy_flag) != 0;
            uint64_t private = field(e, o_private, 8);
            if (has_fal && is_buddy && private >= (uint64_t)fal) {
                undecided = 0; /* an order beyond the zone's free lists: kept */
                is_buddy = 0;
            }
            if (undecided && is_buddy) {
                k = k_free;
                undecided = 0;
                l2 = private < 62 ? (int64_t)private : 62;
            }
            if (has_unacc && has_fal && undecided && mapcount == unacc_v) {
                k = k_free;
                undecided = 0;
                l2 = fal - 1;
            }
        }
        if (l_cache && undecided && is_cache && !is_private && !is_anon) {
            k = k_cache;
            undecided = 0;
        }
        if (l_cpriv) {
            if (undecided && is_cache && !is_anon && is_private) {
                k = k_cpriv;
                undecided = 0;
            }
            if (undecided && is_cache && !is_anon) {
                k = k_cache;
                undecided = 0;
            }
        }
        if (l_user && undecided && (is_anon || hugetlb)) {
            k = k_user;
            undecided = 0;
        }
        if (has_hwp && undecided && (flags & hwp)) {
            k = k_hwp;
            undecided = 0;
        }
        if (has_off && undecided && mapcount == off_v && !is_slab)
            k = k_off;
        kd[i] = k;
        lg[i] = l2;
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&examined);
    PyBuffer_Release(&tail_ok);
    PyBuffer_Release(&params);
    PyBuffer_Release(&kind);
    PyBuffer_Release(&log2n);
    return result;
}

/* lzo1x_1(data) -> bytes: one buffer of any length, as lzo1x_1_compress() writes it. */
static PyObject *lzo1x_1(PyObject *self, PyObject *arg)
{
    Py_buffer in;
    PyObject *result = NULL;
    struct lz_state *lz;
    unsigned char *out;

    (void)self;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    lz = malloc(sizeof *lz);
    out = malloc((size_t)(in.len + headroom(in.len)));
    if (lz == NULL || out == NULL) {
        PyErr_NoMemory();
    } else {
        size_t len;
        Py_BEGIN_ALLOW_THREADS
        lz_state_init(lz);
        len = lz_compress(lz, in.buf, (size_t)in.len, out);
        Py_END_ALLOW_THREADS
        result = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)len);
    }
    free(lz);
    free(out);
    PyBuffer_Release(&in);
    return result;
}

static PyObject *py_headroom(PyObject *self, PyObject *arg)
{
    Py_ssize_t ps = PyLong_AsSsize_t(arg);

    (void)self;
    if (ps == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(headroom(ps));
}

static PyMethodDef methods[] = {
    {"encode_pages", encode_pages, METH_VARARGS,
     "encode_pages(codec, src, page_size, share_zero, dst, sizes) -> bytes stored in dst"},
    {"encode_file_pages", encode_file_pages, METH_VARARGS,
     "encode_file_pages(codec, fd, offsets, page_size, share_zero, dst, sizes) -> bytes stored in dst"},
    {"decide_pages", decide_pages, METH_VARARGS,
     "decide_pages(raw, entry_size, offsets, widths, start_pfn, examined, tail_ok, params, kind, log2n) -> None"},
    {"read_pages", read_pages, METH_VARARGS,
     "read_pages(fd, offsets, page_size, out): gather pages at file offsets into out"},
    {"lzo1x_1", lzo1x_1, METH_O, "lzo1x_1(data) -> bytes: LZO1X-1, the bytes lzo1x_1_compress() writes"},
    {"headroom", py_headroom, METH_O, "headroom(page_size) -> extra bytes dst needs past n * page_size"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vmcorepack._native", "Per-page encoder loop in C (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
