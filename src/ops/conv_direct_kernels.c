/*
** conv_direct_kernels.c: the inner loops of conv2d's direct path (conv_direct.c says
** why and how the data is laid out). Each keeps a tile of sums in 12 or 9 vector
** registers across a whole loop of taps (forward) or positions (dW), so a multiply-add
** costs about one load. GCC vector types, cloned for AVX2 and a default (SSE2) build
** and chosen at load time; no fused multiply-add (the project builds with
** -ffp-contract=off), so both clones give the same bits.
*/
#include "conv_direct.h"

/* clang 14 emits a target_clones function's resolver as a global, exported symbol even
** for a static function (scripts/check-exports found forward_col and the rest in the
** clang build's libadtape.so), so clang builds compile the portable kernels only; and
** an ifunc resolver runs before ThreadSanitizer's runtime is up and crashes every
** process of a -fsanitize=thread build (scripts/tsan), so those go without too. */
#if defined(__clang__) || defined(__SANITIZE_THREAD__)
#define DC_CLONES
#else
#define DC_CLONES __attribute__((target_clones("avx2", "default")))
#endif

enum { VL = ADI_DC_VL, FT = ADI_DC_FT, WT = ADI_DC_WT, CP = ADI_DC_CP, CV = ADI_DC_CV };

typedef float v8f __attribute__((vector_size(32)));

#define FWD_TAP(q) (a[q][0] += wq[q] * x0, a[q][1] += wq[q] * x1)

/*
** Column kernel: for each tile of FT channels (weights packed K x FT, zero past co)
** and each pair of 8-column vectors of an output row, the sum over taps in registers.
** Columns past wo are computed from the copy's zeros and not stored.
*/
DC_CLONES
static void forward_col(const adi_dc_job *j, const float *xp, float *yn)
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

#define CV_TAP(s, lo, hi) (lo += w0 * (s)[o], hi += w1 * (s)[o])

/* The copy's address of output position p (row-major over ho x wo). */
static const float *at_position(const adi_dc_job *j, const float *xp, int64_t p)
{
    return xp + p / j->g->wo * j->wp + p % j->g->wo;
}

/*
** Channel kernel: CP output positions (in row-major order, across row ends; the last
** tile repeats the last position) x 16 channels (weights packed K x CV, zero past co)
** in registers, over all taps: a tap costs two weight loads and CP broadcasts.
*/
DC_CLONES
static void forward_cv(const adi_dc_job *j, const float *xp, float *yn)
{
    const int64_t K = j->K, P = j->g->ho * j->g->wo;
    const int32_t *off = j->off;
    v8f bl, bh;
    memcpy(&bl, j->bpk, sizeof bl);
    memcpy(&bh, j->bpk + VL, sizeof bh);
    for (int64_t p0 = 0; p0 < P; p0 += CP) {
        const float *s[CP];
        for (int k = 0; k < CP; k++)
            s[k] = at_position(j, xp, p0 + k < P ? p0 + k : P - 1);
        const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3], *s4 = s[4], *s5 = s[5];
        v8f a0 = bl, a1 = bl, a2 = bl, a3 = bl, a4 = bl, a5 = bl;
        v8f h0 = bh, h1 = bh, h2 = bh, h3 = bh, h4 = bh, h5 = bh;
        for (int64_t t = 0; t < K; t++) {
            const int64_t o = off[t];
            v8f w0, w1;
            memcpy(&w0, j->wpk + t * CV, sizeof w0);
            memcpy(&w1, j->wpk + t * CV + VL, sizeof w1);
            CV_TAP(s0, a0, h0), CV_TAP(s1, a1, h1), CV_TAP(s2, a2, h2);
            CV_TAP(s3, a3, h3), CV_TAP(s4, a4, h4), CV_TAP(s5, a5, h5);
        }
        float l[CP][CV];
        const v8f lo[CP] = {a0, a1, a2, a3, a4, a5}, hi[CP] = {h0, h1, h2, h3, h4, h5};
        for (int k = 0; k < CP; k++) {
            memcpy(l[k], &lo[k], sizeof lo[k]);
            memcpy(l[k] + VL, &hi[k], sizeof hi[k]);
        }
        for (int k = 0; k < CP && p0 + k < P; k++)
            for (int64_t o = 0; o < j->co; o++)
                yn[o * P + p0 + k] = l[k][o];
    }
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
** Column kernel: a tile of WT channels x WT taps sums 8-lane products over every
** position of the chunk before its lanes are added; dY's zero lanes past wo and zero
** channels past co add nothing.
*/
DC_CLONES
static void dw_col(const adi_dc_job *j, const float *xp, const float *dyp, int64_t nimg,
                   float *part)
{
    const int64_t ho = j->g->ho, wp = j->wp, rw = j->rw, ch = j->ch, plane = ho * rw;
    for (int64_t c0 = 0; c0 < j->cop; c0 += WT)
        for (int64_t t0 = 0; t0 < (j->K + WT - 1) / WT * WT; t0 += WT) {
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

#define CVW_TAP(o, lo, hi) (lo += d0 * xs[o], hi += d1 * xs[o])

/*
** Channel kernel, one image: a tile of CP taps x 16 channels over every position, dY
** copied position-major (CV floats a position); each sum's lanes are its channels, so
** nothing is added across lanes.
*/
DC_CLONES
static void dw_cv(const adi_dc_job *j, const float *xp, const float *dyp, float *part)
{
    const int64_t ho = j->g->ho, wo = j->g->wo, wp = j->wp;
    for (int64_t t0 = 0; t0 < j->kp; t0 += CP) {
        const int32_t *ot = j->off + t0;
        const int64_t o0 = ot[0], o1 = ot[1], o2 = ot[2], o3 = ot[3], o4 = ot[4], o5 = ot[5];
        v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0};
        v8f h0 = {0}, h1 = {0}, h2 = {0}, h3 = {0}, h4 = {0}, h5 = {0};
        for (int64_t oh = 0; oh < ho; oh++) {
            const float *xr = xp + oh * wp, *dr = dyp + oh * wo * CV;
            for (int64_t ow = 0; ow < wo; ow++) {
                const float *xs = xr + ow;
                v8f d0, d1;
                memcpy(&d0, dr + ow * CV, sizeof d0);
                memcpy(&d1, dr + ow * CV + VL, sizeof d1);
                CVW_TAP(o0, a0, h0), CVW_TAP(o1, a1, h1), CVW_TAP(o2, a2, h2);
                CVW_TAP(o3, a3, h3), CVW_TAP(o4, a4, h4), CVW_TAP(o5, a5, h5);
            }
        }
        float l[CP][CV];
        const v8f lo[CP] = {a0, a1, a2, a3, a4, a5}, hi[CP] = {h0, h1, h2, h3, h4, h5};
        for (int k = 0; k < CP; k++) {
            memcpy(l[k], &lo[k], sizeof lo[k]);
            memcpy(l[k] + VL, &hi[k], sizeof hi[k]);
        }
        for (int64_t o = 0; o < j->co; o++)
            for (int k = 0; k < CP; k++)
                part[o * j->kp + t0 + k] += l[k][o];
    }
}

/* The entry points: clang 14 links a target_clones function only from its own file
** (a caller elsewhere would need the attribute on its declaration too), so the clones
** are static and these plain functions call them. */
void adi_dc_forward_col(const adi_dc_job *j, const float *xp, float *yn)
{
    forward_col(j, xp, yn);
}

void adi_dc_forward_cv(const adi_dc_job *j, const float *xp, float *yn)
{
    forward_cv(j, xp, yn);
}

void adi_dc_dw_col(const adi_dc_job *j, const float *xp, const float *dyp, int64_t nimg,
                   float *part)
{
    dw_col(j, xp, dyp, nimg, part);
}

void adi_dc_dw_cv(const adi_dc_job *j, const float *xp, const float *dyp, float *part)
{
    dw_cv(j, xp, dyp, part);
}
