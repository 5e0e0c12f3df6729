/*
 * vmcorepack._native: the per-page loop of the page encoder, in C.
 *
 * Python pays about a microsecond per page to call a codec binding (slice the
 * page into a bytes object, parse arguments, allocate the result, resize it);
 * with LZO that is as much as the compression itself.  This module runs the
 * whole loop for a chunk of pages in one call, with the GIL released:
 * zero test, compression into one output buffer, and the raw fallback.  It
 * also gathers scattered pages from the input with one preadv per stretch.
 *
 * It must produce exactly what makedumpfile writes (docs/kdump-format.md
 * §5.3): LZO1X-1 via lzo1x_1_compress, and zlib level 1 as compress2() does
 * it (deflateInit(level 1) = deflateInit2(1, Z_DEFLATED, 15, 8,
 * Z_DEFAULT_STRATEGY); deflateReset() between pages gives the same stream as
 * a fresh deflateInit()).  A page is stored compressed only when the result is
 * strictly smaller than a page; otherwise the raw page is stored.
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

#include <lzo/lzo1x.h>
#include <zlib.h>

enum { CODEC_NONE = 0, CODEC_ZLIB = 1, CODEC_LZO = 2 };

/* Worst-case growth of one compressed page over its input, for the caller's
 * buffer: LZO1X needs n + n/16 + 64 + 3 bytes; zlib's compressBound is smaller. */
static Py_ssize_t headroom(Py_ssize_t page_size)
{
    return page_size / 16 + 64 + 3;
}

static int page_is_zero(const unsigned char *p, Py_ssize_t n)
{
    const uint64_t *w = (const uint64_t *)p;
    Py_ssize_t i, words = n / 8;

    /* Most non-zero pages differ from zero in their first words. */
    for (i = 0; i < words; i++)
        if (w[i])
            return 0;
    return 1;
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
    if (codec != CODEC_NONE && codec != CODEC_ZLIB && codec != CODEC_LZO) {
        PyErr_SetString(PyExc_ValueError, "unknown codec");
        goto out;
    }

    const unsigned char *in = src.buf;
    unsigned char *o = dst.buf;
    int64_t *sz = sizes.buf;
    Py_ssize_t pos = 0;
    void *wrkmem = NULL;
    z_stream zs;
    int zinit = 0;

    Py_BEGIN_ALLOW_THREADS
    if (codec == CODEC_LZO) {
        wrkmem = malloc(LZO1X_1_MEM_COMPRESS);
        failed = wrkmem == NULL;
    } else if (codec == CODEC_ZLIB) {
        memset(&zs, 0, sizeof(zs));
        failed = deflateInit2(&zs, 1, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY) != Z_OK;
        zinit = !failed;
    }
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        const unsigned char *page = in + i * page_size;
        unsigned char *to = o + pos;
        Py_ssize_t got = page_size;

        if (share_zero && page_is_zero(page, page_size)) {
            sz[i] = -1;
            continue;
        }
        if (codec == CODEC_LZO) {
            lzo_uint len = 0;
            if (lzo1x_1_compress(page, (lzo_uint)page_size, to, &len, wrkmem) == LZO_E_OK)
                got = (Py_ssize_t)len;
        } else if (codec == CODEC_ZLIB) {
            if (deflateReset(&zs) != Z_OK) {
                failed = 1;
                break;
            }
            zs.next_in = (Bytef *)page;
            zs.avail_in = (uInt)page_size;
            zs.next_out = to;
            zs.avail_out = (uInt)(page_size + headroom(page_size));
            if (deflate(&zs, Z_FINISH) == Z_STREAM_END)
                got = (Py_ssize_t)zs.total_out;
        }
        if (got >= page_size) {
            memcpy(to, page, (size_t)page_size);
            got = page_size;
        }
        sz[i] = got;
        pos += got;
    }
    if (zinit)
        deflateEnd(&zs);
    free(wrkmem);
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
 * discarded buffer) rather than starting a new read: copying 8 pages costs
 * less than a system call. */
#define GAP_PAGES 8
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
 * read_pages(fd, offsets, page_size, out) -> None
 *
 * Reads page i from file offset offsets[i] (int64, ascending) into
 * out[i * page_size:].  Pages that are consecutive in the file, or separated
 * by at most GAP_PAGES pages, are read with one preadv; the bytes between
 * them land in a scratch buffer.  Past the end of the file, out keeps what it
 * held (zeros for a fresh buffer).  An I/O error raises OSError; the caller
 * then isolates the unreadable pages itself.
 */
static PyObject *read_pages(PyObject *self, PyObject *args)
{
    int fd, failed = 0, err = 0;
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
    failed = junk == NULL;
    if (failed)
        err = ENOMEM;
    Py_ssize_t i = 0;
    while (i < n && !failed) {
        struct iovec iov[MAX_IOV];
        int k = 0;
        Py_ssize_t j = i, total = 0;

        /* One stretch: pages j = i.. while the next starts within GAP_PAGES of this one's end. */
        for (;;) {
            iov[k].iov_base = dst + j * page_size;
            iov[k].iov_len = (size_t)page_size;
            k++;
            total += page_size;
            j++;
            if (j >= n || k + 2 > MAX_IOV)
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
        if (got < 0) {
            failed = 1;
            err = errno;
        } else if (got < total) {
            /* Short (end of file, or a device that reads less): page by page. */
            for (Py_ssize_t p = i; p < j && !failed; p++)
                if (read_full(fd, dst + p * page_size, page_size, o[p]) < 0) {
                    failed = 1;
                    err = errno;
                }
        }
        i = j;
    }
    free(junk);
    Py_END_ALLOW_THREADS

    if (failed) {
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
    {"read_pages", read_pages, METH_VARARGS,
     "read_pages(fd, offsets, page_size, out): gather pages at file offsets into out"},
    {"headroom", py_headroom, METH_O, "headroom(page_size) -> extra bytes dst needs past n * page_size"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vmcorepack._native", "Per-page encoder loop in C (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (lzo_init() != LZO_E_OK) {
        PyErr_SetString(PyExc_ImportError, "lzo_init() failed");
        return NULL;
    }
    return PyModule_Create(&module);
}
