/*
** cifar.c: CIFAR-10's binary batches, per-channel normalisation, random crop and flip.
**
** A batch file is bare records of 1 label byte + 3072 pixel bytes (planes R, G, B,
** each 32 x 32 row-major), no header: the record count is the file size / 3073, so the
** size is checked (fstat) before anything is allocated, and for a directory every
** file's size is checked before the one allocation that holds the whole set.
** Plain POSIX open/read with a stack buffer, not stdio: stdio's buffer would come from
** malloc outside the allocation hooks, and read's errno gives the system's reason.
*/
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, fstat */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/base.h"
#include "ad_io.h"

enum {
    CIFAR_PIXELS = 3 * 32 * 32,
    CIFAR_RECORD = 1 + CIFAR_PIXELS,
    CIFAR_CLASSES = 10,
    CIFAR_CHUNK = 16, /* records per read: a 49 KB stack buffer */
    CIFAR_TRAIN_BATCHES = 5
};

/* An open batch whose size has been checked: n records, n > 0. */
typedef struct cifar_file {
    const char *path;
    int fd;
    int64_t n;
} cifar_file;

/* Opens path and checks its size; on failure nothing stays open. */
static ad_status cifar_open(const char *what, const char *path, cifar_file *f)
{
    f->path = path;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return ad_fail(AD_ERR_IO, "%s: %s: cannot open: %s", what, path, strerror(errno));
    struct stat st;
    ad_status rc = AD_OK;
    if (fstat(f->fd, &st) != 0)
        rc = ad_fail(AD_ERR_IO, "%s: %s: cannot stat: %s", what, path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) /* a folder or a pipe has no size to check */
        rc = ad_fail(AD_ERR_IO, "%s: %s: not a regular file", what, path);
    else if (st.st_size == 0 || st.st_size % CIFAR_RECORD != 0)
        rc = ad_fail(AD_ERR_TRUNCATED, "%s: %s: %jd bytes, not a non-zero multiple of the "
                     "%d-byte record (label byte + 3072 pixels)", what, path,
                     (intmax_t)st.st_size, CIFAR_RECORD);
    if (rc) {
        close(f->fd);
        f->fd = -1;
        return rc;
    }
    f->n = (int64_t)(st.st_size / CIFAR_RECORD);
    return AD_OK;
}

/* n bytes or the end of the file (*got says how many); only a read error fails. */
static ad_status cifar_read_full(const char *what, const cifar_file *f, unsigned char *buf,
                                 size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = read(f->fd, buf + *got, n - *got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ad_fail(AD_ERR_IO, "%s: %s: read failed: %s", what, f->path,
                           strerror(errno));
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return AD_OK;
}

/*
** Reads f's n records into x (n x 3072 floats) and y (n labels), checking each label.
** The file may shrink between fstat and read (someone rewriting it): that is
** truncation too, never a half-filled tensor handed back.
*/
static ad_status cifar_fill(const char *what, const cifar_file *f, float *x, int32_t *y)
{
    unsigned char buf[CIFAR_CHUNK * CIFAR_RECORD];
    for (int64_t done = 0; done < f->n;) {
        int64_t want = f->n - done < CIFAR_CHUNK ? f->n - done : CIFAR_CHUNK;
        size_t got;
        ad_status rc = cifar_read_full(what, f, buf, (size_t)want * CIFAR_RECORD, &got);
        if (rc)
            return rc;
        if (got < (size_t)want * CIFAR_RECORD)
            return ad_fail(AD_ERR_TRUNCATED, "%s: %s: ended inside record %" PRId64
                           " while reading (the file shrank after its size was checked)",
                           what, f->path, done + (int64_t)(got / CIFAR_RECORD));
        for (int64_t r = 0; r < want; r++, done++) {
            const unsigned char *rec = buf + r * CIFAR_RECORD;
            if (rec[0] >= CIFAR_CLASSES)
                return ad_fail(AD_ERR_INVALID, "%s: %s: label %u at record %" PRId64
                               " is outside 0..9", what, f->path, rec[0], done);
            y[done] = rec[0];
            /* The file's plane order (R, G, B; rows; columns) is NCHW already. */
            float *img = x + done * CIFAR_PIXELS;
            for (int k = 0; k < CIFAR_PIXELS; k++)
                img[k] = (float)rec[1 + k] / 255.0f;
        }
    }
    return AD_OK;
}

/* Opens files[0..k), allocates one pair of tensors for all their records, fills them. */
static ad_status cifar_read_files(const char *what, const char *const *paths, int k,
                                  ad_tensor **images, ad_tensor **labels)
{
    cifar_file f[CIFAR_TRAIN_BATCHES];
    int opened = 0;
    int64_t total = 0;
    ad_status rc = AD_OK;
    for (; opened < k; opened++) {
        if ((rc = cifar_open(what, paths[opened], &f[opened])))
            break;
        total += f[opened].n; /* each n < 2^63 / 3073, five of them cannot overflow */
    }
    ad_tensor *x = NULL, *y = NULL;
    if (!rc) {
        rc = ad_tensor_new(AD_F32, 4, (const int64_t[]){total, 3, 32, 32}, &x);
        if (!rc)
            rc = ad_tensor_new(AD_I32, 1, &total, &y);
        if (rc) /* NOMEM or OVERFLOW: say which file's set did not fit */
            rc = ad_fail(rc, "%s: %s: %s for %" PRId64 " images", what, paths[0],
                         rc == AD_ERR_NOMEM ? "out of memory" : "too large", total);
    }
    int64_t at = 0; /* records filled so far: batches go in the order given */
    for (int i = 0; !rc && i < k; i++) {
        rc = cifar_fill(what, &f[i], (float *)x->data + at * CIFAR_PIXELS,
                        (int32_t *)y->data + at);
        at += f[i].n;
    }
    for (int i = 0; i < opened; i++)
        close(f[i].fd);
    if (rc) {
        ad_tensor_free(x);
        ad_tensor_free(y);
        return rc;
    }
    *images = x;
    *labels = y;
    return AD_OK;
}

ad_status ad_cifar10_read(const char *path, ad_tensor **images, ad_tensor **labels)
{
    if (!path || !images || !labels)
        return ad_fail(AD_ERR_NULL, "ad_cifar10_read: %s is NULL",
                       !path ? "path" : !images ? "images" : "labels");
    return cifar_read_files("ad_cifar10_read", &path, 1, images, labels);
}

ad_status ad_cifar10_read_dir(const char *dir, int train, ad_tensor **images,
                              ad_tensor **labels)
{
    static const char *const train_names[CIFAR_TRAIN_BATCHES] = {
        "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
        "data_batch_5.bin"};
    static const char *const test_names[1] = {"test_batch.bin"};
    if (!dir || !images || !labels)
        return ad_fail(AD_ERR_NULL, "ad_cifar10_read_dir: %s is NULL",
                       !dir ? "dir" : !images ? "images" : "labels");
    const char *const *names = train ? train_names : test_names;
    int k = train ? CIFAR_TRAIN_BATCHES : 1;
    /* One block for the k paths "dir/name": dir has no length limit of ours. */
    size_t len = strlen(dir), each, bytes;
    int slash = len > 0 && dir[len - 1] != '/';
    if (!adi_size_add(len, sizeof "data_batch_1.bin" + 1, &each) ||
        !adi_size_mul(each, (size_t)k, &bytes))
        return ad_fail(AD_ERR_OVERFLOW, "ad_cifar10_read_dir: the folder name is too long");
    char *block = ad_malloc(bytes);
    if (!block)
        return ad_fail(AD_ERR_NOMEM, "ad_cifar10_read_dir: %s: out of memory for %zu bytes "
                       "of file names", dir, bytes);
    const char *paths[CIFAR_TRAIN_BATCHES];
    for (int i = 0; i < k; i++) {
        char *p = block + (size_t)i * each;
        snprintf(p, each, "%s%s%s", dir, slash ? "/" : "", names[i]);
        paths[i] = p;
    }
    ad_status rc = cifar_read_files("ad_cifar10_read_dir", paths, k, images, labels);
    ad_free(block);
    return rc;
}

/* A 4-D float tensor, or the error naming `what`. */
static ad_status check_nchw(const char *what, const char *name, const ad_tensor *t)
{
    if (t->ndim != 4)
        return ad_fail(AD_ERR_RANK, "%s: %s has rank %d, expected 4 (N x C x H x W)", what,
                       name, t->ndim);
    if (t->dtype != AD_F32 && t->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "%s: %s is %s, expected f32 or f64", what, name,
                       ad_dtype_name(t->dtype));
    return AD_OK;
}

ad_status ad_normalize_channels(ad_tensor *images, const double *mean, const double *std)
{
    static const char what[] = "ad_normalize_channels";
    if (!images || !mean || !std)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what,
                       !images ? "images" : !mean ? "mean" : "std");
    ad_status rc = check_nchw(what, "images", images);
    if (rc)
        return rc;
    int64_t n = images->shape[0], c = images->shape[1];
    int64_t plane = images->shape[2] * images->shape[3];
    /* every channel's values checked before the first write */
    for (int64_t k = 0; k < c; k++)
        if (!isfinite(mean[k]) || !isfinite(std[k]) || !(std[k] > 0))
            return ad_fail(AD_ERR_INVALID, "%s: channel %" PRId64 ": mean %g, std %g (the "
                           "mean must be finite, the std finite and > 0)", what, k, mean[k],
                           std[k]);
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < c; k++) {
            int64_t at = (i * c + k) * plane;
            /* divide, not multiply by 1 / std: the same rounding as PyTorch's Normalize */
            if (images->dtype == AD_F32) {
                float *p = (float *)images->data + at;
                float m = (float)mean[k], s = (float)std[k];
                for (int64_t j = 0; j < plane; j++)
                    p[j] = (p[j] - m) / s;
            } else {
                double *p = (double *)images->data + at;
                for (int64_t j = 0; j < plane; j++)
                    p[j] = (p[j] - mean[k]) / std[k];
            }
        }
    ad_tensor_touch(images);
    return AD_OK;
}

/*
** One channel plane: dst[h][w] = padded src[oy + h][ox + w] (mirrored: column
** W - 1 - w of the window), zero outside the image. Rows of the window that miss the
** image are zeroed whole.
*/
#define CROP_PLANE(T)                                                                   \
    do {                                                                                \
        const T *s = (const T *)src_plane;                                              \
        T *d = (T *)dst_plane;                                                          \
        for (int64_t h = 0; h < H; h++) {                                               \
            int64_t sh = oy + h - pad;                                                  \
            T *row = d + h * W;                                                         \
            for (int64_t w = 0; w < W; w++) {                                           \
                int64_t sw = ox + (flip ? W - 1 - w : w) - pad;                         \
                row[w] = sh >= 0 && sh < H && sw >= 0 && sw < W ? s[sh * W + sw] : 0;   \
            }                                                                           \
        }                                                                               \
    } while (0)

ad_status ad_random_crop_flip(const ad_tensor *src, ad_tensor *dst, int pad, ad_rng *rng)
{
    static const char what[] = "ad_random_crop_flip";
    if (!src || !dst || !rng)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what,
                       !src ? "src" : !dst ? "dst" : "rng");
    ad_status rc = check_nchw(what, "src", src);
    if (!rc)
        rc = check_nchw(what, "dst", dst);
    if (rc)
        return rc;
    char a[64], b[64];
    if (src->dtype != dst->dtype)
        return ad_fail(AD_ERR_DTYPE, "%s: src is %s but dst is %s", what,
                       ad_dtype_name(src->dtype), ad_dtype_name(dst->dtype));
    if (!adi_same_shape(src, dst))
        return ad_fail(AD_ERR_SHAPE, "%s: src is %s but dst is %s", what,
                       ad_tensor_describe(src, a, sizeof a),
                       ad_tensor_describe(dst, b, sizeof b));
    if (pad < 0)
        return ad_fail(AD_ERR_INVALID, "%s: pad is %d, must be >= 0", what, pad);
    size_t bytes = (size_t)src->size * ad_dtype_size(src->dtype);
    const char *s0 = src->data, *d0 = dst->data;
    /* the crop reads pixels the loop has already written: dst must not overlap src */
    if (bytes > 0 && s0 < d0 + bytes && d0 < s0 + bytes)
        return ad_fail(AD_ERR_INVALID, "%s: src and dst share memory", what);
    int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    uint64_t span = 2 * (uint64_t)pad + 1;
    size_t plane_bytes = (size_t)(H * W) * ad_dtype_size(src->dtype);
    for (int64_t i = 0; i < N; i++) {
        /* the documented order: row offset, column offset, flip */
        int64_t oy = (int64_t)(ad_rng_u64(rng) % span);
        int64_t ox = (int64_t)(ad_rng_u64(rng) % span);
        int flip = (int)(ad_rng_u64(rng) >> 63); /* the top bit: the low ones are weakest */
        for (int64_t k = 0; k < C; k++) {
            const char *src_plane = s0 + (size_t)(i * C + k) * plane_bytes;
            char *dst_plane = (char *)d0 + (size_t)(i * C + k) * plane_bytes;
            if (src->dtype == AD_F32)
                CROP_PLANE(float);
            else
                CROP_PLANE(double);
        }
    }
    ad_tensor_touch(dst);
    return AD_OK;
}
