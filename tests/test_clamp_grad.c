/*
** test_clamp_grad.c: ad_clamp_grad, the identity whose pullback clamps dy elementwise
** to [lo, hi] (BioTorch's gradient clamping). Values derived by hand inside, outside
** and exactly at the bounds, in float32 and float64; accumulation into a gradient
** another use of x wrote first (beta 1) and written first (beta 0); the reference
** sweep's true gradient; ad_rule_check; every invalid bound.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "ad_check.h"
#include "ad_feedback.h"
#include "support.h"

enum { N = 8 };
/* dy as G: inside, outside both ways, exactly at both bounds, zero. */
static const double G[N] = {0.25, -0.5, 3.0, -7.5, 1.0, -1.0, 0.0, 1.0000001};
static const double G_CLAMPED[N] = {0.25, -0.5, 1.0, -1.0, 1.0, -1.0, 0.0, 1.0};
static const double H[N] = {0.5, 0.5, 0.5, 0.5, -2.0, -2.0, 4.0, 0.0};

typedef struct rig {
    ad_dtype dtype;
    ad_tensor *x, *g, *h;
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    const ad_clamp_grad_attrs *attrs;
    int extra; /* 0: loss = sum(clamp(x) G); 1: + sum(x H) recorded after; 2: before */
} rig;

static void rig_open(rig *r, ad_dtype dtype)
{
    *r = (rig){.dtype = dtype, .x = ts_tensor(dtype, 2, TS_SHAPE(2, 4)),
               .g = ts_tensor(dtype, 2, TS_SHAPE(2, 4)),
               .h = ts_tensor(dtype, 2, TS_SHAPE(2, 4))};
    for (int i = 0; i < N; i++) {
        ts_set(r->x, i, 0.1 * i - 0.3);
        ts_set(r->g, i, G[i]);
        ts_set(r->h, i, H[i]);
    }
    cr_assert_eq(ad_params_new(&r->ps), AD_OK);
    cr_assert_eq(ad_params_add(r->ps, r->x, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r->ps, &r->gs), AD_OK);
    cr_assert_eq(ad_tape_new(&r->t), AD_OK);
}

static void rig_close(rig *r)
{
    ad_tape_free(r->t);
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tensor_free(r->x);
    ad_tensor_free(r->g);
    ad_tensor_free(r->h);
}

static ad_var rig_loss(ad_tape *t, void *user)
{
    rig *r = user;
    ad_var x = ad_use(t, r->x), other = {0};
    if (r->extra == 2)
        other = ad_sum(t, ad_mul(t, x, ad_use(t, r->h)));
    ad_var y = ad_clamp_grad(t, x, r->attrs);
    ad_var loss = ad_sum(t, ad_mul(t, y, ad_use(t, r->g)));
    if (r->extra == 1)
        other = ad_sum(t, ad_mul(t, x, ad_use(t, r->h)));
    return r->extra ? ad_add(t, loss, other) : loss;
}

static const ad_tensor *rig_grad(rig *r, int reference)
{
    ad_sweep_options o = {.use_reference = reference};
    ad_tape_reset(r->t);
    ad_var loss = rig_loss(r->t, r);
    cr_assert_eq(ad_backward_ex(r->t, loss, r->ps, r->gs, &o), AD_OK, "%s",
                 ad_last_error());
    return ad_grads_at(r->gs, 0);
}

Test(clamp_grad, forward_is_the_identity_and_dx_is_dy_clamped_to_minus_one_one)
{
    for (int d = 0; d < 2; d++) {
        rig r;
        rig_open(&r, d ? AD_F64 : AD_F32);
        ad_tape_reset(r.t);
        ad_var y = ad_clamp_grad(r.t, ad_use(r.t, r.x), NULL);
        const ad_tensor *v = ad_value(r.t, y);
        cr_assert(v, "%s", ad_last_error());
        cr_expect(!memcmp(v->data, r.x->data, N * ad_dtype_size(r.dtype)), "forward");
        const ad_tensor *dx = rig_grad(&r, 0);
        for (int i = 0; i < N; i++) {
            double want = d ? G_CLAMPED[i] : (double)(float)G_CLAMPED[i];
            cr_expect_eq(ts_get(dx, i), want, "%s dx[%d] = %.17g for dy %g",
                         d ? "f64" : "f32", i, ts_get(dx, i), G[i]);
        }
        rig_close(&r);
    }
}

/* [-0.5, 2]: asymmetric; lo == hi gives that constant wherever dy is not NaN. */
Test(clamp_grad, other_bounds_clamp_there)
{
    rig r;
    rig_open(&r, AD_F64);
    ad_clamp_grad_attrs a = {.lo = -0.5, .hi = 2.0};
    r.attrs = &a;
    const ad_tensor *dx = rig_grad(&r, 0);
    const double want[N] = {0.25, -0.5, 2.0, -0.5, 1.0, -0.5, 0.0, 1.0000001};
    for (int i = 0; i < N; i++)
        cr_expect_eq(ts_get(dx, i), want[i], "dx[%d]", i);
    a = (ad_clamp_grad_attrs){.lo = 0.5, .hi = 0.5};
    dx = rig_grad(&r, 0);
    for (int i = 0; i < N; i++)
        cr_expect_eq(ts_get(dx, i), 0.5, "dx[%d]", i);
    a = (ad_clamp_grad_attrs){.lo = -INFINITY, .hi = INFINITY};
    dx = rig_grad(&r, 0);
    for (int i = 0; i < N; i++)
        cr_expect_eq(ts_get(dx, i), G[i], "no clamping: dx[%d]", i);
    rig_close(&r);
}

/* x also feeds sum(x H): dx = clamp(G) + H whichever pullback writes first. */
Test(clamp_grad, accumulates_with_another_use_of_x_in_either_order)
{
    for (int d = 0; d < 2; d++)
        for (int extra = 1; extra <= 2; extra++) {
            rig r;
            rig_open(&r, d ? AD_F64 : AD_F32);
            r.extra = extra;
            const ad_tensor *dx = rig_grad(&r, 0);
            for (int i = 0; i < N; i++)
                cr_expect_eq(ts_get(dx, i), G_CLAMPED[i] + H[i], "%s order %d: dx[%d]",
                             d ? "f64" : "f32", extra, i);
            rig_close(&r);
        }
}

Test(clamp_grad, reference_sweep_gives_the_true_gradient)
{
    rig r;
    rig_open(&r, AD_F64);
    const ad_tensor *dx = rig_grad(&r, 1);
    for (int i = 0; i < N; i++)
        cr_expect_eq(ts_get(dx, i), G[i], "dx[%d]", i);
    rig_close(&r);
}

Test(clamp_grad, nan_in_dy_stays_nan)
{
    rig r;
    rig_open(&r, AD_F64);
    ts_set(r.g, 3, NAN);
    const ad_tensor *dx = rig_grad(&r, 0);
    cr_expect(isnan(ts_get(dx, 3)));
    cr_expect_eq(ts_get(dx, 2), 1.0);
    rig_close(&r);
}

/* The checker's cotangents (a u + b v within 2.25 in magnitude) stay inside [-4, 4],
** where the rule is linear in dy and passes every structural check; with [-1, 1] the
** clamp engages and LINEAR fails, as it must for a pullback that is not linear. */
Test(clamp_grad, rule_passes_the_check_inside_its_bounds_as_not_the_gradient)
{
    ad_tensor *x = ts_tensor(AD_F64, 2, TS_SHAPE(3, 5));
    uint64_t s = 9;
    ts_fill_uniform(x, &s, -3.0, 3.0);
    ad_check_report rep;
    const ad_tensor *in[1] = {x};
    ad_clamp_grad_attrs wide = {.lo = -4.0, .hi = 4.0};
    ad_check_options o = ad_check_defaults();
    o.attrs = &wide, o.attrs_size = sizeof wide;
    cr_expect_eq(ad_rule_check(ad_op_clamp_grad, in, 1, &o, &rep), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(rep.slot[0].method, AD_CHECK_STRUCTURAL);
    cr_expect_eq(rep.slot[0].angle, AD_CHECK_ANGLE_MEASURED);
    cr_expect_eq(ad_rule_check(ad_op_clamp_grad, in, 1, NULL, &rep), AD_ERR_CHECK_FAILED);
    cr_expect(strstr(ad_last_error(), "not linear"), "%s", ad_last_error());
    const ad_rule *rule = ad_rule_find(ad_op_clamp_grad);
    cr_assert(rule);
    cr_expect_eq(rule->not_gradient, AD_INPUT(0));
    cr_expect_eq(rule->attrs_size, sizeof(ad_clamp_grad_attrs));
    const ad_clamp_grad_attrs *def = rule->attrs_default;
    cr_assert(def);
    cr_expect(def->lo == -1.0 && def->hi == 1.0);
    ad_tensor_free(x);
}

Test(clamp_grad, bad_bounds_fail_at_record_time_named)
{
    const ad_clamp_grad_attrs bad[] = {{.lo = 1.0, .hi = -1.0},
                                       {.lo = NAN, .hi = 1.0},
                                       {.lo = -1.0, .hi = NAN},
                                       {.lo = INFINITY, .hi = 0.0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rig r;
        rig_open(&r, AD_F32);
        ad_var y = ad_clamp_grad(r.t, ad_use(r.t, r.x), &bad[i]);
        ts_assert_tape_failed(r.t, y, AD_ERR_INVALID, "clamp_grad", "not lo <= hi");
        rig_close(&r);
    }
}
