/*
 * Per-page cost and size of the page encoders --fast-zlib could use, in C, on
 * the same pages: zlib level 1 (makedumpfile -c), libdeflate levels 1-3,
 * ISA-L levels 0 and 1 (stateless, zlib wrapper), and for reference zstd
 * level 1 and snappy.  Every deflate output is checked with zlib's
 * uncompress().  Prints microseconds per page (best of 5 rounds, the encoders
 * taking turns) and stored bytes / page size (a page that does not shrink
 * counts as a page).
 *
 * Build: gcc -O2 -o deflate_encoders benchmarks/deflate_encoders.c \
 *            -lz -ldeflate -lisal -lzstd -lsnappy
 *   (Debian: zlib1g-dev libdeflate-dev libisal-dev libzstd-dev libsnappy-dev)
 * Run:   taskset -c 0 ./deflate_encoders VMCORE [PAGES [STRIDE]]
 *   PAGES non-zero pages (default 30000), one every STRIDE pages (default 5).
 */
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define PS 4096
#define ROUNDS 5

enum { ZLIB1, DEFLATE1, DEFLATE2, DEFLATE3, ISAL1, ISAL0, ZSTD1, SNAPPY, N };
static const char *names[N] = {"zlib 1",   "libdeflate 1", "libdeflate 2", "libdeflate 3",
                               "ISA-L 1", "ISA-L 0",      "zstd 1",       "snappy"};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int is_zero(const unsigned char *p)
{
    for (int i = 0; i < PS; i++)
        if (p[i])
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s VMCORE [PAGES [STRIDE]]\n", argv[0]);
        return 2;
    }
    long want = argc > 2 ? atol(argv[2]) : 30000, stride = argc > 3 ? atol(argv[3]) : 5, n = 0;
    int fd = open(argv[1], O_RDONLY);
    unsigned char *pages = malloc((size_t)want * PS), buf[PS], out[2 * PS], back[PS];
    for (off_t off = 0; n < want && pread(fd, buf, PS, off) == PS; off += PS * stride)
        if (!is_zero(buf))
            memcpy(pages + PS * n++, buf, PS);
    unsigned char *isal_buf = malloc(ISAL_DEF_LVL1_DEFAULT);
    struct isal_zstream zs;
    double best[N];
    long stored[N];
    for (int c = 0; c < N; c++)
        best[c] = 1e30;
    for (int round = 0; round < ROUNDS; round++) {
        for (int c = 0; c < N; c++) {
            struct libdeflate_compressor *dc = c >= DEFLATE1 && c <= DEFLATE3 ? libdeflate_alloc_compressor(c) : NULL;
            ZSTD_CCtx *cc = ZSTD_createCCtx();
            z_stream z;
            memset(&z, 0, sizeof z);
            deflateInit2(&z, 1, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY);
            long total = 0;
            double t = now();
            for (long i = 0; i < n; i++) {
                unsigned char *p = pages + i * PS;
                size_t got = PS;
                if (c == ZLIB1) {
                    deflateReset(&z);
                    z.next_in = p, z.avail_in = PS, z.next_out = out, z.avail_out = sizeof out;
                    if (deflate(&z, Z_FINISH) == Z_STREAM_END)
                        got = z.total_out;
                } else if (dc != NULL) {
                    got = libdeflate_zlib_compress(dc, p, PS, out, PS - 1);
                    got = got ? got : PS;
                } else if (c == ISAL1 || c == ISAL0) {
                    isal_deflate_stateless_init(&zs);
                    zs.level = c == ISAL1;
                    zs.level_buf = c == ISAL1 ? isal_buf : NULL;
                    zs.level_buf_size = c == ISAL1 ? ISAL_DEF_LVL1_DEFAULT : 0;
                    zs.gzip_flag = IGZIP_ZLIB, zs.end_of_stream = 1, zs.flush = NO_FLUSH;
                    zs.next_in = p, zs.avail_in = PS, zs.next_out = out, zs.avail_out = PS - 1;
                    got = isal_deflate_stateless(&zs) == COMP_OK ? zs.total_out : PS;
                } else if (c == ZSTD1) {
                    got = ZSTD_compressCCtx(cc, out, sizeof out, p, PS, 1);
                } else {
                    got = sizeof out;
                    snappy_compress((const char *)p, PS, (char *)out, &got);
                }
                if (got < PS && c <= ISAL0) {
                    uLongf len = PS;
                    if (uncompress(back, &len, out, got) != Z_OK || len != PS || memcmp(back, p, PS)) {
                        fprintf(stderr, "%s: page %ld does not decompress to itself\n", names[c], i);
                        return 1;
                    }
                }
                total += got < PS ? (long)got : PS;
            }
            t = now() - t;
            best[c] = t < best[c] ? t : best[c];
            stored[c] = total;
            libdeflate_free_compressor(dc);
            ZSTD_freeCCtx(cc);
            deflateEnd(&z);
        }
    }
    printf("%ld non-zero pages of %s, one every %ld pages; best of %d rounds\n", n, argv[1], stride, ROUNDS);
    for (int c = 0; c < N; c++)
        printf("%-13s %6.2f us/page  stored/page %.3f  (%.3f x zlib 1)\n", names[c], best[c] / (double)n * 1e6,
               (double)stored[c] / ((double)n * PS), (double)stored[c] / (double)stored[ZLIB1]);
    return 0;
}
