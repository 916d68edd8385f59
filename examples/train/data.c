/*
** data.c: reads Fashion-MNIST and cuts it into the rows adtape-train uses.
*/
#include "data.h"

#include <stdio.h>

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

ad_status data_read(const char *dir, dataset *d)
{
    ad_status rc = read_pair(dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                             &d->train_x, &d->train_y);
    return rc ? rc : read_pair(dir, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                               &d->test_x, &d->test_y);
}

/* A view of rows [r0, r0 + n) of t, sharing its memory. */
static ad_status rows_view(const ad_tensor *t, int64_t r0, int64_t n, ad_tensor *view)
{
    int64_t shape[2] = {n, t->ndim == 2 ? t->shape[1] : 1};
    size_t row = (size_t)shape[1] * ad_dtype_size(t->dtype);
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
