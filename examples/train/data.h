/*
** data.h: the images adtape-train uses: the training rows (--subset), the evaluation
** rows (the test set, or the --holdout rows) and the alignment batch. Fashion-MNIST
** for mlp (N x 784 in [0, 1]) and lenet (N x 1 x 32 x 32, resized and normalised as
** BioTorch's LeNet recipe), CIFAR-10 for cnn (N x 3 x 32 x 32, normalised per channel).
*/
#ifndef TRAIN_DATA_H
#define TRAIN_DATA_H

#include "ad.h"
#include "model.h"

/* The training and test sets as read, and views into them that share their memory. */
typedef struct dataset {
    ad_tensor *train_x, *train_y, *test_x, *test_y; /* owned; data_free frees them */
    ad_tensor fit_x, fit_y, eval_x, eval_y;         /* views, set by data_split */
    int64_t n_align;                                /* the first test rows */
} dataset;

/* Reads the data set arch trains on from dir into a zeroed d: Fashion-MNIST's four IDX
** files, or CIFAR-10's binary batches for ARCH_CNN. Errors: ad_idx_read_pair's or
** ad_cifar10_read_dir's, and AD_ERR_INVALID when a path is too long. After an error
** data_free(d) frees what was read. */
ad_status data_read(const char *dir, model_arch arch, dataset *d);

/* Makes the views: fit on the first min(subset, rows left) training rows (subset 0:
** all), eval on the last holdout training rows, or on the test set if holdout is 0.
** *n_fit (out) gets the fit rows, 0 when the holdout leaves none (no views are made). */
ad_status data_split(dataset *d, int64_t subset, int64_t holdout, int64_t *n_fit);

void data_free(dataset *d);

/* The first `rows` of Fashion-MNIST's N x 784 images as lenet's input: a new
** rows x 1 x 32 x 32 tensor in *out (the caller frees it). Errors: AD_ERR_SHAPE (more
** rows than images), ad_resize_bilinear's, AD_ERR_NOMEM. */
ad_status data_lenet_images(const ad_tensor *images, int64_t rows, ad_tensor **out);

#endif /* TRAIN_DATA_H */
