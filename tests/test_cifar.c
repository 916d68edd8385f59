/*
** test_cifar.c: CIFAR-10 batches, per-channel normalisation, random crop and flip.
** Every test writes its own small batch files into a fresh temporary directory, with
** pixel bytes given by a formula of (record, offset), so an expected value is the
** byte at offset 1 + c*1024 + h*32 + w of its record, derived here, not by the reader.
*/
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ad.h"
#include "support.h"

enum { PIXELS = 3072, RECORD = 3073 };

static char dir[64];

static void make_dir(void)
{
    ts_tmpdir_make(dir, sizeof dir, "cifar");
}

static void remove_dir(void)
{
    ts_tmpdir_remove(dir);
}

TestSuite(cifar, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name)
{
    static char ring[4][600];
    static int next;
    char *p = ring[next++ % 4];
    snprintf(p, sizeof ring[0], "%s/%s", dir, name);
    return p;
}

/* Pixel byte k (0..3071) of global record r: depends on the plane, row and column
** separately, so a swapped plane, a transposed image or a shifted record shows. */
static unsigned char pix(int r, int k)
{
    return (unsigned char)(r * 101 + (k >> 10) * 67 + ((k >> 5) & 31) * 7 + (k & 31) * 3);
}

/* n records, global numbers first..first+n-1, labels (r * 3) % 10 unless bad_label
** >= 0 names a record (local index) that gets label 10; `cut` bytes dropped at the end. */
static const char *write_batch(const char *name, int first, int n, int bad_label, int cut)
{
    const char *p = path_of(name);
    FILE *fp = fopen(p, "wb");
    cr_assert_not_null(fp, "fopen %s: %s", p, strerror(errno));
    long total = (long)n * RECORD - cut;
    for (long b = 0; b < total; b++) {
        int r = (int)(b / RECORD), off = (int)(b % RECORD);
        int label = r == bad_label ? 10 : (first + r) * 3 % 10;
        int v = off == 0 ? label : pix(first + r, off - 1);
        fputc(v, fp);
    }
    cr_assert_eq(fclose(fp), 0);
    return p;
}

/* Record r of x/y is global record first + r, all of it. */
static void assert_records(const ad_tensor *x, const ad_tensor *y, int64_t at, int first,
                           int n)
{
    const float *xs = x->data;
    const int32_t *ys = y->data;
    for (int r = 0; r < n; r++) {
        cr_assert_eq(ys[at + r], (first + r) * 3 % 10, "label of record %d", first + r);
        for (int c = 0; c < 3; c++)
            for (int h = 0; h < 32; h++)
                for (int w = 0; w < 32; w++) {
                    float want = (float)pix(first + r, c * 1024 + h * 32 + w) / 255.0f;
                    float got = xs[(((at + r) * 3 + c) * 32 + h) * 32 + w];
                    cr_assert_eq(got, want, "record %d (%d, %d, %d): %g, want %g",
                                 first + r, c, h, w, got, want);
                }
    }
}

/* Open descriptors of this process (each test runs in its own): a reader that leaks
** one per call would exhaust a training run's descriptors over its epochs. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Frees every tensor named. */
#define FREE_ALL(...)                                                                   \
    do {                                                                                \
        ad_tensor *all_[] = {__VA_ARGS__};                                              \
        for (size_t i_ = 0; i_ < sizeof all_ / sizeof all_[0]; i_++)                    \
            ad_tensor_free(all_[i_]);                                                   \
    } while (0)

static void assert_message(const char *a, const char *b)
{
    const char *m = ad_last_error();
    cr_assert_not_null(strstr(m, a), "message \"%s\" lacks \"%s\"", m, a);
    if (b)
        cr_assert_not_null(strstr(m, b), "message \"%s\" lacks \"%s\"", m, b);
}

Test(cifar, reads_a_batch_as_nchw_scaled_bytes)
{
    const char *p = write_batch("b.bin", 0, 3, -1, 0);
    ad_tensor *x = NULL, *y = NULL;
    cr_assert_eq(ad_cifar10_read(p, &x, &y), AD_OK, "%s", ad_last_error());
    cr_assert(x->dtype == AD_F32 && x->ndim == 4 && x->shape[0] == 3 && x->shape[1] == 3 &&
              x->shape[2] == 32 && x->shape[3] == 32);
    cr_assert(y->dtype == AD_I32 && y->ndim == 1 && y->shape[0] == 3);
    assert_records(x, y, 0, 0, 3);
    /* By hand: record 1, blue (c 2), row 5, column 7 is byte 1 + 2048 + 160 + 7 of the
    ** record: 101 + 2*67 + 5*7 + 7*3 = 291 -> 35; and its label is 3. */
    cr_assert_eq(((float *)x->data)[((1 * 3 + 2) * 32 + 5) * 32 + 7], 35.0f / 255.0f);
    cr_assert_eq(((int32_t *)y->data)[1], 3);
    FREE_ALL(x, y);
}

Test(cifar, read_dir_concatenates_batches_1_to_5_in_order)
{
    static const int sizes[5] = {2, 1, 3, 1, 2};
    char name[32];
    for (int b = 0, first = 0; b < 5; first += sizes[b], b++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", b + 1);
        write_batch(name, first, sizes[b], -1, 0);
    }
    write_batch("test_batch.bin", 50, 2, -1, 0);
    int fds = open_fds();
    ad_tensor *x = NULL, *y = NULL;
    cr_assert_eq(ad_cifar10_read_dir(dir, 1, &x, &y), AD_OK, "%s", ad_last_error());
    cr_assert_eq(x->shape[0], 9);
    cr_assert_eq(y->shape[0], 9);
    assert_records(x, y, 0, 0, 9); /* global records 0..8 in batch order */
    FREE_ALL(x, y);
    cr_assert_eq(open_fds(), fds, "a read left a descriptor open");
    char slash[80];
    snprintf(slash, sizeof slash, "%s/", dir); /* a trailing slash is one separator */
    cr_assert_eq(ad_cifar10_read_dir(slash, 0, &x, &y), AD_OK, "%s", ad_last_error());
    cr_assert_eq(x->shape[0], 2);
    assert_records(x, y, 0, 50, 2);
    FREE_ALL(x, y);
}

/* The call fails with code and a message holding a and b; outputs untouched. */
static void read_fails(const char *p, int as_dir, int train, ad_status code, const char *a,
                       const char *b)
{
    ad_tensor sentinel, *x = &sentinel, *y = &sentinel;
    ad_status rc = as_dir ? ad_cifar10_read_dir(p, train, &x, &y) : ad_cifar10_read(p, &x, &y);
    cr_assert_eq(rc, code, "%s: got %s (%s)", p, ad_status_str(rc), ad_last_error());
    cr_assert(x == &sentinel && y == &sentinel, "an out-param was set on failure");
    assert_message(a, b);
}

Test(cifar, bad_files_fail_naming_the_file)
{
    int fds = open_fds();
    const char *p = write_batch("short.bin", 0, 2, -1, 1);
    read_fails(p, 0, 0, AD_ERR_TRUNCATED, p, "6145 bytes");
    p = write_batch("empty.bin", 0, 0, -1, 0);
    read_fails(p, 0, 0, AD_ERR_TRUNCATED, p, "0 bytes");
    p = write_batch("label.bin", 0, 4, 2, 0);
    read_fails(p, 0, 0, AD_ERR_INVALID, p, "record 2");
    p = write_batch("label0.bin", 0, 1, 0, 0); /* the very first byte */
    read_fails(p, 0, 0, AD_ERR_INVALID, p, "record 0");
    p = path_of("missing.bin");
    read_fails(p, 0, 0, AD_ERR_IO, p, strerror(ENOENT));
    read_fails(dir, 0, 0, AD_ERR_IO, dir, "not a regular file");
    cr_assert_eq(open_fds(), fds, "a failed read left a descriptor open");
}

Test(cifar, read_dir_names_the_batch_that_failed)
{
    int fds = open_fds();
    read_fails(dir, 1, 0, AD_ERR_IO, "test_batch.bin", strerror(ENOENT));
    write_batch("data_batch_1.bin", 0, 1, -1, 0);
    write_batch("data_batch_2.bin", 1, 1, -1, 0);
    write_batch("data_batch_4.bin", 3, 1, -1, 0);
    write_batch("data_batch_5.bin", 4, 1, -1, 0);
    read_fails(dir, 1, 1, AD_ERR_IO, path_of("data_batch_3.bin"), strerror(ENOENT));
    write_batch("data_batch_3.bin", 2, 1, -1, 7);
    read_fails(dir, 1, 1, AD_ERR_TRUNCATED, path_of("data_batch_3.bin"), "3066 bytes");
    write_batch("data_batch_3.bin", 2, 1, -1, 0);
    write_batch("data_batch_5.bin", 4, 2, 1, 0);
    read_fails(dir, 1, 1, AD_ERR_INVALID, path_of("data_batch_5.bin"), "record 1");
    cr_assert_eq(open_fds(), fds, "a failed read left a descriptor open");
}

Test(cifar, null_arguments)
{
    const char *p = write_batch("b.bin", 0, 1, -1, 0);
    ad_tensor *x = NULL, *y = NULL;
    cr_assert_eq(ad_cifar10_read(NULL, &x, &y), AD_ERR_NULL);
    cr_assert_eq(ad_cifar10_read(p, NULL, &y), AD_ERR_NULL);
    cr_assert_eq(ad_cifar10_read(p, &x, NULL), AD_ERR_NULL);
    cr_assert_eq(ad_cifar10_read_dir(NULL, 1, &x, &y), AD_ERR_NULL);
    cr_assert_eq(ad_cifar10_read_dir(dir, 1, NULL, &y), AD_ERR_NULL);
    cr_assert_eq(ad_cifar10_read_dir(dir, 0, &x, NULL), AD_ERR_NULL);
    cr_assert(x == NULL && y == NULL);
}

/* Fails allocation 1, 2, ... until the call succeeds: each failure AD_ERR_NOMEM with
** nothing set and nothing leaked. Returns how many allocations were failed. */
static uint64_t oom_loop(const char *p, int as_dir, int64_t n)
{
    ts_alloc_install();
    int64_t before = ts_alloc_outstanding();
    for (uint64_t k = 1; k < 100; k++) {
        ad_tensor sentinel, *x = &sentinel, *y = &sentinel;
        ts_alloc_fail_at(k);
        ad_status rc = as_dir ? ad_cifar10_read_dir(p, 0, &x, &y) : ad_cifar10_read(p, &x, &y);
        ts_alloc_fail_at(0);
        if (rc == AD_OK) {
            assert_records(x, y, 0, 0, (int)n);
            FREE_ALL(x, y);
            cr_assert_eq(ts_alloc_outstanding(), before, "leak after success");
            ts_alloc_uninstall();
            return k - 1;
        }
        cr_assert_eq(rc, AD_ERR_NOMEM, "allocation %d: %s", (int)k, ad_last_error());
        cr_assert(x == &sentinel && y == &sentinel, "outputs set at allocation %d", (int)k);
        cr_assert_eq(ts_alloc_outstanding(), before, "leak at allocation %d", (int)k);
        assert_message("out of memory", NULL);
    }
    cr_assert_fail("never succeeded");
    return 0;
}

Test(cifar, out_of_memory_at_every_allocation_is_clean)
{
    const char *p = write_batch("test_batch.bin", 0, 2, -1, 0);
    cr_assert_geq(oom_loop(p, 0, 2), 2); /* two tensors, at least one block each */
    cr_assert_geq(oom_loop(dir, 1, 2), 3); /* and the block of file names */
}

/* ---- ad_normalize_channels ---- */

Test(cifar, normalize_channels_by_hand)
{
    /* 2 images x 2 channels x 1 x 2; mean {0.5, -1}, std {0.25, 2}: values chosen so
    ** every result is exact in binary. */
    static const double in[8] = {0.75, 0.0, 3.0, -1.0, 0.5, 1.0, -5.0, 7.0};
    static const double want[8] = {1.0, -2.0, 2.0, 0.0, 0.0, 2.0, -2.0, 4.0};
    static const double mean[2] = {0.5, -1.0}, sd[2] = {0.25, 2.0};
    for (int d = 0; d < 2; d++) {
        ad_tensor *t = ts_tensor(d ? AD_F64 : AD_F32, 4, TS_SHAPE(2, 2, 1, 2));
        for (int i = 0; i < 8; i++)
            ts_set(t, i, in[i]);
        uint64_t v = t->version;
        cr_assert_eq(ad_normalize_channels(t, mean, sd), AD_OK, "%s", ad_last_error());
        for (int i = 0; i < 8; i++)
            cr_assert_eq(ts_get(t, i), want[i], "element %d: %g, want %g", i, ts_get(t, i),
                         want[i]);
        cr_assert_gt(t->version, v, "version not bumped");
        ad_tensor_free(t);
    }
}

Test(cifar, normalize_channels_refuses_bad_arguments_untouched)
{
    ad_tensor *t = ts_tensor(AD_F32, 4, TS_SHAPE(1, 3, 2, 2));
    for (int i = 0; i < 12; i++)
        ts_set(t, i, i * 0.5);
    ad_tensor *orig = ts_clone(t);
    double mean[3] = {0, 0, 0}, sd[3] = {1, 1, 1};
    static const double bad_sd[] = {0.0, -1.0, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_sd / sizeof bad_sd[0]; i++) {
        sd[2] = bad_sd[i];
        cr_assert_eq(ad_normalize_channels(t, mean, sd), AD_ERR_INVALID, "std %g", bad_sd[i]);
        assert_message("channel 2", NULL);
    }
    sd[2] = 1;
    mean[1] = NAN;
    cr_assert_eq(ad_normalize_channels(t, mean, sd), AD_ERR_INVALID);
    assert_message("channel 1", NULL);
    mean[1] = 0;
    cr_assert_eq(ts_max_abs_diff(t, orig), 0.0, "a refused call wrote");
    cr_assert_eq(ad_normalize_channels(NULL, mean, sd), AD_ERR_NULL);
    cr_assert_eq(ad_normalize_channels(t, NULL, sd), AD_ERR_NULL);
    cr_assert_eq(ad_normalize_channels(t, mean, NULL), AD_ERR_NULL);
    ad_tensor *r3 = ts_tensor(AD_F32, 3, TS_SHAPE(3, 2, 2));
    cr_assert_eq(ad_normalize_channels(r3, mean, sd), AD_ERR_RANK);
    ad_tensor *i32 = ts_tensor(AD_I32, 4, TS_SHAPE(1, 3, 2, 2));
    cr_assert_eq(ad_normalize_channels(i32, mean, sd), AD_ERR_DTYPE);
    FREE_ALL(t, orig, r3, i32);
}

/* ---- ad_random_crop_flip ---- */

/* Image i of t, channel c, at (h, w) of the image zero-padded by pad, or 0 outside. */
static double padded_at(const ad_tensor *t, int64_t i, int64_t c, int64_t h, int64_t w,
                        int pad)
{
    int64_t H = t->shape[2], W = t->shape[3];
    h -= pad;
    w -= pad;
    if (h < 0 || h >= H || w < 0 || w >= W)
        return 0.0;
    return ts_get(t, ((i * t->shape[1] + c) * H + h) * W + w);
}

/* Whether dst's image i is the window at (oy, ox) of src's padded image, mirrored or not. */
static int is_window(const ad_tensor *src, const ad_tensor *dst, int64_t i, int pad, int oy,
                     int ox, int flip)
{
    int64_t C = src->shape[1], H = src->shape[2], W = src->shape[3];
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) {
                double want = padded_at(src, i, c, oy + h, ox + (flip ? W - 1 - w : w), pad);
                if (ts_get(dst, ((i * C + c) * H + h) * W + w) != want)
                    return 0;
            }
    return 1;
}

Test(cifar, pad_0_gives_the_image_or_its_mirror_by_the_third_draw)
{
    uint64_t s = 7;
    ad_tensor *src = ts_tensor(AD_F32, 4, TS_SHAPE(12, 2, 3, 5));
    ad_tensor *dst = ts_tensor(AD_F32, 4, TS_SHAPE(12, 2, 3, 5));
    ts_fill_uniform(src, &s, 0.1, 1.0);
    ad_rng rng, mine;
    ad_rng_seed(&rng, 42);
    mine = rng; /* the test's own copy replays the documented draws */
    uint64_t v = dst->version;
    cr_assert_eq(ad_random_crop_flip(src, dst, 0, &rng), AD_OK, "%s", ad_last_error());
    int flips = 0;
    for (int64_t i = 0; i < 12; i++) {
        ad_rng_u64(&mine); /* the row and column offsets, 0 whatever they are with pad 0 */
        ad_rng_u64(&mine);
        int flip = (int)(ad_rng_u64(&mine) >> 63);
        flips += flip;
        cr_assert(is_window(src, dst, i, 0, 0, 0, flip), "image %d (flip %d)", (int)i, flip);
    }
    cr_assert(flips > 0 && flips < 12, "flips %d of 12: the draw looks constant", flips);
    cr_assert(memcmp(&rng, &mine, sizeof rng) == 0, "the call drew other than 3 per image");
    cr_assert_gt(dst->version, v);
    FREE_ALL(src, dst);
}

/* One call with seed `seed` on a fixed 16 x 3 x 8 x 8 f64 input; the caller frees. */
static ad_tensor *crop_with_seed(const ad_tensor *src, uint64_t seed)
{
    ad_tensor *dst = ts_tensor(AD_F64, 4, TS_SHAPE(16, 3, 8, 8));
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    cr_assert_eq(ad_random_crop_flip(src, dst, 4, &rng), AD_OK, "%s", ad_last_error());
    return dst;
}

Test(cifar, pad_4_gives_windows_of_the_padded_image_reproducibly)
{
    uint64_t s = 11;
    ad_tensor *src = ts_tensor(AD_F64, 4, TS_SHAPE(16, 3, 8, 8));
    ts_fill_uniform(src, &s, 0.1, 1.0); /* no zeros: padding is told apart */
    ad_tensor *a = crop_with_seed(src, 5), *b = crop_with_seed(src, 5);
    ad_tensor *c = crop_with_seed(src, 6);
    int shifted = 0;
    for (int64_t i = 0; i < 16; i++) {
        int found = 0;
        for (int oy = 0; oy <= 8 && !found; oy++)
            for (int ox = 0; ox <= 8 && !found; ox++)
                for (int f = 0; f < 2 && !found; f++)
                    if (is_window(src, a, i, 4, oy, ox, f)) {
                        found = 1;
                        shifted += oy != 4 || ox != 4;
                    }
        cr_assert(found, "image %d is no window of its padded input", (int)i);
    }
    cr_assert_gt(shifted, 0, "every window was the centre one");
    /* and exactly the window the documented draws name (what a resume relies on) */
    ad_rng mine;
    ad_rng_seed(&mine, 5);
    for (int64_t i = 0; i < 16; i++) {
        int oy = (int)(ad_rng_u64(&mine) % 9), ox = (int)(ad_rng_u64(&mine) % 9);
        int f = (int)(ad_rng_u64(&mine) >> 63);
        cr_assert(is_window(src, a, i, 4, oy, ox, f), "image %d: not (%d, %d, %d)", (int)i,
                  oy, ox, f);
    }
    cr_assert_eq(ts_max_abs_diff(a, b), 0.0, "one seed, two outputs");
    cr_assert_gt(ts_max_abs_diff(a, c), 0.0, "two seeds, one output");
    FREE_ALL(src, a, b, c);
}

Test(cifar, crop_flip_refuses_mismatches_without_drawing)
{
    ad_tensor *src = ts_tensor(AD_F32, 4, TS_SHAPE(2, 3, 4, 4));
    ad_tensor *dst = ts_tensor(AD_F32, 4, TS_SHAPE(2, 3, 4, 4));
    ad_tensor *other = ts_tensor(AD_F32, 4, TS_SHAPE(2, 3, 4, 5));
    ad_tensor *f64 = ts_tensor(AD_F64, 4, TS_SHAPE(2, 3, 4, 4));
    ad_tensor *r3 = ts_tensor(AD_F32, 3, TS_SHAPE(3, 4, 4));
    ad_tensor *i32 = ts_tensor(AD_I32, 4, TS_SHAPE(2, 3, 4, 4));
    ad_rng rng, before;
    ad_rng_seed(&rng, 1);
    before = rng;
    cr_assert_eq(ad_random_crop_flip(src, other, 1, &rng), AD_ERR_SHAPE);
    assert_message("2x3x4x4", "2x3x4x5");
    cr_assert_eq(ad_random_crop_flip(src, f64, 1, &rng), AD_ERR_DTYPE);
    cr_assert_eq(ad_random_crop_flip(i32, i32, 1, &rng), AD_ERR_DTYPE);
    cr_assert_eq(ad_random_crop_flip(r3, dst, 1, &rng), AD_ERR_RANK);
    cr_assert_eq(ad_random_crop_flip(src, dst, -1, &rng), AD_ERR_INVALID);
    cr_assert_eq(ad_random_crop_flip(src, src, 1, &rng), AD_ERR_INVALID);
    assert_message("share memory", NULL);
    cr_assert_eq(ad_random_crop_flip(NULL, dst, 1, &rng), AD_ERR_NULL);
    cr_assert_eq(ad_random_crop_flip(src, NULL, 1, &rng), AD_ERR_NULL);
    cr_assert_eq(ad_random_crop_flip(src, dst, 1, NULL), AD_ERR_NULL);
    cr_assert(memcmp(&rng, &before, sizeof rng) == 0, "a refused call drew");
    FREE_ALL(src, dst, other, f64, r3, i32);
}
