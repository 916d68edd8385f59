/*
** conv_direct.h (internal): what conv_direct.c (packing, threads) shares with its
** kernels in conv_direct_kernels.c.
*/
#ifndef AD_CONV_DIRECT_H
#define AD_CONV_DIRECT_H

#include "conv_internal.h"

enum {
    ADI_DC_VL = 8, /* floats per vector */
    ADI_DC_FT = 6, /* column kernels, forward: output channels per tile */
    ADI_DC_WT = 3, /* column kernels, dW: output channels and taps per tile */
    ADI_DC_CP = 6, /* channel kernels: positions (forward) or taps (dW) per tile */
    ADI_DC_CV = 16 /* channel kernels: output channels, padded, as two vectors */
};

/*
** One op on the direct path. An image's padded copy holds plane ci at rows ph .. ph+h,
** columns pw .. pw+w of an hp x wp plane, zero elsewhere; tap t = (ci, ky, kx) of the
** output at (oh, ow) reads the copy at off[t] + oh wp + ow. kp taps (K rounded up to a
** multiple of both tiles) have offsets, those past K being 0 (their sums are dropped).
** The column kernels vectorise over 8 output columns (ch vectors a row); the channel
** kernels (cv) over 8 output channels, for 9 to 16 of them, when rows are so short
** that columns would waste more lanes. A slot is one part's buffer.
*/
typedef struct adi_dc_job {
    const adi_conv_geometry *g;
    int64_t co, K, kp, ch, hp, wp, plane;
    int cv;                     /* channel kernels */
    int64_t rw, cop;            /* column dW: floats per dY row copy; co rounded to WT */
    int64_t slots, ipc, chunks; /* slots; dW: images per chunk, chunks */
    int64_t slot_size;          /* floats of one slot's buffer */
    const int32_t *off;
    const float *x, *dy, *wpk, *bpk; /* packed weights and bias (see the forward) */
    float *y, *pack, *part;
} adi_dc_job;

/* yn (co x ho x wo) = one image's output from its padded copy xp. */
void adi_dc_forward_col(const adi_dc_job *j, const float *xp, float *yn);
void adi_dc_forward_cv(const adi_dc_job *j, const float *xp, float *yn);

/* part (cop x kp) += dY x' over nimg images: padded copies xp (plane floats each) and
** dY copies dyp: column kernel cop x ho x rw per image (zero past co and wo); channel
** kernel (nimg 1) ho*wo x CV, zero past co. */
void adi_dc_dw_col(const adi_dc_job *j, const float *xp, const float *dyp, int64_t nimg,
                   float *part);
void adi_dc_dw_cv(const adi_dc_job *j, const float *xp, const float *dyp, float *part);

#endif /* AD_CONV_DIRECT_H */
