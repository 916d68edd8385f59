/*
** conv_im2col.c: the data movement around conv2d's GEMMs (conv.c): im2col, its adjoint
** col2im, and the transposes between NCHW and the channel-major block the GEMMs see.
**
** A block is nb consecutive images n0 .. n0+nb of x (N x C x H x W). Its column matrix
** has one row per (channel c, kernel row i, kernel column j), C*kh*kw rows in that
** order, so group g's rows are one contiguous band; and one column per (image b,
** output row oh, output column ow), nb*P columns with P = Hout*Wout, image b's at
** b*P. Row r = (c*kh + i)*kw + j, column b*P + oh*Wout + ow holds
** x[n0+b, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw], or 0 where that is padding.
*/
#include "ops_internal.h"
#include "../base/parallel.h"

#define GEOMETRY_LOCALS(geo)                                                            \
    const int64_t C = (geo)->c, H = (geo)->h, W = (geo)->w, kh = (geo)->kh,           \
                  kw = (geo)->kw, Ho = (geo)->ho, Wo = (geo)->wo, P = Ho * Wo;         \
    const int64_t sh = (geo)->sh, sw = (geo)->sw, ph = (geo)->ph, pw = (geo)->pw,     \
                  dh = (geo)->dh, dw = (geo)->dw

/*
** The outputs o (0 <= o < n_out) whose input o*s + off falls inside 0..n_in-1, as
** [*lo, *hi); the rest read padding. Computed once per kernel row and column, it keeps
** the copy and the add free of per-element tests, so they vectorise.
*/
static void in_bounds(int64_t off, int64_t s, int64_t n_in, int64_t n_out, int64_t *lo,
                      int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / s + 1;
    b = b < n_out ? b : n_out;
    *lo = a < b ? a : b;
    *hi = b;
}

/* What a part of im2col or col2im needs: the block and its buffers. */
typedef struct im2col_job {
    ad_dtype dt;
    const adi_conv_geometry *geo;
    const void *x;
    void *cols, *dx;
    int64_t n0, nb, ld;
} im2col_job;

/* Below this many elements a part is not worth waking a thread for. */
#define PART_GRAIN 32768

/*
** Rows r_lo .. r_hi of cols (C*kh*kw x ld, ld >= nb*P) = im2col of images n0 .. n0+nb
** of x. Rows of output positions that fall on padding are zeroed in one stretch; the
** rest are copied through restrict-qualified pointers, without which the compiler
** checks every short row for overlap before its vector loop (3x slower on LeNet's
** first layer).
*/
static void im2col_rows(void *arg, int64_t r_lo, int64_t r_hi)
{
    const im2col_job *jb = arg;
    GEOMETRY_LOCALS(jb->geo);
    const int64_t n0 = jb->n0, nb = jb->nb, ld = jb->ld;
    (void)C;
    AD_DISPATCH_FLOAT(jb->dt, T, {
        const T *xs = jb->x;
        T *cs = jb->cols;
        for (int64_t r = r_lo; r < r_hi; r++) {
            int64_t c = r / (kh * kw), i = r / kw % kh, j = r % kw;
            int64_t hoff = i * dh - ph, hlo, hhi, off = j * dw - pw, lo, hi;
            in_bounds(hoff, sh, H, Ho, &hlo, &hhi);
            in_bounds(off, sw, W, Wo, &lo, &hi);
            T *row = cs + r * ld;
            for (int64_t b = 0; b < nb; b++) {
                const T *img = xs + ((n0 + b) * C + c) * H * W;
                T *ob = row + b * P;
                if (hlo > 0) /* calls, even of 0 bytes, cost on short rows */
                    memset(ob, 0, (size_t)(hlo * Wo) * sizeof(T));
                if (hhi < Ho)
                    memset(ob + hhi * Wo, 0, (size_t)((Ho - hhi) * Wo) * sizeof(T));
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    T *restrict o = ob + oh * Wo;
                    const T *restrict line = img + (oh * sh + hoff) * W;
                    for (int64_t ow = 0; ow < lo; ow++)
                        o[ow] = 0;
                    if (sw == 1) /* iw = ow + off */
                        for (int64_t ow = lo; ow < hi; ow++)
                            o[ow] = line[ow + off];
                    else
                        for (int64_t ow = lo; ow < hi; ow++)
                            o[ow] = line[ow * sw + off];
                    for (int64_t ow = hi; ow < Wo; ow++)
                        o[ow] = 0;
                }
            }
        }
    });
}

/* cols = im2col of images n0 .. n0+nb of x, its rows split over ad_get_num_threads(). */
void adi_conv_im2col(ad_dtype dt, const adi_conv_geometry *geo, const void *x, int64_t n0,
                     int64_t nb, void *cols, int64_t ld)
{
    im2col_job jb = {dt, geo, x, cols, NULL, n0, nb, ld};
    int64_t per_row = nb * geo->ho * geo->wo;
    adi_parallel_for(geo->c * geo->kh * geo->kw, PART_GRAIN / (per_row ? per_row : 1),
                     im2col_rows, &jb);
}

/*
** Channels c_lo .. c_hi of dx (images n0 .. n0+nb) += col2im(cols): the adjoint of
** im2col, each column entry added to the pixel it was copied from. A channel's rows
** add only into that channel, so parts split by channel write apart. The caller has
** zeroed dx under beta 0.
*/
static void col2im_channels(void *arg, int64_t c_lo, int64_t c_hi)
{
    const im2col_job *jb = arg;
    GEOMETRY_LOCALS(jb->geo);
    const int64_t n0 = jb->n0, nb = jb->nb, ld = jb->ld;
    AD_DISPATCH_FLOAT(jb->dt, T, {
        const T *cs = jb->cols;
        T *ds = jb->dx;
        for (int64_t c = c_lo; c < c_hi; c++)
            for (int64_t i = 0; i < kh; i++) {
                int64_t hoff = i * dh - ph, hlo, hhi;
                in_bounds(hoff, sh, H, Ho, &hlo, &hhi);
                for (int64_t j = 0; j < kw; j++) {
                    const T *row = cs + ((c * kh + i) * kw + j) * ld;
                    int64_t off = j * dw - pw, lo, hi;
                    in_bounds(off, sw, W, Wo, &lo, &hi);
                    for (int64_t b = 0; b < nb; b++) {
                        T *img = ds + ((n0 + b) * C + c) * H * W;
                        for (int64_t oh = hlo; oh < hhi; oh++) {
                            const T *restrict o = row + b * P + oh * Wo;
                            T *restrict line = img + (oh * sh + hoff) * W;
                            if (sw == 1)
                                for (int64_t ow = lo; ow < hi; ow++)
                                    line[ow + off] += o[ow];
                            else
                                for (int64_t ow = lo; ow < hi; ow++)
                                    line[ow * sw + off] += o[ow];
                        }
                    }
                }
            }
    });
}

void adi_conv_col2im_add(ad_dtype dt, const adi_conv_geometry *geo, const void *cols,
                         int64_t ld, int64_t n0, int64_t nb, void *dx)
{
    im2col_job jb = {dt, geo, NULL, (void *)cols, dx, n0, nb, ld};
    int64_t per_channel = geo->kh * geo->kw * nb * geo->ho * geo->wo;
    adi_parallel_for(geo->c, PART_GRAIN / (per_channel ? per_channel : 1), col2im_channels,
                     &jb);
}

/* blk (k x nb*P) = the images n0 .. n0+nb of a (N x k x P): blk[c, b*P + p] =
** a[n0+b, c, p]; and back, a[n0+b, c, p] = blk[c, b*P + p]. */
void adi_conv_gather_block(ad_dtype dt, int64_t k, int64_t P, int64_t n0, int64_t nb,
                           const void *a, void *blk)
{
    size_t es = ad_dtype_size(dt), row = (size_t)P * es;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t c = 0; c < k; c++)
            memcpy((char *)blk + (size_t)(c * nb * P + b * P) * es,
                   (const char *)a + (size_t)(((n0 + b) * k + c) * P) * es, row);
}

void adi_conv_scatter_block(ad_dtype dt, int64_t k, int64_t P, int64_t n0, int64_t nb,
                            const void *blk, void *a)
{
    size_t es = ad_dtype_size(dt), row = (size_t)P * es;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t c = 0; c < k; c++)
            memcpy((char *)a + (size_t)(((n0 + b) * k + c) * P) * es,
                   (const char *)blk + (size_t)(c * nb * P + b * P) * es, row);
}
