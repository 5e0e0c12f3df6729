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
 * Snappy, zstd and the fast zlib encoder come from shared libraries loaded at
 * run time (load_codec()): Google's libsnappy (snappy_compress(), as
 * makedumpfile calls it), libzstd (ZSTD_compressCCtx() at level 1 into a
 * buffer of at least ZSTD_compressBound(), as makedumpfile does) and
 * libdeflate (libdeflate_zlib_compress(): a valid zlib stream, not zlib's
 * bytes; only for --fast-zlib).  dlopen() rather than linking keeps the build
 * free of their headers and the import free of their presence: without a
 * library, codecs.py uses the Python loop for that codec.
 *
 * It also decodes LZO1X pages read back from dumps (lzo1x_decompress(), a
 * bounds-checked decoder in _lzo1x.h), so that a build with a C compiler
 * needs no python-lzo.
 *
 * pipeline.py falls back to the pure-Python path when this module is absent;
 * tests/unit/test_native.py checks both paths give the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <zlib.h>

#include "_lzo1x.h"

enum { CODEC_NONE = 0, CODEC_ZLIB = 1, CODEC_LZO = 2, CODEC_SNAPPY = 3, CODEC_ZSTD = 4, CODEC_FAST_ZLIB = 5, N_CODECS };

/* The entry points of the run-time libraries, as their C APIs declare them
 * (snappy-c.h, zstd.h, libdeflate.h); opaque contexts are void pointers. */
struct codec_lib {
    void *handle;
    int level;
    char path[PATH_MAX];
    void *(*create)(int level);            /* libdeflate_alloc_compressor */
    void *(*create0)(void);                /* ZSTD_createCCtx */
    void (*destroy)(void *);               /* libdeflate_free_compressor */
    size_t (*destroy_z)(void *);           /* ZSTD_freeCCtx */
    size_t (*bound)(size_t);               /* snappy_max_compressed_length, ZSTD_compressBound */
    int (*snappy)(const char *, size_t, char *, size_t *);
    size_t (*zstd)(void *, void *, size_t, const void *, size_t, int);
    unsigned (*zstd_error)(size_t);
    size_t (*deflate)(void *, const void *, size_t, void *, size_t);
};

/* Set under the GIL by load_codec(), only read by the loops afterwards. */
static struct codec_lib libs[N_CODECS];

static void *sym(void *h, const char *name, int *missing)
{
    void *f = dlsym(h, name);
    *missing |= f == NULL;
    return f;
}

/*
 * load_codec(codec, soname, level) -> str | None
 *
 * dlopen() the library of a run-time codec (snappy, zstd, fast zlib) and
 * resolve its entry points; `level` is the compression level of zstd and fast
 * zlib.  Returns the library's file, or None when it or an entry point is
 * missing (the caller then uses its Python loop).  Loading again returns the
 * same file.
 */
static PyObject *load_codec(PyObject *self, PyObject *args)
{
    int codec, level, missing = 0;
    const char *soname;
    struct codec_lib L;

    (void)self;
    if (!PyArg_ParseTuple(args, "isi", &codec, &soname, &level))
        return NULL;
    if (codec != CODEC_SNAPPY && codec != CODEC_ZSTD && codec != CODEC_FAST_ZLIB) {
        PyErr_SetString(PyExc_ValueError, "load_codec: not a run-time codec");
        return NULL;
    }
    if (libs[codec].handle != NULL)
        return PyUnicode_DecodeFSDefault(libs[codec].path);
    memset(&L, 0, sizeof L);
    L.handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (L.handle == NULL)
        Py_RETURN_NONE;
    L.level = level;
    if (codec == CODEC_SNAPPY) {
        *(void **)&L.snappy = sym(L.handle, "snappy_compress", &missing);
        *(void **)&L.bound = sym(L.handle, "snappy_max_compressed_length", &missing);
    } else if (codec == CODEC_ZSTD) {
        *(void **)&L.create0 = sym(L.handle, "ZSTD_createCCtx", &missing);
        *(void **)&L.destroy_z = sym(L.handle, "ZSTD_freeCCtx", &missing);
        *(void **)&L.zstd = sym(L.handle, "ZSTD_compressCCtx", &missing);
        *(void **)&L.zstd_error = sym(L.handle, "ZSTD_isError", &missing);
        *(void **)&L.bound = sym(L.handle, "ZSTD_compressBound", &missing);
    } else {
        *(void **)&L.create = sym(L.handle, "libdeflate_alloc_compressor", &missing);
        *(void **)&L.destroy = sym(L.handle, "libdeflate_free_compressor", &missing);
        *(void **)&L.deflate = sym(L.handle, "libdeflate_zlib_compress", &missing);
    }
    struct link_map *lm = NULL;
    if (missing || dlinfo(L.handle, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL) {
        dlclose(L.handle);
        Py_RETURN_NONE;
    }
    /* The file the soname resolves to carries the version (libsnappy.so.1.1.9). */
    if (realpath(lm->l_name, L.path) == NULL)
        snprintf(L.path, sizeof L.path, "%s", lm->l_name);
    libs[codec] = L;
    return PyUnicode_DecodeFSDefault(L.path);
}

/* Worst-case growth of one compressed page over its input, for the caller's
 * buffer: LZO1X needs n + n/16 + 64 + 3 bytes, and _lzo1x.h copies literals in
 * 16-byte steps (up to 15 bytes past the run); zlib's compressBound is smaller. */
static Py_ssize_t headroom(Py_ssize_t page_size)
{
    return page_size / 16 + 64 + 3 + 16;
}

#if defined(__GNUC__)
/* Two 64-bit lanes: SSE2, which every x86_64 has, so -O2 needs no -m flag. */
typedef uint64_t zero_vec __attribute__((vector_size(16)));
#endif

static int page_is_zero(const unsigned char *p, Py_ssize_t n)
{
    const uint64_t *w = (const uint64_t *)p;
    Py_ssize_t words = n / 8, i = 0;

    /* Most non-zero pages differ from zero in their first words.  A zero page
     * has to be read to its end, and at -d 31 most pages read are zero (295k
     * of 460k on the 4 GiB generator image), so the rest of the test ORs 256
     * bytes at a time in vector registers: gcc -O2 leaves the plain 64-bit
     * loop scalar, and that loop was most of encoder_page's time in
     * `perf record` of `vmcorepack -l -d 31` on that image. */
    for (; i < words && i < 4; i++)
        if (w[i])
            return 0;
#if defined(__GNUC__)
    for (i = 0; (i + 32) * 8 <= n; i += 32) {
        /* Four accumulators, so that the ORs do not wait on each other. */
        zero_vec a = {0, 0}, b = {0, 0}, c = {0, 0}, d = {0, 0}, v;
        for (int k = 0; k < 256; k += 64) {
            memcpy(&v, p + i * 8 + k, sizeof v);
            a |= v;
            memcpy(&v, p + i * 8 + k + 16, sizeof v);
            b |= v;
            memcpy(&v, p + i * 8 + k + 32, sizeof v);
            c |= v;
            memcpy(&v, p + i * 8 + k + 48, sizeof v);
            d |= v;
        }
        a |= b | c | d;
        if (a[0] | a[1])
            return 0;
    }
#endif
    for (; i < words; i++)
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
    const struct codec_lib *lib; /* snappy, zstd, fast zlib */
    void *ctx;                   /* their compressor state (zstd, libdeflate) */
    unsigned char *scratch;      /* their output when its bound exceeds dst's room */
    size_t cap;                  /* bytes they may write */
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
    } else if (codec == CODEC_SNAPPY || codec == CODEC_ZSTD || codec == CODEC_FAST_ZLIB) {
        e->lib = &libs[codec];
        if (codec == CODEC_FAST_ZLIB) {
            /* Anything that does not fit in page_size - 1 bytes is stored raw:
             * libdeflate stops there and returns 0. */
            e->cap = (size_t)page_size - 1;
            e->ctx = e->lib->create(e->lib->level);
            return e->ctx == NULL ? -1 : 0;
        }
        e->cap = e->lib->bound((size_t)page_size);
        if (codec == CODEC_ZSTD && (e->ctx = e->lib->create0()) == NULL)
            return -1;
        if (e->cap > (size_t)(page_size + headroom(page_size)) && (e->scratch = malloc(e->cap)) == NULL)
            return -1;
    }
    return 0;
}

static void encoder_close(struct encoder *e)
{
    if (e->zinit)
        deflateEnd(&e->zs);
    if (e->ctx != NULL && e->codec == CODEC_ZSTD)
        e->lib->destroy_z(e->ctx);
    else if (e->ctx != NULL)
        e->lib->destroy(e->ctx);
    free(e->scratch);
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
    } else if (e->lib != NULL) {
        unsigned char *out = e->scratch != NULL ? e->scratch : to;
        size_t n = e->cap;
        if (e->codec == CODEC_SNAPPY) {
            if (e->lib->snappy((const char *)page, (size_t)ps, (char *)out, &n) != 0) /* SNAPPY_OK */
                n = (size_t)ps;
        } else if (e->codec == CODEC_ZSTD) {
            n = e->lib->zstd(e->ctx, out, n, page, (size_t)ps, e->lib->level);
            if (e->lib->zstd_error(n))
                n = (size_t)ps;
        } else {
            n = e->lib->deflate(e->ctx, page, (size_t)ps, out, n);
            if (n == 0)
                n = (size_t)ps;
        }
        if (n < (size_t)ps && out != to)
            memcpy(to, out, n);
        got = (Py_ssize_t)n;
    }
    if (got >= ps) {
        memcpy(to, page, (size_t)ps);
        got = ps;
    }
    return got;
}

static int check_codec(int codec)
{
    if (codec < 0 || codec >= N_CODECS) {
        PyErr_SetString(PyExc_ValueError, "unknown codec");
        return -1;
    }
    if (codec >= CODEC_SNAPPY && libs[codec].handle == NULL) {
        PyErr_SetString(PyExc_ValueError, "the codec's library is not loaded (load_codec)");
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

/* ---- reading through a mapping, with SIGBUS turned into a fallback ------- */

/*
 * /proc/vmcore can be mapped (mmap_vmcore(), since Linux 3.11): the old
 * kernel's pages are then mapped once per window (remap_oldmem_pfn_range())
 * instead of being copied by read_vmcore() one page at a time
 * (copy_oldmem_page() maps and unmaps each page), which is why makedumpfile
 * maps it by default (--non-mmap turns that off).  Windows are
 * makedumpfile's MAP_REGION, 4 MiB (makedumpfile.h).
 *
 * A page the kernel cannot read gives EIO to read() but SIGBUS to an access
 * through the mapping (and so does an access past the end of a regular file
 * truncated after it was mapped).  The copy out of the mapping is therefore
 * guarded: a SIGBUS while `fault_jmp` is set in this thread jumps back, and
 * that page is read with pread() instead, which reports EIO as an error (the
 * caller then isolates the unreadable pages) or reads zeros past the end.
 * Pages are copied into a buffer before compression, so a fault never
 * interrupts a codec mid-stream.  The handler is installed once, with the
 * GIL held; a SIGBUS that is not ours restores the previous disposition.
 */
#define MAP_WINDOW_DEFAULT (4096 * 1024)

/* volatile: the stores around memcpy() must stay where they are (a compiler
 * that knows memcpy() does not read it would drop the first as dead). */
static _Thread_local sigjmp_buf *volatile fault_jmp;
static struct sigaction old_sigbus;
static int sigbus_installed;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    sigjmp_buf *jb = fault_jmp;

    if (jb != NULL) {
        fault_jmp = NULL;
        siglongjmp(*jb, 1); /* SA_NODEFER: SIGBUS stays unblocked */
    }
    /* Not a guarded copy: let the previous handler (or the default, a core
     * dump) have it.  A fault re-executes and arrives there; a sent signal is
     * raised again. */
    sigaction(SIGBUS, &old_sigbus, NULL);
    (void)ctx;
    if (si == NULL || si->si_code <= 0)
        raise(sig);
}

/* Install on_sigbus (GIL held).  Returns 0, or -1 with errno set. */
static int install_sigbus(void)
{
    struct sigaction sa;

    if (sigbus_installed)
        return 0;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &old_sigbus) < 0)
        return -1;
    sigbus_installed = 1;
    return 0;
}

/* memcpy() out of a mapping; -1 when it faulted (SIGBUS), else 0. */
static int __attribute__((noinline)) copy_guarded(unsigned char *to, const unsigned char *from, size_t n)
{
    sigjmp_buf env;

    if (sigsetjmp(env, 0) != 0)
        return -1;
    fault_jmp = &env;
    memcpy(to, from, n);
    fault_jmp = NULL;
    return 0;
}

struct window {
    int fd, failed;
    unsigned char *base;
    int64_t start, len, size, file_size;
};

/* The window holding [off, off + len), mapped if need be; NULL when mapping
 * fails (the caller then reads). */
static const unsigned char *window_at(struct window *w, int64_t off, int64_t len)
{
    if (w->base != NULL && off >= w->start && off + len <= w->start + w->len)
        return w->base + (off - w->start);
    if (w->base != NULL)
        munmap(w->base, (size_t)w->len);
    w->base = NULL;
    int64_t start = off - off % w->size;
    int64_t end = start + w->size;
    if (end < off + len)
        end = off + len;
    if (end > w->file_size) /* mmap_vmcore() refuses a window past the end */
        end = w->file_size;
    void *p = mmap(NULL, (size_t)(end - start), PROT_READ, MAP_SHARED, w->fd, (off_t)start);
    if (p == MAP_FAILED) {
        w->failed = 1; /* not mappable (an old kernel's /proc/vmcore, a pipe): read */
        return NULL;
    }
    w->base = p;
    w->start = start;
    w->len = end - start;
    return w->base + (off - start);
}

/* One page at `off` into `to`: through the window when it can be, else (or
 * after a fault) with pread().  Returns 0, or -1 with errno set. */
static int read_mapped(struct window *w, int64_t off, Py_ssize_t page_size, unsigned char *to)
{
    if (!w->failed && off >= 0 && off + page_size <= w->file_size) {
        const unsigned char *from = window_at(w, off, page_size);
        if (from != NULL && copy_guarded(to, from, (size_t)page_size) == 0)
            return 0;
    }
    memset(to, 0, (size_t)page_size);
    return read_full(w->fd, to, page_size, off);
}

/*
 * read_range(fd, offset, out, map_window, file_size) -> int
 *
 * Fill out with the file's bytes from offset, copied out of mapped windows
 * of map_window bytes (the mem_map reads of the page pass), a fault or a
 * window that cannot be mapped falling back to pread() for that piece.
 * Returns the bytes read: short at file_size.  An I/O error raises OSError.
 */
static PyObject *read_range(PyObject *self, PyObject *args)
{
    int fd, err = 0;
    long long offset, file_size;
    Py_ssize_t map_window, done = 0;
    Py_buffer out;

    (void)self;
    if (!PyArg_ParseTuple(args, "iLw*nL", &fd, &offset, &out, &map_window, &file_size))
        return NULL;
    if (map_window <= 0 || map_window % sysconf(_SC_PAGESIZE) != 0 || offset < 0) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "bad map_window or offset");
        return NULL;
    }
    struct window w = {.fd = fd, .size = map_window, .file_size = file_size};
    if (install_sigbus() < 0)
        w.failed = 1;
    unsigned char *to = out.buf;
    Py_ssize_t len = out.len;
    if (offset + len > file_size)
        len = offset >= file_size ? 0 : (Py_ssize_t)(file_size - offset);

    Py_BEGIN_ALLOW_THREADS
    while (done < len) {
        int64_t o = offset + done;
        int64_t n = o - o % map_window + map_window - o; /* to the end of its window */
        if (n > len - done)
            n = len - done;
        const unsigned char *from = w.failed ? NULL : window_at(&w, o, n);
        if (from == NULL || copy_guarded(to + done, from, (size_t)n) < 0) {
            memset(to + done, 0, (size_t)n);
            if (read_full(fd, to + done, n, o) < 0) {
                err = errno;
                break;
            }
        }
        done += n;
    }
    if (w.base != NULL)
        munmap(w.base, (size_t)w.len);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&out);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(done);
}

/* Bytes read per batch by encode_file_pages: 64 KiB stays in L2 between the
 * read and the compressor; a whole 8 MiB chunk read first does not. */
#define BATCH_BYTES (64 * 1024)

/*
 * encode_file_pages(codec, fd, offsets, page_size, share_zero, dst, sizes, map_window=0, file_size=0) -> int
 *
 * encode_pages() over the pages at file offsets offsets[i] (int64,
 * ascending), read a few at a time (gather()) so that each page is compressed
 * while it is still in cache.  With map_window > 0 (bytes, a multiple of the
 * system page size), pages are copied out of mapped windows of that size
 * instead (read_mapped()), up to file_size (0: fstat()'s; a file that
 * shrank since faults past its end, which reads zeros, as pread() does).
 * Past the end of the file, pages read as zeros.
 * An I/O error raises OSError (dst and sizes then hold nothing useful).
 */
static PyObject *encode_file_pages(PyObject *self, PyObject *args)
{
    int codec, fd, share_zero, err = 0, failed = 0;
    Py_ssize_t page_size, map_window = 0;
    long long file_size = 0;
    Py_buffer offs, dst, sizes;
    PyObject *result = NULL;
    struct window win = {.fd = -1, .failed = 1};
    int mapped = 0;

    (void)self;
    if (!PyArg_ParseTuple(args, "iiy*npw*w*|nL", &codec, &fd, &offs, &page_size, &share_zero, &dst, &sizes,
                          &map_window, &file_size))
        return NULL;
    win.fd = fd;
    if (map_window > 0) {
        struct stat st;
        long sys_page = sysconf(_SC_PAGESIZE);
        if (map_window % sys_page != 0) {
            PyErr_SetString(PyExc_ValueError, "map_window is not a multiple of the page size");
            goto out;
        }
        if (file_size <= 0 && fstat(fd, &st) == 0)
            file_size = st.st_size;
        /* Nothing to map (a pipe), or no handler: read instead. */
        if (file_size > 0 && install_sigbus() == 0) {
            mapped = 1;
            win.failed = 0;
            win.size = map_window;
            win.file_size = file_size;
        }
    }
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
    /* Mapped: one page at a time, compressed straight after its copy (a
     * window that cannot be mapped leaves the rest to pread(), page by page). */
    for (Py_ssize_t p = 0; mapped && p < n && !failed; p++) {
        if (read_mapped(&win, o[p], page_size, rows) < 0) {
            err = errno;
            break;
        }
        Py_ssize_t got = encoder_page(&enc, rows, d + pos);
        failed |= got == -2;
        sz[p] = got;
        if (got > 0)
            pos += got;
    }
    if (win.base != NULL)
        munmap(win.base, (size_t)win.len);
    for (Py_ssize_t i = 0; !mapped && i < n && !failed && !err;) {
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
static inline __attribute__((always_inline)) uint64_t field(const unsigned char *entry, Py_ssize_t off, int width)
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

/* The kernel facts and the level, unpacked from params once per call.  A
 * local copy of this struct, not P[], feeds the per-page loop: the int8 stores
 * to kind may alias anything, so the compiler would otherwise reload every
 * parameter for every page. */
struct page_rules {
    Py_ssize_t size, o_flags, o_mapping, o_mapcount, o_private, o_chead, o_order, o_dtor;
    int w_order, w_dtor;
    uint64_t lru, priv_m, swapc, swapb, hwp, slab, head_m, buddy_flag, pg_huge;
    int has_swapb, has_hwp, has_slab_v, has_buddy_v, has_buddy, has_off, has_unacc, has_huge_v, has_pg_huge;
    int has_fal, l_cache, l_cpriv, l_user, l_free;
    int64_t slab_v, buddy_v, off_v, unacc_v, huge_v, fal, ndtors;
    const int64_t *dtors;
    int8_t k_free, k_cache, k_cpriv, k_user, k_hwp, k_off;
};

/* Fill `R` from decide_pages()'s and scan_pages()'s common arguments; -1
 * with ValueError set when they do not fit each other or n entries. */
static int rules_setup(struct page_rules *R, const Py_buffer *raw, Py_ssize_t size, const Py_ssize_t offs[7],
                       int w_order, int w_dtor, const Py_buffer *params, Py_ssize_t n, const Py_buffer *tail_ok)
{
    const int64_t *P = params->buf;
    Py_ssize_t np_ = params->len / (Py_ssize_t)sizeof(int64_t);
    int widths[7] = {8, 8, 4, 8, 8, w_order, w_dtor};
    int bad = size <= 0 || raw->len < n * size || tail_ok->len < n || np_ < P_DTORS || np_ < P_DTORS + P[P_N_DTORS];
    for (int k = 0; k < 7 && !bad; k++)
        bad = offs[k] >= 0 && (widths[k] < 1 || widths[k] > 8 || offs[k] + widths[k] > size);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "page pass: inconsistent arguments");
        return -1;
    }
    R->size = size;
    R->o_flags = offs[0];
    R->o_mapping = offs[1];
    R->o_mapcount = offs[2];
    R->o_private = offs[3];
    R->o_chead = offs[4];
    R->o_order = offs[5];
    R->o_dtor = offs[6];
    R->w_order = w_order;
    R->w_dtor = w_dtor;
    R->lru = (uint64_t)P[P_LRU];
    R->priv_m = (uint64_t)P[P_PRIVATE];
    R->swapc = (uint64_t)P[P_SWAPCACHE];
    R->swapb = (uint64_t)P[P_SWAPBACKED];
    R->hwp = (uint64_t)P[P_HWPOISON];
    R->slab = (uint64_t)P[P_SLAB];
    R->head_m = (uint64_t)P[P_HEAD];
    R->buddy_flag = (uint64_t)P[P_BUDDY_FLAG];
    R->pg_huge = (uint64_t)P[P_PG_HUGETLB];
    R->has_swapb = P[P_HAS_SWAPBACKED] != 0;
    R->has_hwp = P[P_HAS_HWPOISON] != 0;
    R->has_slab_v = P[P_HAS_SLAB_VALUE] != 0;
    R->has_buddy_v = P[P_HAS_BUDDY_VALUE] != 0;
    R->has_buddy = R->has_buddy_v || P[P_HAS_BUDDY_FLAG];
    R->has_off = P[P_HAS_OFFLINE] != 0;
    R->has_unacc = P[P_HAS_UNACCEPTED] != 0;
    R->has_huge_v = P[P_HAS_HUGETLB_VALUE] != 0;
    R->has_pg_huge = P[P_HAS_PG_HUGETLB] != 0;
    R->has_fal = P[P_HAS_FREE_AREA_LEN] != 0;
    R->slab_v = P[P_SLAB_VALUE];
    R->buddy_v = P[P_BUDDY_VALUE];
    R->off_v = P[P_OFFLINE];
    R->unacc_v = P[P_UNACCEPTED];
    R->huge_v = P[P_HUGETLB_VALUE];
    R->fal = P[P_FREE_AREA_LEN];
    R->k_free = (int8_t)P[P_K_FREE];
    R->k_cache = (int8_t)P[P_K_CACHE];
    R->k_cpriv = (int8_t)P[P_K_CACHE_PRIVATE];
    R->k_user = (int8_t)P[P_K_USER];
    R->k_hwp = (int8_t)P[P_K_HWPOISON];
    R->k_off = (int8_t)P[P_K_OFFLINE];
    R->l_cache = (P[P_LEVEL] & P[P_L_CACHE]) != 0;
    R->l_cpriv = (P[P_LEVEL] & P[P_L_CACHE_PRIVATE]) != 0;
    R->l_user = (P[P_LEVEL] & P[P_L_USER]) != 0;
    R->l_free = (P[P_LEVEL] & P[P_L_FREE]) != 0;
    R->ndtors = P[P_N_DTORS];
    R->dtors = P + P_DTORS;
    return 0;
}

/* filter.decide() for one pfn: entry e (nx: the next entry of the run, or
 * NULL), whether e's head may use nx (tail_ok), whether makedumpfile examines
 * the pfn.  Returns the Kind (0: kept) and stores the log2 of the pages the
 * exclusion covers. */
static inline __attribute__((always_inline)) int8_t decide_one(const struct page_rules *R, const unsigned char *e, const unsigned char *nx,
                                int tail_ok, int examined, uint64_t pfn, int64_t *log2n)
{
    uint64_t flags = field(e, R->o_flags, 8);
    uint64_t mapping = field(e, R->o_mapping, 8);
    int32_t mapcount = (int32_t)(uint32_t)field(e, R->o_mapcount, 4);
    uint64_t chead = field(e, R->o_chead, 8);
    uint64_t nxt_flags = nx ? field(nx, R->o_flags, 8) : 0;

    int is_slab = (flags & R->slab) != 0 || (R->has_slab_v && mapcount == R->slab_v);
    int is_anon = (mapping & 1) && !is_slab;
    int is_private = (flags & R->priv_m) != 0;
    int swap = (flags & R->swapc) != 0;
    if (R->has_swapb)
        swap = swap && (flags & R->swapb) != 0;
    int is_cache = (flags & R->lru) != 0 || swap;
    int is_tail = (chead & 1) != 0;
    int head = (flags & R->head_m) != 0 && tail_ok;
    int hugetlb = 0;
    uint64_t order;
    if (R->has_huge_v) {
        order = nxt_flags & 0xFF;
        hugetlb = mapcount == R->huge_v;
    } else if (R->has_pg_huge) {
        order = nxt_flags & 0xFF;
        hugetlb = (nxt_flags & R->pg_huge) != 0;
    } else {
        order = nx ? field(nx, R->o_order, R->w_order) : 0;
        uint64_t dtor = nx ? field(nx, R->o_dtor, R->w_dtor) : 0;
        for (int64_t d = 0; d < R->ndtors && nx; d++)
            hugetlb |= dtor == (uint64_t)R->dtors[d];
    }
    hugetlb = hugetlb && head;
    if (!head || order >= 64)
        order = 0;
    if (pfn & ((UINT64_C(1) << order) - 1))
        order = 0;

    int8_t k = 0;
    int64_t l2 = (int64_t)order;
    int undecided = examined && !is_tail;
    if (R->l_free && R->has_buddy) {
        int is_buddy = R->has_buddy_v ? (mapcount == R->buddy_v && !is_slab) : (flags & R->buddy_flag) != 0;
        uint64_t private = field(e, R->o_private, 8);
        if (R->has_fal && is_buddy && private >= (uint64_t)R->fal) {
            undecided = 0; /* an order beyond the zone's free lists: kept */
            is_buddy = 0;
        }
        if (undecided && is_buddy) {
            k = R->k_free;
            undecided = 0;
            l2 = private < 62 ? (int64_t)private : 62;
        }
        if (R->has_unacc && R->has_fal && undecided && mapcount == R->unacc_v) {
            k = R->k_free;
            undecided = 0;
            l2 = R->fal - 1;
        }
    }
    if (R->l_cache && undecided && is_cache && !is_private && !is_anon) {
        k = R->k_cache;
        undecided = 0;
    }
    if (R->l_cpriv) {
        if (undecided && is_cache && !is_anon && is_private) {
            k = R->k_cpriv;
            undecided = 0;
        }
        if (undecided && is_cache && !is_anon) {
            k = R->k_cache;
            undecided = 0;
        }
    }
    if (R->l_user && undecided && (is_anon || hugetlb)) {
        k = R->k_user;
        undecided = 0;
    }
    if (R->has_hwp && undecided && (flags & R->hwp)) {
        k = R->k_hwp;
        undecided = 0;
    }
    if (R->has_off && undecided && mapcount == R->off_v && !is_slab)
        k = R->k_off;
    *log2n = l2;
    return k;
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
    Py_ssize_t size, offs[7];
    int w_order, w_dtor;
    unsigned long long start_pfn;
    PyObject *result = NULL;
    struct page_rules R;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*n(nnnnnnn)(ii)Ky*y*y*w*w*", &raw, &size, &offs[0], &offs[1], &offs[2], &offs[3],
                          &offs[4], &offs[5], &offs[6], &w_order, &w_dtor, &start_pfn, &examined, &tail_ok, &params,
                          &kind, &log2n))
        return NULL;
    Py_ssize_t n = examined.len;
    if (rules_setup(&R, &raw, size, offs, w_order, w_dtor, &params, n, &tail_ok) < 0)
        goto out;
    if (kind.len < n || log2n.len < n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "decide_pages: output buffers too small");
        goto out;
    }
    const unsigned char *r = raw.buf;
    const unsigned char *ex = examined.buf, *tok = tail_ok.buf;
    int8_t *kd = kind.buf;
    int64_t *lg = log2n.buf;

    Py_BEGIN_ALLOW_THREADS
    const struct page_rules rules = R;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *e = r + i * size;
        kd[i] = decide_one(&rules, e, i + 1 < n ? e + size : NULL, tok[i], ex[i], (uint64_t)start_pfn + (uint64_t)i,
                           &lg[i]);
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

/*
 * scan_pages(raw, entry_size, offsets, widths, start_pfn, examined, tail_ok,
 *            params, bits, bits_start, cycle_end, resume, counts)
 *     -> (resume, last_end, last_kind)
 *
 * One step of makedumpfile's page pass (__exclude_unnecessary_pages) over the
 * run decide_pages() takes, in pfn order as makedumpfile walks it: a pfn
 * below `resume` (inside an executed range) or not examined is skipped; an
 * excluded single page clears its bit; an excluded range of 2^log2n pages
 * (a free block or a compound page) clears its bits up to the cycle end,
 * counts them, and moves `resume` to its end, so the pfns it covers are not
 * examined.  bits (bool) holds the cycle's 2nd bitmap from pfn bits_start;
 * counts[kind] (int64) is added to.  Returns the new resume, and the end and
 * Kind of the last range executed (-1, 0 when none): makedumpfile carries
 * only that one into the next cycle.  filter.scan_numpy() is the numpy
 * reference; tests/unit/test_native.py checks the two agree.
 */
static PyObject *scan_pages(PyObject *self, PyObject *args)
{
    Py_buffer raw, examined, tail_ok, params, bits, counts;
    Py_ssize_t size, offs[7];
    int w_order, w_dtor;
    long long start_pfn, bits_start, cycle_end, resume;
    PyObject *result = NULL;
    struct page_rules R;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*n(nnnnnnn)(ii)Ly*y*y*w*LLLw*", &raw, &size, &offs[0], &offs[1], &offs[2],
                          &offs[3], &offs[4], &offs[5], &offs[6], &w_order, &w_dtor, &start_pfn, &examined, &tail_ok,
                          &params, &bits, &bits_start, &cycle_end, &resume, &counts))
        return NULL;
    Py_ssize_t n = examined.len;
    if (rules_setup(&R, &raw, size, offs, w_order, w_dtor, &params, n, &tail_ok) < 0)
        goto out;
    if (start_pfn < bits_start || start_pfn + n > cycle_end || bits.len < cycle_end - bits_start ||
        counts.len < 8 * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "scan_pages: the run is not inside the cycle's bitmap");
        goto out;
    }
    const unsigned char *r = raw.buf;
    const unsigned char *ex = examined.buf, *tok = tail_ok.buf;
    unsigned char *b = bits.buf; /* b[pfn - bits_start] */
    int64_t *cnt = counts.buf;
    long long last_end = -1;
    int last_kind = 0;

    Py_BEGIN_ALLOW_THREADS
    const struct page_rules rules = R;
    Py_ssize_t i = resume > start_pfn ? (Py_ssize_t)(resume - start_pfn < n ? resume - start_pfn : n) : 0;
    for (; i < n; i++) {
        if (!ex[i])
            continue;
        const unsigned char *e = r + i * size;
        long long pfn = start_pfn + i;
        int64_t l2;
        int8_t k = decide_one(&rules, e, i + 1 < n ? e + size : NULL, tok[i], 1, (uint64_t)pfn, &l2);
        if (!k)
            continue;
        /* As numpy's left_shift in the reference: a shift outside 0..63 gives
         * 0, and 2^63 wraps negative; either counts as one page. */
        int64_t nr = l2 >= 0 && l2 < 64 ? (int64_t)(UINT64_C(1) << l2) : 0;
        if (nr > 1) {
            long long end = pfn + nr, stop = end < cycle_end ? end : cycle_end;
            memset(b + (pfn - bits_start), 0, (size_t)(stop - pfn));
            cnt[k] += stop - pfn;
            last_end = end;
            last_kind = k;
            /* The scan goes on at `end`: skip the pfns in between. */
            if (end - start_pfn >= n)
                break;
            i = (Py_ssize_t)(end - start_pfn) - 1;
        } else {
            b[pfn - bits_start] = 0;
            cnt[k] += 1;
        }
    }
    if (last_end > resume)
        resume = last_end;
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("LLi", resume, last_end, last_kind);
out:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&examined);
    PyBuffer_Release(&tail_ok);
    PyBuffer_Release(&params);
    PyBuffer_Release(&bits);
    PyBuffer_Release(&counts);
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

/*
 * lzo1x_decompress(data, size) -> bytes: decode one LZO1X stream of at most
 * `size` bytes (lz_decompress(), bounds-checked: data comes from dump files).
 * Raises ValueError when the stream is malformed, truncated, longer than
 * `size` or followed by stray bytes.
 */
static PyObject *lzo1x_decompress(PyObject *self, PyObject *args)
{
    Py_buffer in;
    Py_ssize_t size;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*n", &in, &size))
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "lzo1x_decompress: negative size");
        goto out;
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL)
        goto out;
    ptrdiff_t got;
    Py_BEGIN_ALLOW_THREADS
    got = lz_decompress(in.buf, (size_t)in.len, (uint8_t *)PyBytes_AS_STRING(result), (size_t)size);
    Py_END_ALLOW_THREADS
    if (got < 0) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_ValueError, "LZO1X stream of %zd bytes is corrupt, truncated or longer than %zd bytes",
                     in.len, size);
    } else if (got < size) {
        (void)_PyBytes_Resize(&result, (Py_ssize_t)got); /* on failure: result NULL, MemoryError set */
    }
out:
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

/*
 * chunk_descs(sizes, known, page_size, flag, descs) -> (zero, compressed)
 *
 * The page_desc records of one chunk, from what encode_file_pages() stored.
 * known (one bool byte per page of the chunk) marks pages that were not read
 * (file holes: zero); sizes holds one int64 per page that was read, -1 for a
 * zero page.  Each record gets: a zero page, offset -1 (a marker the writer
 * replaces with the shared zero page's offset) and size page_size; a stored
 * page, its offset within the chunk's data (the running sum of the sizes
 * before it), its size, and flag when it was compressed (size < page_size:
 * makedumpfile stores a page raw, flags 0, when compression does not shrink
 * it).  page_flags is always 0.  Returns the counts of zero and compressed
 * pages.  One pass instead of a dozen numpy passes per chunk, each of them
 * reloading its data after the encoder has streamed megabytes through the
 * cache (with place_descs and sources.file_offsets' binary search: workers'
 * CPU 1.00-1.14 s -> 0.93-1.01 s at -l -d 31 on the 4 GiB generator image,
 * `benchmarks/phases.py IMG --level 31 --runs 3`, alternated twice).
 */
struct page_desc_rec {
    int64_t offset;
    uint32_t size;
    uint32_t flags;
    uint64_t page_flags;
};
_Static_assert(sizeof(struct page_desc_rec) == 24, "page_desc_t is 24 bytes");

static PyObject *chunk_descs(PyObject *self, PyObject *args)
{
    Py_buffer sizes, known, descs;
    Py_ssize_t page_size;
    unsigned int flag;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nIw*", &sizes, &known, &page_size, &flag, &descs))
        return NULL;
    Py_ssize_t n = known.len, m = sizes.len / (Py_ssize_t)sizeof(int64_t);
    if (page_size <= 0 || page_size > UINT32_MAX || descs.len != n * (Py_ssize_t)sizeof(struct page_desc_rec) ||
        sizes.len % (Py_ssize_t)sizeof(int64_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "chunk_descs: buffer sizes do not match");
        goto out;
    }
    const unsigned char *kn = known.buf;
    const int64_t *got = sizes.buf;
    struct page_desc_rec *d = descs.buf;
    Py_ssize_t i, j = 0, zero = 0, compressed = 0;
    int64_t at = 0;
    for (i = 0; i < n; i++) {
        int64_t g = -1;
        if (!kn[i]) {
            if (j == m)
                break;
            g = got[j++];
        }
        d[i].page_flags = 0;
        if (g < 0) {
            d[i].offset = -1;
            d[i].size = (uint32_t)page_size;
            d[i].flags = 0;
            zero++;
            continue;
        }
        if (g == 0 || g > page_size)
            break;
        d[i].offset = at;
        d[i].size = (uint32_t)g;
        d[i].flags = g < page_size ? flag : 0;
        compressed += g < page_size;
        at += g;
    }
    if (i != n || j != m) {
        PyErr_SetString(PyExc_ValueError, "chunk_descs: sizes do not match the pages read");
        goto out;
    }
    result = Py_BuildValue("nn", zero, compressed);
out:
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&known);
    PyBuffer_Release(&descs);
    return result;
}

/*
 * place_descs(descs, base, zero_offset) -> None
 *
 * Turn a chunk's relative page_desc offsets into file offsets once its data
 * has a place: base + offset for stored pages, zero_offset for the marker -1
 * (the shared zero page), 0 for the marker -2 (a page left out).
 */
static PyObject *place_descs(PyObject *self, PyObject *args)
{
    Py_buffer descs;
    long long base, zero_offset;

    (void)self;
    if (!PyArg_ParseTuple(args, "w*LL", &descs, &base, &zero_offset))
        return NULL;
    if (descs.len % (Py_ssize_t)sizeof(struct page_desc_rec) != 0) {
        PyBuffer_Release(&descs);
        PyErr_SetString(PyExc_ValueError, "place_descs: not a whole number of page_desc records");
        return NULL;
    }
    struct page_desc_rec *d = descs.buf;
    Py_ssize_t n = descs.len / (Py_ssize_t)sizeof(struct page_desc_rec);
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t o = d[i].offset;
        d[i].offset = o == -1 ? (int64_t)zero_offset : o == -2 ? 0 : o + (int64_t)base;
    }
    PyBuffer_Release(&descs);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode_pages", encode_pages, METH_VARARGS,
     "encode_pages(codec, src, page_size, share_zero, dst, sizes) -> bytes stored in dst"},
    {"encode_file_pages", encode_file_pages, METH_VARARGS,
     "encode_file_pages(codec, fd, offsets, page_size, share_zero, dst, sizes) -> bytes stored in dst"},
    {"decide_pages", decide_pages, METH_VARARGS,
     "decide_pages(raw, entry_size, offsets, widths, start_pfn, examined, tail_ok, params, kind, log2n) -> None"},
    {"scan_pages", scan_pages, METH_VARARGS,
     "scan_pages(raw, entry_size, offsets, widths, start_pfn, examined, tail_ok, params, bits, bits_start, "
     "cycle_end, resume, counts) -> (resume, last_end, last_kind)"},
    {"read_range", read_range, METH_VARARGS,
     "read_range(fd, offset, out, map_window, file_size): file bytes through mapped windows"},
    {"read_pages", read_pages, METH_VARARGS,
     "read_pages(fd, offsets, page_size, out): gather pages at file offsets into out"},
    {"chunk_descs", chunk_descs, METH_VARARGS,
     "chunk_descs(sizes, known, page_size, flag, descs) -> (zero, compressed): a chunk's page_desc records"},
    {"place_descs", place_descs, METH_VARARGS,
     "place_descs(descs, base, zero_offset): relative page_desc offsets to file offsets"},
    {"lzo1x_1", lzo1x_1, METH_O, "lzo1x_1(data) -> bytes: LZO1X-1, the bytes lzo1x_1_compress() writes"},
    {"lzo1x_decompress", lzo1x_decompress, METH_VARARGS,
     "lzo1x_decompress(data, size) -> bytes: LZO1X decoded (at most size bytes), checked for corrupt input"},
    {"load_codec", load_codec, METH_VARARGS,
     "load_codec(codec, soname, level) -> file of the library, or None: load snappy, zstd or fast zlib"},
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
