/*
** test_pool_lanes.c: max_pool2d's 2x2 stride-2 path on wide f32 planes, where it
** compares four windows at a time (SSE2 on x86-64) and finishes each row one window at
** a time. Values drawn from {0, 1, 2} make ties in every lane, NaNs sit in every lane
** and in every position of a window, and each result is checked against PyTorch's
** scan written out here: start with the window's first element, take v when v > max
** or v is NaN. Values bitwise, the argmax through the gradient (each dx is 0 or the dY
** of its window), with and without recording for a sweep.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

enum { N = 2, C = 3, H = 7, W = 22, HO = H / 2, WO = W / 2 }; /* odd H: a row unused */

/* Ties everywhere, and a NaN in about one window in five at a varying position. */
static void fill(ad_tensor *x, uint64_t *rng)
{
    float *v = x->data;
    for (int64_t i = 0; i < x->size; i++)
        v[i] = (float)(ts_next(rng) % 3);
    for (int64_t i = 0; i < x->size; i++)
        if (ts_next(rng) % 20 == 0)
            v[i] = NAN;
}

/* The reference scan over window (pl, oh, ow): the value and its plane position. */
static float scan(const float *plane, int64_t oh, int64_t ow, int64_t *at)
{
    const int64_t pos[4] = {2 * oh * W + 2 * ow, 2 * oh * W + 2 * ow + 1,
                            (2 * oh + 1) * W + 2 * ow, (2 * oh + 1) * W + 2 * ow + 1};
    float m = plane[pos[0]];
    *at = pos[0];
    for (int k = 1; k < 4; k++) {
        float v = plane[pos[k]];
        if (v > m || v != v) {
            m = v;
            *at = pos[k];
        }
    }
    return m;
}

static void expect_same_value(float got, float want, int64_t i)
{
    cr_expect(memcmp(&got, &want, sizeof got) == 0 || (isnan(got) && isnan(want)),
              "y[%lld] = %g, the scan gives %g", (long long)i, (double)got, (double)want);
}

Test(pool_lanes, wide_f32_planes_with_ties_and_nans_match_the_scan_in_every_lane)
{
    uint64_t rng = 11;
    ad_tensor *x = ts_tensor(AD_F32, 4, TS_SHAPE(N, C, H, W));
    ad_tensor *g = ts_tensor(AD_F32, 4, TS_SHAPE(N, C, HO, WO));
    fill(x, &rng);
    ts_fill_uniform(g, &rng, 0.5, 1.5); /* nonzero: dx shows where each went */
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    const ad_pool2d_attrs at = AD_POOL2D_ATTRS(2, 2);
    ad_var y = ad_max_pool2d(t, ad_use(t, x), &at);
    ad_var loss = ad_sum(t, ad_mul(t, y, ad_use(t, g)));
    ad_keep(t, y);
    cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "%s", ad_last_error());
    const float *yv = ad_value(t, y)->data, *dx = ad_grads_get(gs, x)->data;
    float want_dx[N * C * H * W] = {0};
    int nan_windows = 0, tied_windows = 0;
    for (int64_t pl = 0; pl < N * C; pl++)
        for (int64_t oh = 0; oh < HO; oh++)
            for (int64_t ow = 0; ow < WO; ow++) {
                const float *plane = (const float *)x->data + pl * H * W;
                int64_t i = (pl * HO + oh) * WO + ow, pos;
                float m = scan(plane, oh, ow, &pos);
                expect_same_value(yv[i], m, i);
                want_dx[pl * H * W + pos] = ((const float *)g->data)[i];
                nan_windows += isnan(m);
                tied_windows += !isnan(m) && plane[2 * oh * W + 2 * ow] == m &&
                                plane[2 * oh * W + 2 * ow + 1] == m;
            }
    cr_assert(nan_windows > 10 && tied_windows > 10, "%d NaN and %d tied windows",
              nan_windows, tied_windows);
    for (int64_t i = 0; i < x->size; i++)
        cr_expect_eq(dx[i], want_dx[i], "dx[%lld] = %g, want %g", (long long)i,
                     (double)dx[i], (double)want_dx[i]);
    /* Forward only: no argmax is kept, the values are the same. */
    ad_tape_reset(t);
    ad_tape_set_grad_enabled(t, 0);
    ad_var y2 = ad_max_pool2d(t, ad_use(t, x), &at);
    cr_assert_eq(ad_tape_status(t), AD_OK, "%s", ad_tape_error(t));
    const float *y2v = ad_value(t, y2)->data;
    for (int64_t i = 0; i < N * C * HO * WO; i++)
        expect_same_value(y2v[i], yv[i], i);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(x);
    ad_tensor_free(g);
}
