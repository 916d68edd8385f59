/*
** cifar.c: CIFAR-10's binary batches (the transforms that train on them: images.c).
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
