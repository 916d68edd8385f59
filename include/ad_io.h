/*
** ad_io.h: reading data sets. IDX files (the MNIST and Fashion-MNIST format), plain or
** gzip-compressed, and CIFAR-10's binary batches, validated before anything is
** returned; and the image transforms of the training recipes: bilinear resizing (LeNet's
** 32 x 32 Fashion-MNIST), per-channel normalisation, random crop and flip (CIFAR-10).
*/
#ifndef AD_IO_H
#define AD_IO_H

#include "ad_nn.h" /* ad_rng */
#include "ad_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
** Reads an IDX file of unsigned bytes (type code 0x08), gzipped or not (zlib reads
** both). Images (rank 3: count x rows x cols) come back as float32 scaled to [0, 1]
** and reshaped to count x (rows * cols); labels (rank 1) as int32. *out (out-param,
** owned by the caller, ad_tensor_free) is set only on success.
** Errors, each naming the file: AD_ERR_IO (cannot open or read; the message has the
** system's reason), AD_ERR_BAD_MAGIC (not 0x0000 08 NN with NN the rank 1 or 3),
** AD_ERR_TRUNCATED (fewer bytes than the header announces), AD_ERR_COUNT_MISMATCH
** (trailing bytes after the announced data), AD_ERR_OVERFLOW (dimensions whose product
** overflows), AD_ERR_NOMEM, AD_ERR_NULL.
*/
AD_API ad_status ad_idx_read(const char *path, ad_tensor **out);

/*
** Reads an images file and its labels file and checks they agree: the same count,
** labels in 0..n_classes-1 (AD_ERR_COUNT_MISMATCH / AD_ERR_INVALID otherwise).
** On failure neither *images nor *labels is set.
*/
AD_API ad_status ad_idx_read_pair(const char *images_path, const char *labels_path,
                           int n_classes, ad_tensor **images, ad_tensor **labels);

/*
** Reads one CIFAR-10 binary batch (data_batch_1.bin ... data_batch_5.bin,
** test_batch.bin): records of one label byte then 3072 pixel bytes, the 1024 red, then
** green, then blue, each plane row-major 32 x 32. *images comes back float32
** N x 3 x 32 x 32 scaled to [0, 1] (byte / 255, as torchvision's ToTensor), *labels
** int32 N; both owned by the caller (ad_tensor_free) and set only on success.
** Errors, each naming the file: AD_ERR_IO (cannot open or read, or not a regular
** file; the message has the system's reason), AD_ERR_TRUNCATED (empty, or a size that
** is not a multiple of the 3073-byte record; the size is in the message), AD_ERR_INVALID
** (a label outside 0..9; the record index is in the message), AD_ERR_OVERFLOW,
** AD_ERR_NOMEM, AD_ERR_NULL.
*/
AD_API ad_status ad_cifar10_read(const char *path, ad_tensor **images, ad_tensor **labels);

/*
** Reads the training set (train != 0: data_batch_1.bin to data_batch_5.bin in `dir`,
** concatenated in that order) or the test set (test_batch.bin). Every file's size is
** checked before anything is allocated, so one allocation holds the whole set. Errors
** as ad_cifar10_read, naming the file that failed; on failure neither out-param is set.
*/
AD_API ad_status ad_cifar10_read_dir(const char *dir, int train, ad_tensor **images,
                                     ad_tensor **labels);

/*
** Writes into dst every image of src resized bilinearly to dst's H x W, as PyTorch's
** torch.nn.functional.interpolate(mode="bilinear", align_corners=False) (no
** antialiasing): output pixel (r, c) reads src at ((r + 0.5) H / Ho - 0.5,
** (c + 0.5) W / Wo - 0.5), clamped to the image, weights in double. src and dst: one
** float dtype, rank 4, the same N and C, distinct memory. Bumps dst's version.
** Errors: AD_ERR_NULL, AD_ERR_RANK, AD_ERR_DTYPE, AD_ERR_SHAPE (N or C differ, or src is
** empty and dst not), AD_ERR_INVALID (src and dst share memory).
** Fashion-MNIST's 28 x 28 images to LeNet's 32 x 32, eight of them:
** Example (fragment):
**     ad_tensor *mnist28 = NULL, *lenet32 = NULL;
**     ad_status st = ad_tensor_new(AD_F32, 4, (int64_t[]){8, 1, 28, 28}, &mnist28);
**     st = st ? st : ad_tensor_new(AD_F32, 4, (int64_t[]){8, 1, 32, 32}, &lenet32);
**     st = st ? st : ad_resize_bilinear(mnist28, lenet32);
**     ad_tensor_free(mnist28);
**     ad_tensor_free(lenet32);
**     return st;
*/
AD_API ad_status ad_resize_bilinear(const ad_tensor *src, ad_tensor *dst);

/*
** In place, x = (x - mean[c]) / std[c] for every element of channel c of an
** N x C x H x W float32 or float64 tensor; mean and std hold C values each. Bumps the
** version. Errors: AD_ERR_NULL, AD_ERR_RANK (not rank 4), AD_ERR_DTYPE (not a float
** tensor), AD_ERR_INVALID (a mean not finite, a std <= 0 or not finite; the channel is
** in the message). A failed call leaves the tensor as it was.
** Example (fragment):
**     static const double mean[3] = {0.4914, 0.4822, 0.4465};
**     static const double sd[3] = {0.2470, 0.2435, 0.2616}; // CIFAR-10's training set
**     return ad_normalize_channels(&X, mean, sd);              // X: N x 3 x 32 x 32
*/
AD_API ad_status ad_normalize_channels(ad_tensor *images, const double *mean,
                                       const double *std);

/*
** Writes into dst, image by image, a random H x W window of src's image zero-padded by
** `pad` on each side, mirrored left-right with probability 1/2 (torchvision's
** RandomCrop(H, padding=pad) then RandomHorizontalFlip). src and dst: distinct,
** non-overlapping N x C x H x W tensors of one float dtype and shape; every channel of
** an image gets the same window and flip.
** Draws, so that a generator's position is known (checkpoints, resume): three
** ad_rng_u64 per image, in image order, whatever `pad` is: the row offset
** oy = u % (2 pad + 1), the column offset ox = u % (2 pad + 1) (a bias of at most
** (2 pad + 1) / 2^64), then the flip, the top bit of the third word. Output pixel (h, w)
** is padded pixel (oy + h, ox + w) of the window, taken at column W - 1 - w when
** flipped. Bumps dst's version.
** Errors: AD_ERR_NULL, AD_ERR_RANK (not rank 4), AD_ERR_DTYPE (not float, or the
** dtypes differ), AD_ERR_SHAPE (the shapes differ), AD_ERR_INVALID (pad < 0, or src and
** dst share memory). A failed call draws nothing and leaves dst as it was.
*/
AD_API ad_status ad_random_crop_flip(const ad_tensor *src, ad_tensor *dst, int pad,
                                     ad_rng *rng);

#ifdef __cplusplus
}
#endif
#endif /* AD_IO_H */
