/*
** data.c: reads Fashion-MNIST or CIFAR-10, prepares it for the network and cuts it
** into the rows adtape-train uses.
*/
#include "data.h"

#include <stdio.h>
#include <string.h>

enum { ALIGN_ROWS = 1000, PATH_BYTES = 4096 };

static ad_status read_pair(const char *dir, const char *images, const char *labels,
                           ad_tensor **x, ad_tensor **y)
{
    char xp[PATH_BYTES], yp[PATH_BYTES];
    if (snprintf(xp, sizeof xp, "%s/%s", dir, images) >= (int)sizeof xp ||
        snprintf(yp, sizeof yp, "%s/%s", dir, labels) >= (int)sizeof yp)
        return ad_fail(AD_ERR_INVALID, "path too long: %s/%s", dir, images);
    return ad_idx_read_pair(xp, yp, 10, x, y);
}

/* BioTorch's LeNet takes 32 x 32: resized bilinearly (PyTorch's interpolate,
** align_corners False), then standardised with Fashion-MNIST's training-set mean and
** deviation. */
ad_status data_lenet_images(const ad_tensor *images, int64_t rows, ad_tensor **out)
{
    static const double mean[1] = {0.2860}, sd[1] = {0.3530};
    ad_tensor small, *big;
    ad_status rc = ad_tensor_init(&small, AD_F32, 4, (int64_t[]){rows, 1, 28, 28},
                                  images->data);
    if (rc == AD_OK && rows > images->shape[0])
        rc = ad_fail(AD_ERR_SHAPE, "adtape-train: %lld rows of %lld images",
                     (long long)rows, (long long)images->shape[0]);
    rc = rc ? rc : ad_tensor_new(AD_F32, 4, (int64_t[]){rows, 1, 32, 32}, &big);
    if (rc)
        return rc;
    rc = ad_resize_bilinear(&small, big);
    rc = rc ? rc : ad_normalize_channels(big, mean, sd);
    if (rc)
        ad_tensor_free(big);
    else
        *out = big;
    return rc;
}

/* Replaces *images (N x 784) by its LeNet input. */
static ad_status to_lenet_input(ad_tensor **images)
{
    ad_tensor *big;
    ad_status rc = data_lenet_images(*images, (*images)->shape[0], &big);
    if (rc == AD_OK) {
        ad_tensor_free(*images);
        *images = big;
    }
    return rc;
}

/* CIFAR-10's per-channel training-set mean and deviation (as torchvision recipes use). */
static ad_status read_cifar(const char *dir, dataset *d)
{
    static const double mean[3] = {0.4914, 0.4822, 0.4465}, sd[3] = {0.2470, 0.2435, 0.2616};
    ad_status rc = ad_cifar10_read_dir(dir, 1, &d->train_x, &d->train_y);
    rc = rc ? rc : ad_cifar10_read_dir(dir, 0, &d->test_x, &d->test_y);
    rc = rc ? rc : ad_normalize_channels(d->train_x, mean, sd);
    return rc ? rc : ad_normalize_channels(d->test_x, mean, sd);
}

ad_status data_read(const char *dir, model_arch arch, dataset *d)
{
    if (arch == ARCH_CNN)
        return read_cifar(dir, d);
    ad_status rc = read_pair(dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                             &d->train_x, &d->train_y);
    rc = rc ? rc : read_pair(dir, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                             &d->test_x, &d->test_y);
    if (rc == AD_OK && arch == ARCH_LENET)
        rc = to_lenet_input(&d->train_x);
    return rc == AD_OK && arch == ARCH_LENET ? to_lenet_input(&d->test_x) : rc;
}

/* A view of rows [r0, r0 + n) of t (any rank), sharing its memory. */
static ad_status rows_view(const ad_tensor *t, int64_t r0, int64_t n, ad_tensor *view)
{
    int64_t shape[AD_MAX_RANK];
    memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
    shape[0] = n;
    size_t row = (size_t)(t->size / t->shape[0]) * ad_dtype_size(t->dtype);
    return ad_tensor_init(view, t->dtype, t->ndim, shape, (char *)t->data + (size_t)r0 * row);
}

/* The holdout is the last rows, so it is the same set whatever --subset says and
** --subset never reaches into it. */
ad_status data_split(dataset *d, int64_t subset, int64_t holdout, int64_t *n_fit)
{
    int64_t n = d->train_x->shape[0], n_test = d->test_x->shape[0];
    int64_t avail = n - holdout;
    *n_fit = avail <= 0 ? 0 : subset && subset < avail ? subset : avail;
    if (*n_fit == 0)
        return AD_OK;
    const ad_tensor *ex = holdout ? d->train_x : d->test_x;
    const ad_tensor *ey = holdout ? d->train_y : d->test_y;
    int64_t e0 = holdout ? avail : 0, en = holdout ? holdout : n_test;
    ad_status rc = rows_view(d->train_x, 0, *n_fit, &d->fit_x);
    rc = rc ? rc : rows_view(d->train_y, 0, *n_fit, &d->fit_y);
    rc = rc ? rc : rows_view(ex, e0, en, &d->eval_x);
    rc = rc ? rc : rows_view(ey, e0, en, &d->eval_y);
    d->n_align = n_test < ALIGN_ROWS ? n_test : ALIGN_ROWS;
    return rc;
}

void data_free(dataset *d)
{
    ad_tensor_free(d->train_x);
    ad_tensor_free(d->train_y);
    ad_tensor_free(d->test_x);
    ad_tensor_free(d->test_y);
}
