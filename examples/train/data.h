/*
** data.h: the Fashion-MNIST rows adtape-train uses: the training rows (--subset), the
** evaluation rows (the test set, or the --holdout rows) and the alignment batch.
*/
#ifndef TRAIN_DATA_H
#define TRAIN_DATA_H

#include "ad.h"

/* The training and test sets as read, and views into them that share their memory. */
typedef struct dataset {
    ad_tensor *train_x, *train_y, *test_x, *test_y; /* owned; data_free frees them */
    ad_tensor fit_x, fit_y, eval_x, eval_y;         /* views, set by data_split */
    int64_t n_align;                                /* the first test rows */
} dataset;

/* Reads the four IDX files of dir into a zeroed d. Errors: ad_idx_read_pair's, and
** AD_ERR_INVALID when a path is too long. After an error data_free(d) frees what was
** read. */
ad_status data_read(const char *dir, dataset *d);

/* Makes the views: fit on the first min(subset, rows left) training rows (subset 0:
** all), eval on the last holdout training rows, or on the test set if holdout is 0.
** *n_fit (out) gets the fit rows, 0 when the holdout leaves none (no views are made). */
ad_status data_split(dataset *d, int64_t subset, int64_t holdout, int64_t *n_fit);

void data_free(dataset *d);

#endif /* TRAIN_DATA_H */
