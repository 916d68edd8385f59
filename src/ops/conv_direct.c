/*
** conv_direct.c: conv2d's forward and dW without im2col, for float32 layers with few
** channels (conv.c chooses): groups 1, stride 1, dilation 1, any zero padding, at most
** MAX_CO output channels and MAX_TAPS taps (Cin*kh*kw). dX stays with im2col.
**
** Why: LeNet's layers (1->6 and 6->16 channels, 5x5) make GEMMs of 6 or 16 rows,
** which OpenBLAS runs at a fraction of its peak, after an im2col that copies the input
** kh*kw times. Here each image is copied once into a zero-padded plane per channel
** (rows of Wp floats, wide enough that every 8-lane load of a tap stays inside it), so
** a tap (ci, ky, kx) is just an offset into that copy and the loops have no padding
** tests. The forward keeps FT output channels x 2 vectors of 8 output columns in
** registers and runs over all taps, broadcasting a weight and loading a shifted row;
** dW keeps WT channels x WT taps of 8-lane sums in registers and runs over the
** positions of a chunk of images (their dY copied with zeroed row tails).
**
** Order and threads: a forward output is bias, then the taps in order (ci, ky, kx),
** each lane on its own, so it does not depend on the split over threads. dW is summed
** per chunk of images (chunk size from the geometry alone), in lanes then across them
** in a fixed tree, chunks added in order into NG partial sums (a group of consecutive
** chunks each), which are added in order at the end: the same bits for any thread
** count. No fused multiply-add (the project builds with -ffp-contract=off), so the
** AVX2 and the default clone give the same bits too. The results differ from the
** im2col path's in summation order only, within float32 rounding.
*/
#include <stdatomic.h>

#include "conv_internal.h"
#include "../base/parallel.h"

enum {
    MAX_CO = 16, MAX_TAPS = 160,
    VL = 8,            /* floats per vector */
    FT = 6,            /* forward: output channels per tile (12 accumulators) */
    WT = 3,            /* dW: output channels and taps per tile (9 accumulators) */
    NG = 8,            /* dW: partial sums, independent of the thread count */
    DW_POSITIONS = 64, /* dW: vectors of positions a chunk of images should reach */
    SLOT_WORK = 1 << 18, /* multiply-adds below which one thread does the whole op */
};

typedef float v8f __attribute__((vector_size(32)));

static _Atomic int path_switch = ADI_CONV_AUTO;

void adi_conv_set_path(int path)
{
    atomic_store(&path_switch, path);
}

int adi_conv_path(ad_dtype dt, int64_t co, int64_t groups, const adi_conv_geometry *g)
{
    bool fits = dt == AD_F32 && groups == 1 && g->sh == 1 && g->sw == 1 && g->dh == 1 &&
                g->dw == 1 && co >= 1 && co <= MAX_CO && g->c >= 1 && g->h >= 1 &&
                g->w >= 1 && g->c * g->kh * g->kw <= MAX_TAPS;
    /* Tap offsets are int32: the padded copy of one image must fit (wp at most w + 2
    ** pw + 2 VL, see job_make). */
    int64_t hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw + 2 * VL;
    fits = fits && g->h <= INT32_MAX && g->w <= INT32_MAX && hp <= INT32_MAX &&
           wp <= INT32_MAX && hp * wp <= INT32_MAX / g->c;
    return fits && atomic_load(&path_switch) != ADI_CONV_IM2COL ? ADI_CONV_DIRECT
                                                                 : ADI_CONV_IM2COL;
}

/* What the parts of one op share. A slot is a part's own buffer, chosen by the part's
** first index, so parts never share one. */
typedef struct direct_job {
    const adi_conv_geometry *g;
    int64_t co, K, kp;  /* channels, taps, taps rounded up to WT */
    int64_t ch, hp, wp; /* vectors per output row; the padded copy's rows and width */
    int64_t plane;      /* floats of one image's padded copy */
    int64_t rw, cop;    /* dW: floats per copied dY row, channels rounded up to WT */
    int64_t slots, ipc, chunks; /* slots; dW: images per chunk, chunks */
    const int32_t *off; /* tap t reads the copy at off[t] (+ row and column) */
    const float *x, *dy, *wpk, *bpk;
    float *y, *pack, *part;
    int64_t slot_size;  /* floats of one slot's buffer */
} direct_job;

static ad_status scratch(ad_ctx *cx, ad_dtype dt, int64_t rows, int64_t cols, void **out)
{
    ad_tensor *t;
    ad_status rc = ad_scratch(cx, dt, 2, (int64_t[]){rows, cols}, &t);
    if (!rc)
        *out = t->data;
    return rc;
}

/* The sizes every op needs, and the tap offsets (kp of them; those past K read 0). */
static ad_status job_make(ad_ctx *cx, const adi_conv_geometry *g, int64_t co,
                          direct_job *j)
{
    int64_t K = g->c * g->kh * g->kw, ch = (g->wo + VL - 1) / VL;
    *j = (direct_job){.g = g, .co = co, .K = K, .kp = (K + WT - 1) / WT * WT, .ch = ch,
                      .hp = g->h + 2 * g->ph, .wp = (ch + 1) / 2 * 2 * VL + g->kw - 1,
                      .rw = ch * VL, .cop = (co + WT - 1) / WT * WT};
    j->plane = g->c * j->hp * j->wp;
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
    int threads = ad_get_num_threads();
    j->slots = g->n * g->ho * g->wo * co * K < SLOT_WORK ? 1 : threads;
    return AD_OK;
}

/* dst = image n of x, zero-padded: plane ci, row ph + ih, column pw + iw. */
static void pack_image(const direct_job *j, int64_t n, float *dst)
{
    const adi_conv_geometry *g = j->g;
    memset(dst, 0, (size_t)j->plane * sizeof *dst);
    for (int64_t ci = 0; ci < g->c; ci++)
        for (int64_t ih = 0; ih < g->h; ih++)
            memcpy(dst + (ci * j->hp + ih + g->ph) * j->wp + g->pw,
                   j->x + ((n * g->c + ci) * g->h + ih) * g->w, (size_t)g->w * sizeof *dst);
}

#define FWD_TAP(q) (a[q][0] += wq[q] * x0, a[q][1] += wq[q] * x1)

/*
** One image's output yn (co x ho x wo) from its padded copy xp: for each tile of FT
** channels and each pair of 8-column vectors of an output row, the sum over taps in
** registers. Columns past wo are computed from the copy's zeros and not stored.
*/
__attribute__((target_clones("avx2", "default")))
static void forward_image(const direct_job *j, const float *xp, float *yn)
{
    const int64_t K = j->K, wp = j->wp, ho = j->g->ho, wo = j->g->wo, ch = j->ch;
    const int32_t *off = j->off;
    for (int64_t c0 = 0; c0 < j->co; c0 += FT) {
        const float *wt = j->wpk + c0 * K, *bt = j->bpk + c0;
        for (int64_t oh = 0; oh < ho; oh++)
            for (int64_t v0 = 0; v0 < ch; v0 += 2) {
                const float *base = xp + oh * wp + v0 * VL;
                v8f a[FT][2];
                for (int q = 0; q < FT; q++)
                    a[q][0] = a[q][1] = (v8f){0} + bt[q];
                for (int64_t t = 0; t < K; t++) {
                    v8f x0, x1;
                    memcpy(&x0, base + off[t], sizeof x0);
                    memcpy(&x1, base + off[t] + VL, sizeof x1);
                    const float *wq = wt + t * FT;
                    FWD_TAP(0), FWD_TAP(1), FWD_TAP(2), FWD_TAP(3), FWD_TAP(4), FWD_TAP(5);
                }
                for (int q = 0; q < FT && c0 + q < j->co; q++)
                    for (int64_t v = v0; v < v0 + 2 && v < ch; v++) {
                        float *dst = yn + ((c0 + q) * ho + oh) * wo + v * VL;
                        int64_t lanes = wo - v * VL < VL ? wo - v * VL : VL;
                        if (lanes == VL)
                            memcpy(dst, &a[q][v - v0], sizeof(v8f));
                        else
                            memcpy(dst, &a[q][v - v0], (size_t)lanes * sizeof(float));
                    }
            }
    }
}

/* Slots lo .. hi: their images (an equal share each), with slot lo's buffer. */
static void forward_slots(void *arg, int64_t lo, int64_t hi)
{
    const direct_job *j = arg;
    const adi_conv_geometry *g = j->g;
    float *xp = j->pack + lo * j->slot_size;
    for (int64_t n = g->n * lo / j->slots; n < g->n * hi / j->slots; n++) {
        pack_image(j, n, xp);
        forward_image(j, xp, j->y + n * j->co * g->ho * g->wo);
    }
}

ad_status adi_conv_direct_forward(ad_ctx *cx, const adi_conv_geometry *g, int64_t co,
                                  const float *x, const float *w, const float *b, float *y)
{
    direct_job j;
    ad_status rc = job_make(cx, g, co, &j);
    int64_t tiles = (co + FT - 1) / FT;
    void *wpk, *bpk, *pack;
    if (rc || (rc = scratch(cx, AD_F32, tiles * FT, j.K, &wpk)) ||
        (rc = scratch(cx, AD_F32, 1, tiles * FT, &bpk)))
        return rc;
    j.slot_size = j.plane;
    j.slots = j.slots < g->n ? j.slots : g->n;
    if ((rc = scratch(cx, AD_F32, j.slots, j.slot_size, &pack)))
        return rc;
    /* Tile c0's weights as K rows of FT (zero past co), so a tap's are adjacent. */
    float *wp = wpk, *bp = bpk;
    for (int64_t o = 0; o < tiles * FT; o++) {
        bp[o] = b && o < co ? b[o] : 0.0f;
        for (int64_t t = 0; t < j.K; t++)
            wp[(o / FT * j.K + t) * FT + o % FT] = o < co ? w[o * j.K + t] : 0.0f;
    }
    j.x = x, j.y = y, j.wpk = wp, j.bpk = bp, j.pack = pack;
    adi_parallel_for(j.slots, 1, forward_slots, &j);
    return AD_OK;
}

/* The lanes of v summed in a fixed tree. */
#define HSUM(v, out)                                                                    \
    do {                                                                                \
        float l_[VL];                                                                   \
        memcpy(l_, &(v), sizeof l_);                                                    \
        (out) = ((l_[0] + l_[1]) + (l_[2] + l_[3])) + ((l_[4] + l_[5]) + (l_[6] + l_[7])); \
    } while (0)

#define DW_TAP(o, A0, A1, A2)                                                           \
    do {                                                                                \
        v8f x_;                                                                         \
        memcpy(&x_, xs + (o), sizeof x_);                                               \
        A0 += d0 * x_, A1 += d1 * x_, A2 += d2 * x_;                                    \
    } while (0)

/*
** part (cop x kp) += dY x' over nimg images: their padded copies xp (plane floats
** each) and their dY copies dyp (cop x ho x rw each, zero past co and past wo, so
** padded lanes and channels add nothing). A tile of WT channels x WT taps sums 8-lane
** products over every position of the chunk before its lanes are added.
*/
__attribute__((target_clones("avx2", "default")))
static void dw_chunk(const direct_job *j, const float *xp, const float *dyp, int64_t nimg,
                     float *part)
{
    const int64_t ho = j->g->ho, wp = j->wp, rw = j->rw, ch = j->ch, plane = ho * rw;
    for (int64_t c0 = 0; c0 < j->cop; c0 += WT)
        for (int64_t t0 = 0; t0 < j->kp; t0 += WT) {
            const int64_t o0 = j->off[t0], o1 = j->off[t0 + 1], o2 = j->off[t0 + 2];
            v8f a00 = {0}, a01 = {0}, a02 = {0}, a10 = {0}, a11 = {0}, a12 = {0};
            v8f a20 = {0}, a21 = {0}, a22 = {0};
            for (int64_t b = 0; b < nimg; b++) {
                const float *xb = xp + b * j->plane, *db = dyp + (b * j->cop + c0) * plane;
                for (int64_t oh = 0; oh < ho; oh++)
                    for (int64_t v = 0; v < ch; v++) {
                        const float *xs = xb + oh * wp + v * VL, *ds = db + oh * rw + v * VL;
                        v8f d0, d1, d2;
                        memcpy(&d0, ds, sizeof d0);
                        memcpy(&d1, ds + plane, sizeof d1);
                        memcpy(&d2, ds + 2 * plane, sizeof d2);
                        DW_TAP(o0, a00, a10, a20);
                        DW_TAP(o1, a01, a11, a21);
                        DW_TAP(o2, a02, a12, a22);
                    }
            }
            float s[WT][WT];
            HSUM(a00, s[0][0]); HSUM(a01, s[0][1]); HSUM(a02, s[0][2]);
            HSUM(a10, s[1][0]); HSUM(a11, s[1][1]); HSUM(a12, s[1][2]);
            HSUM(a20, s[2][0]); HSUM(a21, s[2][1]); HSUM(a22, s[2][2]);
            for (int q = 0; q < WT; q++)
                for (int i = 0; i < WT; i++)
                    part[(c0 + q) * j->kp + t0 + i] += s[q][i];
        }
}

/* Chunk k's images copied into the slot buffer (padded x, then dY), and summed into
** part. Returns nothing: a chunk only reads the op's inputs and writes its group's
** partial sum. */
static void dw_one_chunk(const direct_job *j, int64_t k, float *buf, float *part)
{
    const adi_conv_geometry *g = j->g;
    int64_t n0 = k * j->ipc, nimg = g->n - n0 < j->ipc ? g->n - n0 : j->ipc;
    float *dyp = buf + j->ipc * j->plane;
    int64_t P = g->ho * g->wo, rows = j->cop * g->ho;
    memset(dyp, 0, (size_t)(nimg * rows * j->rw) * sizeof *dyp);
    for (int64_t b = 0; b < nimg; b++) {
        pack_image(j, n0 + b, buf + b * j->plane);
        for (int64_t o = 0; o < j->co; o++)
            for (int64_t oh = 0; oh < g->ho; oh++)
                memcpy(dyp + ((b * j->cop + o) * g->ho + oh) * j->rw,
                       j->dy + ((n0 + b) * j->co + o) * P + oh * g->wo,
                       (size_t)g->wo * sizeof *dyp);
    }
    dw_chunk(j, buf, dyp, nimg, part);
}

/* Slots lo .. hi: their groups (an equal share each), with slot lo's buffer. Group gi
** is chunks chunks*gi/NG .. chunks*(gi+1)/NG, summed in order into partial sum gi. */
static void dw_slots(void *arg, int64_t lo, int64_t hi)
{
    const direct_job *j = arg;
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
    direct_job j;
    ad_status rc = job_make(cx, g, co, &j);
    if (rc)
        return rc;
    int64_t per_image = g->ho * j.ch;
    j.ipc = (DW_POSITIONS + per_image - 1) / per_image;
    j.ipc = j.ipc < g->n ? j.ipc : g->n;
    j.chunks = (g->n + j.ipc - 1) / j.ipc;
    int64_t groups = j.chunks < NG ? j.chunks : NG;
    j.slots = j.slots < groups ? j.slots : groups;
    j.slot_size = j.ipc * (j.plane + j.cop * g->ho * j.rw);
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
