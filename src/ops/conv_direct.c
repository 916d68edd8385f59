/*
** conv_direct.c: conv2d's forward and dW without im2col, for float32 layers with few
** channels (conv.c chooses): groups 1, stride 1, dilation 1, any zero padding, at most
** MAX_CO output channels and MAX_TAPS taps (Cin*kh*kw). dX stays with im2col.
**
** Why: LeNet's layers (1->6 and 6->16 channels, 5x5) make GEMMs of 6 or 16 rows,
** which OpenBLAS runs at a fraction of its peak, after an im2col that copies the input
** kh*kw times. Here each image is copied once into a zero-padded plane per channel
** (rows of wp floats, wide enough that every 8-lane load of a tap stays inside it), so
** a tap (ci, ky, kx) is just an offset into that copy and the loops have no padding
** tests. Two kernel families (conv_direct_kernels.c), chosen by which fills more
** lanes: column kernels vectorise over 8 output columns (good for wide rows, any
** channel count: LeNet's first layer), channel kernels over 8 of 16 output channels
** (good for 9 to 16 channels on short rows: LeNet's second layer, rows of 10).
**
** Order and threads: a forward output is bias, then the taps in order (ci, ky, kx),
** each lane on its own, so it does not depend on the split over threads. dW is summed
** per chunk of images (chunk size from the geometry alone; column kernels add lanes in
** a fixed tree at the end), chunks added in order into NG partial sums (a group of
** consecutive chunks each), which are added in order at the end: the same bits for
** any thread count. No fused multiply-add (the project builds with
** -ffp-contract=off), so the AVX2 and the default clones give the same bits too. The
** results differ from the im2col path's in summation order only, within float32
** rounding.
*/
#include <stdatomic.h>

#include "conv_direct.h"
#include "../base/parallel.h"

enum {
    MAX_CO = 16, MAX_TAPS = 160,
    VL = ADI_DC_VL, FT = ADI_DC_FT, WT = ADI_DC_WT, CP = ADI_DC_CP, CV = ADI_DC_CV,
    NG = 8,              /* dW: partial sums, independent of the thread count */
    DW_POSITIONS = 64,   /* column dW: vectors of positions a chunk of images reaches */
    SLOT_WORK = 1 << 18, /* multiply-adds below which one thread does the whole op */
};

static _Atomic int path_switch = ADI_CONV_AUTO;

void adi_conv_set_path(int path)
{
    atomic_store(&path_switch, path);
}

int adi_conv_path(ad_dtype dt, int64_t co, int64_t groups, const adi_conv_geometry *g)
{
    if (atomic_load(&path_switch) == ADI_CONV_IM2COL)
        return ADI_CONV_IM2COL;
    if (groups == 1 && g->ho == 1 && g->wo == 1 && g->kh == g->h && g->kw == g->w &&
        g->ph == 0 && g->pw == 0 && g->c >= 1 && g->n <= INT32_MAX)
        return ADI_CONV_DENSE; /* the GEMMs' extents: n, co and c kh kw (checked) */
    bool fits = dt == AD_F32 && groups == 1 && g->sh == 1 && g->sw == 1 && g->dh == 1 &&
                g->dw == 1 && co >= 1 && co <= MAX_CO && g->c >= 1 && g->h >= 1 &&
                g->w >= 1 && g->c * g->kh * g->kw <= MAX_TAPS;
    /* Tap offsets are int32: the padded copy of one image must fit (wp at most w + 2
    ** pw + 2 VL, see job_make). */
    int64_t hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw + 2 * VL;
    fits = fits && g->h <= INT32_MAX && g->w <= INT32_MAX && hp <= INT32_MAX &&
           wp <= INT32_MAX && hp * wp <= INT32_MAX / g->c;
    return fits ? ADI_CONV_DIRECT : ADI_CONV_IM2COL;
}

static ad_status scratch(ad_ctx *cx, ad_dtype dt, int64_t rows, int64_t cols, void **out)
{
    ad_tensor *t;
    ad_status rc = ad_scratch(cx, dt, 2, (int64_t[]){rows, cols}, &t);
    if (!rc)
        *out = t->data;
    return rc;
}

/*
** The sizes every op needs, the kernel family and the tap offsets. The channel kernels
** take 9 to 16 channels when they fill more of their lanes (co of 16) than the column
** kernels do (co of co rounded up to FT, times wo of the row's vectors): LeNet's
** second layer, 16 channels of rows of 10, fills 100% against 56%.
*/
static ad_status job_make(ad_ctx *cx, const adi_conv_geometry *g, int64_t co, adi_dc_job *j)
{
    int64_t K = g->c * g->kh * g->kw, ch = (g->wo + VL - 1) / VL, che = (ch + 1) / 2 * 2;
    *j = (adi_dc_job){.g = g, .co = co, .K = K, .kp = (K + CP - 1) / CP * CP, .ch = ch,
                      .hp = g->h + 2 * g->ph, .wp = che * VL + g->kw - 1, .rw = ch * VL,
                      .cop = (co + WT - 1) / WT * WT};
    j->plane = g->c * j->hp * j->wp;
    double fill_col = (double)co / (double)((co + FT - 1) / FT * FT) *
                      (double)g->wo / (double)(che * VL);
    j->cv = co > VL && (double)co / CV > fill_col;
    void *off;
    ad_status rc = scratch(cx, AD_I32, 1, j->kp, &off);
    if (rc)
        return rc;
    int32_t *o = off;
    for (int64_t t = 0; t < j->kp; t++) {
        int64_t ci = t / (g->kh * g->kw), ky = t / g->kw % g->kh, kx = t % g->kw;
        o[t] = t < K ? (int32_t)((ci * j->hp + ky) * j->wp + kx) : 0;
    }
    j->off = o;
    j->slots = g->n * g->ho * g->wo * co * K < SLOT_WORK ? 1 : ad_get_num_threads();
    return AD_OK;
}

/* dst = image n of x, zero-padded: plane ci, row ph + ih, column pw + iw. */
static void pack_image(const adi_dc_job *j, int64_t n, float *dst)
{
    const adi_conv_geometry *g = j->g;
    memset(dst, 0, (size_t)j->plane * sizeof *dst);
    for (int64_t ci = 0; ci < g->c; ci++)
        for (int64_t ih = 0; ih < g->h; ih++)
            memcpy(dst + (ci * j->hp + ih + g->ph) * j->wp + g->pw,
                   j->x + ((n * g->c + ci) * g->h + ih) * g->w, (size_t)g->w * sizeof *dst);
}

/* Slots lo .. hi: their images (an equal share each), with slot lo's buffer. */
static void forward_slots(void *arg, int64_t lo, int64_t hi)
{
    const adi_dc_job *j = arg;
    const adi_conv_geometry *g = j->g;
    float *xp = j->pack + lo * j->slot_size;
    for (int64_t n = g->n * lo / j->slots; n < g->n * hi / j->slots; n++) {
        pack_image(j, n, xp);
        float *yn = j->y + n * j->co * g->ho * g->wo;
        if (j->cv)
            adi_dc_forward_cv(j, xp, yn);
        else
            adi_dc_forward_col(j, xp, yn);
    }
}

/* Weights and bias packed for the kernels (zero past co): K x CV for the channel
** kernel; per tile of FT channels, K x FT for the column kernel. */
static void pack_weights(const adi_dc_job *j, const float *w, const float *b, float *wp,
                         float *bp)
{
    int64_t rows = j->cv ? CV : (j->co + FT - 1) / FT * FT;
    for (int64_t o = 0; o < rows; o++) {
        bp[o] = b && o < j->co ? b[o] : 0.0f;
        for (int64_t t = 0; t < j->K; t++)
            wp[j->cv ? t * CV + o : (o / FT * j->K + t) * FT + o % FT] =
                o < j->co ? w[o * j->K + t] : 0.0f;
    }
}

ad_status adi_conv_direct_forward(ad_ctx *cx, const adi_conv_geometry *g, int64_t co,
                                  const float *x, const float *w, const float *b, float *y)
{
    adi_dc_job j;
    ad_status rc = job_make(cx, g, co, &j);
    int64_t rows = j.cv ? CV : (co + FT - 1) / FT * FT;
    void *wpk, *bpk, *pack;
    if (rc || (rc = scratch(cx, AD_F32, rows, j.K, &wpk)) ||
        (rc = scratch(cx, AD_F32, 1, rows, &bpk)))
        return rc;
    j.slot_size = j.plane;
    j.slots = j.slots < g->n ? j.slots : g->n;
    if ((rc = scratch(cx, AD_F32, j.slots, j.slot_size, &pack)))
        return rc;
    pack_weights(&j, w, b, wpk, bpk);
    j.x = x, j.y = y, j.wpk = wpk, j.bpk = bpk, j.pack = pack;
    adi_parallel_for(j.slots, 1, forward_slots, &j);
    return AD_OK;
}

/* Chunk k's images copied into the slot buffer (padded x, then dY as the kernel wants
** it), and summed into part. */
static void dw_one_chunk(const adi_dc_job *j, int64_t k, float *buf, float *part)
{
    const adi_conv_geometry *g = j->g;
    int64_t n0 = k * j->ipc, nimg = g->n - n0 < j->ipc ? g->n - n0 : j->ipc;
    int64_t P = g->ho * g->wo;
    float *dyp = buf + j->ipc * j->plane;
    for (int64_t b = 0; b < nimg; b++)
        pack_image(j, n0 + b, buf + b * j->plane);
    if (j->cv) { /* one image: dyp[p][o] */
        const float *d = j->dy + n0 * j->co * P;
        memset(dyp, 0, (size_t)(P * CV) * sizeof *dyp);
        for (int64_t o = 0; o < j->co; o++)
            for (int64_t p = 0; p < P; p++)
                dyp[p * CV + o] = d[o * P + p];
        adi_dc_dw_cv(j, buf, dyp, part);
        return;
    }
    int64_t rows = j->cop * g->ho;
    memset(dyp, 0, (size_t)(nimg * rows * j->rw) * sizeof *dyp);
    for (int64_t b = 0; b < nimg; b++)
        for (int64_t o = 0; o < j->co; o++)
            for (int64_t oh = 0; oh < g->ho; oh++)
                memcpy(dyp + ((b * j->cop + o) * g->ho + oh) * j->rw,
                       j->dy + ((n0 + b) * j->co + o) * P + oh * g->wo,
                       (size_t)g->wo * sizeof *dyp);
    adi_dc_dw_col(j, buf, dyp, nimg, part);
}

/* Slots lo .. hi: their groups (an equal share each), with slot lo's buffer. Group gi
** is chunks chunks*gi/NG .. chunks*(gi+1)/NG, summed in order into partial sum gi. */
static void dw_slots(void *arg, int64_t lo, int64_t hi)
{
    const adi_dc_job *j = arg;
    float *buf = j->pack + lo * j->slot_size;
    int64_t groups = j->chunks < NG ? j->chunks : NG;
    for (int64_t gi = groups * lo / j->slots; gi < groups * hi / j->slots; gi++) {
        float *part = j->part + gi * j->cop * j->kp;
        memset(part, 0, (size_t)(j->cop * j->kp) * sizeof *part);
        for (int64_t k = j->chunks * gi / groups; k < j->chunks * (gi + 1) / groups; k++)
            dw_one_chunk(j, k, buf, part);
    }
}

/* dW += sum over images of dY x' (the caller zeroed dW under beta 0). */
ad_status adi_conv_direct_dw(ad_ctx *cx, const adi_conv_geometry *g, int64_t co,
                             const float *x, const float *dy, float *dw)
{
    adi_dc_job j;
    ad_status rc = job_make(cx, g, co, &j);
    if (rc)
        return rc;
    int64_t per_image = g->ho * j.ch;
    j.ipc = j.cv ? 1 : (DW_POSITIONS + per_image - 1) / per_image;
    j.ipc = j.ipc < g->n ? j.ipc : g->n;
    j.chunks = (g->n + j.ipc - 1) / j.ipc;
    int64_t groups = j.chunks < NG ? j.chunks : NG;
    j.slots = j.slots < groups ? j.slots : groups;
    j.slot_size = j.ipc * j.plane +
                  (j.cv ? g->ho * g->wo * CV : j.ipc * j.cop * g->ho * j.rw);
    void *pack, *part;
    if ((rc = scratch(cx, AD_F32, j.slots, j.slot_size, &pack)) ||
        (rc = scratch(cx, AD_F32, groups, j.cop * j.kp, &part)))
        return rc;
    j.x = x, j.dy = dy, j.pack = pack, j.part = part;
    adi_parallel_for(j.slots, 1, dw_slots, &j);
    const float *ps = part;
    for (int64_t o = 0; o < co; o++)
        for (int64_t t = 0; t < j.K; t++) {
            float s = 0.0f;
            for (int64_t gi = 0; gi < groups; gi++)
                s += ps[(gi * j.cop + o) * j.kp + t];
            dw[o * j.K + t] += s;
        }
    return AD_OK;
}
