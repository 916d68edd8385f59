/*
** test_idx.c: reading IDX files. Every test writes its own small files, plain and
** gzipped, into a fresh temporary directory; the last one reads the real
** Fashion-MNIST test set when Debian's dataset-fashion-mnist package is installed.
*/
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ad.h"
#include "support.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist/"

static char dir[64];

static void make_dir(void)
{
    ts_tmpdir_make(dir, sizeof dir, "idx");
}

static void remove_dir(void)
{
    ts_tmpdir_remove(dir);
}

TestSuite(idx, .init = make_dir, .fini = remove_dir);

/* dir/name; a ring of four buffers so a test can hold an images and a labels path. */
static const char *path_of(const char *name)
{
    static char ring[4][600];
    static int next;
    char *p = ring[next++ % 4];
    snprintf(p, sizeof ring[0], "%s/%s", dir, name);
    return p;
}

/* An IDX file being assembled in memory. */
typedef struct idx_bytes {
    unsigned char b[4096];
    size_t n;
} idx_bytes;

static void put(idx_bytes *f, const void *data, size_t n)
{
    cr_assert_leq(f->n + n, sizeof f->b);
    memcpy(f->b + f->n, data, n);
    f->n += n;
}

static void put_header(idx_bytes *f, unsigned type, int ndim, const uint32_t *dims)
{
    unsigned char magic[4] = {0, 0, (unsigned char)type, (unsigned char)ndim};
    put(f, magic, 4);
    for (int i = 0; i < ndim; i++) {
        unsigned char be[4] = {(unsigned char)(dims[i] >> 24), (unsigned char)(dims[i] >> 16),
                               (unsigned char)(dims[i] >> 8), (unsigned char)dims[i]};
        put(f, be, 4);
    }
}

/* Pixel k of the fixture: covers 0 and 255 and a spread in between. */
static unsigned char pixel(int k)
{
    return k == 1 ? 255 : (unsigned char)(k * 37 % 256);
}

static const unsigned char fixture_labels[5] = {3, 0, 9, 1, 9};

/* `count` images of 3 x 4. */
static idx_bytes images_file(uint32_t count)
{
    idx_bytes f = {.n = 0};
    put_header(&f, 0x08, 3, (const uint32_t[]){count, 3, 4});
    for (int k = 0; k < (int)count * 12; k++) {
        unsigned char p = pixel(k);
        put(&f, &p, 1);
    }
    return f;
}

/* `count` labels (at most 5) from fixture_labels. */
static idx_bytes labels_file(uint32_t count)
{
    idx_bytes f = {.n = 0};
    put_header(&f, 0x08, 1, &count);
    put(&f, fixture_labels, count);
    return f;
}

static const char *write_plain(const char *name, const idx_bytes *f)
{
    const char *p = path_of(name);
    FILE *fp = fopen(p, "wb");
    cr_assert_not_null(fp, "fopen %s: %s", p, strerror(errno));
    cr_assert_eq(fwrite(f->b, 1, f->n, fp), f->n);
    cr_assert_eq(fclose(fp), 0);
    return p;
}

/* CRC-32 (IEEE 802.3, reflected), bit by bit: the gzip trailer's checksum. */
static uint32_t crc32_of(const unsigned char *b, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= b[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

/*
** A gzip file (RFC 1952) whose deflate stream is one stored block (RFC 1951, 3.2.4),
** written here rather than with gzopen(path, "wb"): the test executables do not link
** zlib, and a writer independent of the reader's library is a fairer reference.
** Compressed blocks are covered by the Fashion-MNIST test.
*/
static const char *write_gz(const char *name, const idx_bytes *f)
{
    static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    const char *p = path_of(name);
    FILE *fp = fopen(p, "wb");
    cr_assert_not_null(fp, "fopen %s: %s", p, strerror(errno));
    uint32_t len = (uint32_t)f->n, crc = crc32_of(f->b, f->n);
    unsigned char block[5] = {1, len & 0xFF, len >> 8, ~len & 0xFF, (~len >> 8) & 0xFF};
    unsigned char trailer[8]; /* CRC-32 and length, little-endian */
    for (int i = 0; i < 4; i++) {
        trailer[i] = (unsigned char)(crc >> (8 * i));
        trailer[4 + i] = (unsigned char)(len >> (8 * i));
    }
    fwrite(header, 1, sizeof header, fp);
    fwrite(block, 1, sizeof block, fp);
    cr_assert_eq(fwrite(f->b, 1, f->n, fp), f->n);
    cr_assert_eq(fwrite(trailer, 1, sizeof trailer, fp), sizeof trailer);
    cr_assert_eq(fclose(fp), 0);
    return p;
}

static void assert_message(const char *needle)
{
    if (needle)
        cr_assert_not_null(strstr(ad_last_error(), needle), "message \"%s\" lacks \"%s\"",
                           ad_last_error(), needle);
}

/* ad_idx_read(path) must fail with `want`, name n1 and n2, and leave *out alone. */
static void read_fails(const char *path, ad_status want, const char *n1, const char *n2)
{
    ad_tensor sentinel, *out = &sentinel;
    ad_status rc = ad_idx_read(path, &out);
    cr_assert_eq(rc, want, "got %s (%s), want %s", ad_status_str(rc), ad_last_error(),
                 ad_status_str(want));
    cr_assert_eq(out, &sentinel, "*out changed on failure");
    assert_message(path);
    assert_message(n1);
    assert_message(n2);
}

static void pair_fails(const char *ipath, const char *lpath, int n_classes, ad_status want,
                       const char *n1, const char *n2)
{
    ad_tensor sentinel, *x = &sentinel, *y = &sentinel;
    ad_status rc = ad_idx_read_pair(ipath, lpath, n_classes, &x, &y);
    cr_assert_eq(rc, want, "got %s (%s), want %s", ad_status_str(rc), ad_last_error(),
                 ad_status_str(want));
    cr_assert(x == &sentinel && y == &sentinel, "outputs changed on failure");
    assert_message(n1);
    assert_message(n2);
}

static void assert_fixture_images(const ad_tensor *t, int64_t count)
{
    cr_assert_eq(t->dtype, AD_F32);
    cr_assert_eq(t->ndim, 2);
    cr_assert(t->shape[0] == count && t->shape[1] == 12 && t->size == count * 12);
    for (int k = 0; k < (int)t->size; k++)
        cr_assert_eq(((const float *)t->data)[k], (float)pixel(k) / 255.0f, "pixel %d", k);
}

static void assert_fixture_labels(const ad_tensor *t, int64_t count)
{
    cr_assert_eq(t->dtype, AD_I32);
    cr_assert(t->ndim == 1 && t->shape[0] == count && t->size == count);
    for (int i = 0; i < (int)count; i++)
        cr_assert_eq(((const int32_t *)t->data)[i], fixture_labels[i], "label %d", i);
}

Test(idx, images_and_labels_read_back_exactly_plain_and_gzipped)
{
    const char *(*const writers[2])(const char *, const idx_bytes *) = {write_plain, write_gz};
    idx_bytes fi = images_file(5), fl = labels_file(5);
    for (int w = 0; w < 2; w++) {
        ad_tensor *x = NULL, *y = NULL;
        cr_assert_eq(ad_idx_read(writers[w]("img", &fi), &x), AD_OK, "%s", ad_last_error());
        cr_assert_eq(ad_idx_read(writers[w]("lab", &fl), &y), AD_OK, "%s", ad_last_error());
        assert_fixture_images(x, 5);
        assert_fixture_labels(y, 5);
        ad_tensor_free(x);
        ad_tensor_free(y);
    }
}

Test(idx, pair_reads_gzipped_images_with_plain_labels)
{
    idx_bytes fi = images_file(5), fl = labels_file(5);
    const char *ip = write_gz("img.gz", &fi), *lp = write_plain("lab", &fl);
    ad_tensor *x = NULL, *y = NULL;
    cr_assert_eq(ad_idx_read_pair(ip, lp, 10, &x, &y), AD_OK, "%s", ad_last_error());
    assert_fixture_images(x, 5);
    assert_fixture_labels(y, 5);
    ad_tensor_free(x);
    ad_tensor_free(y);
}

Test(idx, missing_file_is_io_error_with_path_and_system_reason)
{
    read_fails(path_of("absent"), AD_ERR_IO, strerror(ENOENT), NULL);
}

Test(idx, unreadable_file_is_io_error_with_zlib_text)
{
    /* opening a directory succeeds; the first gzread fails with EISDIR */
    read_fails(dir, AD_ERR_IO, "read failed", strerror(EISDIR));
}

Test(idx, gzip_checksum_error_is_io_error)
{
    idx_bytes f = images_file(5);
    const char *p = write_gz("img.gz", &f);
    FILE *fp = fopen(p, "r+b");
    cr_assert_not_null(fp);
    cr_assert_eq(fseek(fp, -8, SEEK_END), 0); /* the CRC-32 trailer: spoil its first byte */
    fputc((int)(~crc32_of(f.b, f.n) & 0xFF), fp);
    cr_assert_eq(fclose(fp), 0);
    read_fails(p, AD_ERR_IO, "read failed", "incorrect data check");
}

Test(idx, wrong_magic_is_bad_magic)
{
    idx_bytes f = images_file(2);
    f.b[0] = 'P';
    f.b[1] = 'K';
    read_fails(write_plain("zip", &f), AD_ERR_BAD_MAGIC, "50 4b", "00 00");
}

Test(idx, wrong_type_code_is_bad_magic_naming_the_type)
{
    idx_bytes f = images_file(2);
    f.b[2] = 0x0D;
    read_fails(write_plain("float", &f), AD_ERR_BAD_MAGIC, "0x0d", "float");
}

Test(idx, rank_other_than_1_or_3_is_bad_magic)
{
    idx_bytes f = {.n = 0};
    put_header(&f, 0x08, 2, (const uint32_t[]){2, 2});
    put(&f, "\1\2\3\4", 4);
    read_fails(write_plain("rank2", &f), AD_ERR_BAD_MAGIC, "rank 2", NULL);
}

Test(idx, truncated_data_is_truncated_with_expected_and_got)
{
    idx_bytes f = images_file(5);
    f.n -= 3;
    read_fails(write_plain("cut", &f), AD_ERR_TRUNCATED, "expected 60", "got 57");
    read_fails(write_gz("cut.gz", &f), AD_ERR_TRUNCATED, "expected 60", "got 57");
}

Test(idx, gzip_stream_cut_short_is_truncated)
{
    idx_bytes f = images_file(5);
    const char *p = write_gz("img.gz", &f);
    /* 10 bytes of gzip header, 5 of block header, 16 of IDX header, 19 of pixels */
    cr_assert_eq(truncate(p, 50), 0, "truncate: %s", strerror(errno));
    read_fails(p, AD_ERR_TRUNCATED, "expected 60", "got 19");
}

Test(idx, file_ending_inside_the_header_is_truncated)
{
    idx_bytes f = {.n = 0};
    read_fails(write_plain("empty", &f), AD_ERR_TRUNCATED, "magic", NULL);
    f = images_file(1);
    f.n = 10; /* magic, one extent and half of the next */
    read_fails(write_plain("half", &f), AD_ERR_TRUNCATED, "expected 12", "got 6");
}

Test(idx, trailing_bytes_are_count_mismatch)
{
    idx_bytes f = labels_file(5);
    put(&f, "\0", 1);
    read_fails(write_plain("long", &f), AD_ERR_COUNT_MISMATCH, "trailing", "5 data bytes");
    read_fails(write_gz("long.gz", &f), AD_ERR_COUNT_MISMATCH, "trailing", NULL);
}

Test(idx, pair_count_mismatch_names_both_files_and_counts)
{
    idx_bytes fi = images_file(5), fl = labels_file(4);
    const char *ip = write_plain("img", &fi), *lp = write_plain("lab", &fl);
    pair_fails(ip, lp, 10, AD_ERR_COUNT_MISMATCH, ip, lp);
    assert_message("5 images");
    assert_message("4 labels");
}

Test(idx, pair_label_out_of_range_names_index_and_value)
{
    idx_bytes fi = images_file(5), fl = labels_file(5);
    const char *ip = write_plain("img", &fi), *lp = write_plain("lab", &fl);
    pair_fails(ip, lp, 9, AD_ERR_INVALID, "label 9 at index 2", "0..8");
    assert_message(lp);
}

Test(idx, pair_wants_rank_3_images_and_rank_1_labels)
{
    idx_bytes fi = images_file(5), fl = labels_file(5);
    const char *ip = write_plain("img", &fi), *lp = write_plain("lab", &fl);
    pair_fails(lp, ip, 10, AD_ERR_BAD_MAGIC, lp, "rank-3 images");
    pair_fails(ip, ip, 10, AD_ERR_BAD_MAGIC, "rank 3", "rank-1 labels");
}

Test(idx, null_arguments_and_bad_class_count_are_refused)
{
    ad_tensor *x = NULL, *y = NULL;
    cr_assert_eq(ad_idx_read(NULL, &x), AD_ERR_NULL);
    cr_assert_eq(ad_idx_read("x", NULL), AD_ERR_NULL);
    cr_assert_eq(ad_idx_read_pair("a", NULL, 10, &x, &y), AD_ERR_NULL);
    cr_assert_eq(ad_idx_read_pair("a", "b", 10, &x, NULL), AD_ERR_NULL);
    cr_assert_eq(ad_idx_read_pair("a", "b", 0, &x, &y), AD_ERR_INVALID);
    cr_assert(x == NULL && y == NULL);
}

/* Headers that announce more than 2^31 elements, with no data behind them. */
Test(idx, huge_extents_overflow_without_allocating)
{
    static const struct {
        int ndim;
        uint32_t dims[3];
    } cases[] = {
        {1, {0xFFFFFFFFu}},                         /* 4 G labels */
        {3, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}}, /* product beyond 2^64 */
        {3, {65536, 65536, 1}},                     /* exactly 2^32 */
        {3, {0, 0xFFFFFFFFu, 0xFFFFFFFFu}},           /* no images, absurd images */
    };
    ts_alloc_install();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        idx_bytes f = {.n = 0};
        put_header(&f, 0x08, cases[i].ndim, cases[i].dims);
        const char *p = write_plain("huge", &f);
        ts_alloc_fail_at(0); /* resets the count */
        read_fails(p, AD_ERR_OVERFLOW, "2^31", NULL);
        cr_assert_eq(ts_alloc_count(), 0, "case %zu allocated", i);
    }
    ts_alloc_uninstall();
}

/*
** Reads ip alone (lp NULL) or the pair, failing allocation 1, 2, 3, ... until the call
** succeeds; each failure must be AD_ERR_NOMEM, leave the outputs alone and leak
** nothing. Returns how many allocations were failed.
*/
static uint64_t oom_loop(const char *ip, const char *lp)
{
    ts_alloc_install();
    int64_t before = ts_alloc_outstanding();
    for (uint64_t n = 1; n < 100; n++) {
        ad_tensor sentinel, *x = &sentinel, *y = &sentinel;
        ts_alloc_fail_at(n);
        ad_status rc = lp ? ad_idx_read_pair(ip, lp, 10, &x, &y) : ad_idx_read(ip, &x);
        ts_alloc_fail_at(0);
        if (rc == AD_OK) {
            assert_fixture_images(x, 5);
            ad_tensor_free(x);
            if (lp) {
                assert_fixture_labels(y, 5);
                ad_tensor_free(y);
            }
            cr_assert_eq(ts_alloc_outstanding(), before, "leak after success");
            ts_alloc_uninstall();
            return n - 1;
        }
        cr_assert_eq(rc, AD_ERR_NOMEM, "allocation %d: %s", (int)n, ad_last_error());
        cr_assert(x == &sentinel && y == &sentinel, "outputs changed at allocation %d", (int)n);
        cr_assert_eq(ts_alloc_outstanding(), before, "leak at allocation %d", (int)n);
        assert_message("out of memory");
    }
    cr_assert_fail("never succeeded");
    return 0;
}

Test(idx, out_of_memory_at_every_allocation_is_clean)
{
    idx_bytes fi = images_file(5), fl = labels_file(5);
    const char *ip = write_gz("img.gz", &fi), *lp = write_plain("lab", &fl);
    /* a tensor and its data per file */
    cr_assert_geq(oom_loop(ip, NULL), 2);
    cr_assert_geq(oom_loop(ip, lp), 4);
}

Test(idx, fashion_mnist_test_set_has_1000_of_each_class)
{
    const char *ip = FMNIST_DIR "t10k-images-idx3-ubyte.gz";
    const char *lp = FMNIST_DIR "t10k-labels-idx1-ubyte.gz";
    if (access(ip, R_OK) != 0 || access(lp, R_OK) != 0)
        cr_skip_test("dataset-fashion-mnist is not installed");
    ad_tensor *x = NULL, *y = NULL;
    cr_assert_eq(ad_idx_read_pair(ip, lp, 10, &x, &y), AD_OK, "%s", ad_last_error());
    cr_assert(x->ndim == 2 && x->shape[0] == 10000 && x->shape[1] == 784);
    cr_assert(y->ndim == 1 && y->shape[0] == 10000);
    float lo = 1.0f, hi = 0.0f;
    for (int64_t i = 0; i < x->size; i++) {
        float v = ((const float *)x->data)[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    cr_assert(lo == 0.0f && hi == 1.0f, "pixels span [%g, %g]", lo, hi);
    int per_class[10] = {0};
    for (int64_t i = 0; i < y->size; i++)
        per_class[((const int32_t *)y->data)[i]]++; /* range checked by read_pair */
    for (int c = 0; c < 10; c++)
        cr_assert_eq(per_class[c], 1000, "class %d has %d images", c, per_class[c]);
    ad_tensor_free(x);
    ad_tensor_free(y);
}
