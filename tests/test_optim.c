/*
** test_optim.c: optimisers against reference loops transcribing PyTorch's published
** equations (torch.optim.SGD, Adam, AdamW, torch.nn.utils.clip_grad_norm_), written
** without reading src/nn/optim.c; decay, clipping, absent gradients, training,
** allocations, out-of-memory and every invalid argument.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

/* ---- the reference ---- */

enum { NW = 5, NU = 3 };
static const double w0[NW] = {0.5, -1.25, 2.0, 0.75, -0.3};
static const double c0[NW] = {0.1, 0.2, -0.4, 1.0, 0.0};
static const double u0[NU] = {1.0, -2.0, 0.5};

typedef struct ref {
    double p[NW], buf[NW], m[NW], v[NW];
    int steps;
} ref;

/* The gradient of mse(p, c) = mean((p - c)^2): 2 (p - c) / n, then clip_grad_norm_:
** g *= min(1, max_norm / (||g|| + 1e-6)). */
static void ref_grad(const ref *r, double clip_norm, double g[NW])
{
    double s = 0.0;
    for (int i = 0; i < NW; i++) {
        g[i] = 2.0 * (r->p[i] - c0[i]) / NW;
        s += g[i] * g[i];
    }
    double coef = clip_norm / (sqrt(s) + 1e-6);
    if (clip_norm > 0.0 && coef < 1.0)
        for (int i = 0; i < NW; i++)
            g[i] *= coef;
}

/* torch.optim.SGD, dampening 0: d = g + wd p; buf = d on the first step, else
** mu buf + d; d = nesterov ? d + mu buf : buf; p -= lr d. */
static void ref_sgd(ref *r, const double *g, const ad_optim_config *c)
{
    for (int i = 0; i < NW; i++) {
        double d = g[i] + c->weight_decay * r->p[i];
        if (c->kind != AD_OPT_DESCENT) {
            r->buf[i] = r->steps == 0 ? d : c->momentum * r->buf[i] + d;
            d = c->kind == AD_OPT_NESTEROV ? d + c->momentum * r->buf[i] : r->buf[i];
        }
        r->p[i] -= c->lr * d;
    }
    r->steps++;
}

/* torch.optim.Adam (g += wd p) and AdamW (p *= 1 - lr wd): m.lerp_(g, 1 - b1);
** v = b2 v + (1 - b2) g^2; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps). */
static void ref_adam(ref *r, const double *g, const ad_optim_config *c)
{
    r->steps++;
    double bc1 = 1.0 - pow(c->beta1, r->steps), bc2 = 1.0 - pow(c->beta2, r->steps);
    for (int i = 0; i < NW; i++) {
        double gi = g[i];
        if (c->kind == AD_OPT_ADAMW)
            r->p[i] *= 1.0 - c->lr * c->weight_decay;
        else
            gi += c->weight_decay * r->p[i];
        r->m[i] += (1.0 - c->beta1) * (gi - r->m[i]);
        r->v[i] = c->beta2 * r->v[i] + (1.0 - c->beta2) * gi * gi;
        double denom = sqrt(r->v[i]) / sqrt(bc2) + c->eps;
        r->p[i] -= c->lr / bc1 * r->m[i] / denom;
    }
}

/* ---- the problems ---- */

/* LOSS_W: mse(w, c); LOSS_U: sum(u); LOSS_BOTH: their sum; LOSS_REG: mse(x w', y). */
enum { LOSS_W, LOSS_U, LOSS_BOTH, LOSS_REG };

typedef struct problem {
    ad_tensor *w, *c, *u, *x, *y;
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    int mode;
} problem;

static ad_tensor *from(ad_dtype dt, int n, const double *x)
{
    ad_tensor *t = ts_tensor(dt, 1, TS_SHAPE(n));
    for (int i = 0; i < n; i++)
        ts_set(t, i, x[i]);
    return t;
}

/* The set holds w, and u if asked; the tensors must be made already. */
static void problem_rig(problem *p, bool with_u)
{
    cr_assert_eq(ad_params_new(&p->ps), AD_OK);
    cr_assert_eq(ad_params_add(p->ps, p->w, NULL), AD_OK);
    if (with_u)
        cr_assert_eq(ad_params_add(p->ps, p->u, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(p->ps, &p->gs), AD_OK);
    cr_assert_eq(ad_tape_new(&p->t), AD_OK);
}

/* w (NW) in mse(w, c); u (NU), a parameter the loss ignores unless told. */
static void problem_open(problem *p, ad_dtype dt, bool with_u)
{
    *p = (problem){.w = from(dt, NW, w0), .c = from(dt, NW, c0), .u = from(dt, NU, u0)};
    problem_rig(p, with_u);
}

/* y = x w*' for a fixed w* (1 x RIN), x (RN x RIN) uniform in [-1, 1); w starts at 0. */
enum { RN = 64, RIN = 4 };
static const double w_star[RIN] = {1.5, -2.0, 0.5, 3.0};

static void regression_open(problem *p)
{
    uint64_t seed = 11;
    *p = (problem){.x = ts_tensor(AD_F32, 2, TS_SHAPE(RN, RIN)),
                   .y = ts_tensor(AD_F32, 2, TS_SHAPE(RN, 1)),
                   .w = ts_tensor(AD_F32, 2, TS_SHAPE(1, RIN)), .mode = LOSS_REG};
    ts_fill_uniform(p->x, &seed, -1.0, 1.0);
    for (int i = 0; i < RN; i++) {
        double s = 0.0;
        for (int j = 0; j < RIN; j++)
            s += ts_get(p->x, i * RIN + j) * w_star[j];
        ts_set(p->y, i, s);
    }
    problem_rig(p, false);
}

static void problem_close(problem *p)
{
    ad_tape_free(p->t);
    ad_grads_free(p->gs);
    ad_params_free(p->ps);
    ad_tensor *const own[] = {p->w, p->c, p->u, p->x, p->y};
    for (int i = 0; i < 5; i++)
        ad_tensor_free(own[i]);
}

static ad_var problem_loss(ad_tape *t, void *user)
{
    problem *p = user;
    if (p->mode == LOSS_REG)
        return ad_mse(t, ad_matmul(t, ad_use(t, p->x), ad_use(t, p->w), 0, 1),
                      ad_use(t, p->y));
    if (p->mode == LOSS_U)
        return ad_sum(t, ad_use(t, p->u));
    ad_var lw = ad_mse(t, ad_use(t, p->w), ad_use(t, p->c));
    return p->mode == LOSS_W ? lw : ad_add(t, lw, ad_sum(t, ad_use(t, p->u)));
}

static double problem_grad(problem *p)
{
    double loss = 0.0;
    cr_assert_eq(ad_gradient(p->t, p->ps, problem_loss, p, p->gs, &loss), AD_OK, "%s",
                 ad_last_error());
    return loss;
}

/* The sweep, then the step; returns the loss before the step. */
static double problem_step(problem *p, ad_optim *o)
{
    double loss = problem_grad(p);
    cr_assert_eq(ad_optim_step(o, p->gs), AD_OK, "%s", ad_last_error());
    return loss;
}

static void expect_u_untouched(const problem *p, uint64_t version, const char *what)
{
    for (int i = 0; i < NU; i++)
        cr_expect_eq(ts_get(p->u, i), u0[i], "%s: u[%d] moved", what, i);
    cr_expect_eq(p->u->version, version, "%s: u's version moved", what);
}

static ad_optim *optim_for(const problem *p, ad_optim_config c)
{
    ad_optim *o = NULL;
    cr_assert_eq(ad_optim_new(p->ps, &c, &o), AD_OK, "%s", ad_last_error());
    return o;
}

/* Adam's first step on sum(u) (g = 1): m_hat = v_hat = 1, so u moves by lr / (1 + eps). */
static void expect_u_after_first_adam_step(const problem *p, double lr, double eps)
{
    for (int i = 0; i < NU; i++)
        cr_expect(fabs(ts_get(p->u, i) - (u0[i] - lr / (1.0 + eps))) < 1e-14,
                  "u[%d] = %.17g, not its first bias-corrected step", i, ts_get(p->u, i));
}

/* Three steps of cfg against the reference; u (no gradient) stays as it was. */
static void check_against_reference(ad_dtype dt, const ad_optim_config *cfg,
                                    const ad_optim_config *ref_cfg, double tol)
{
    static const char *const names[] = {"descent", "momentum", "nesterov", "adam", "adamw"};
    problem p;
    problem_open(&p, dt, true);
    ad_optim *o = optim_for(&p, *cfg);
    ref r = {0};
    memcpy(r.p, w0, sizeof w0);
    uint64_t uv = p.u->version;
    for (int s = 1; s <= 3; s++) {
        uint64_t wv = p.w->version;
        problem_step(&p, o);
        double g[NW];
        ref_grad(&r, ref_cfg->clip_norm, g);
        (ref_cfg->kind >= AD_OPT_ADAM ? ref_adam : ref_sgd)(&r, g, ref_cfg);
        char msg[128];
        snprintf(msg, sizeof msg, "%s %s (decay %g, clip %g), step %d", names[cfg->kind],
                 ad_dtype_name(dt), ref_cfg->weight_decay, ref_cfg->clip_norm, s);
        ts_assert_near(p.w, r.p, tol, msg);
        cr_expect_gt(p.w->version, wv, "%s: version not bumped", msg);
        expect_u_untouched(&p, uv, msg);
    }
    ad_optim_free(o);
    problem_close(&p);
}

/* f64 to 1e-12; f32 (which keeps f32 state) to float precision. */
static void check_kinds(ad_dtype dt, const ad_optim_config *cfgs, int n)
{
    for (int k = 0; k < n; k++)
        check_against_reference(dt, &cfgs[k], &cfgs[k], dt == AD_F64 ? 1e-12 : 2e-6);
}

Test(optim, descent_momentum_and_nesterov_match_torch_sgd_reference_over_three_steps)
{
    const ad_optim_config cfgs[] = {
        {.kind = AD_OPT_DESCENT, .lr = 0.3},
        {.kind = AD_OPT_MOMENTUM, .lr = 0.2, .momentum = 0.7},
        {.kind = AD_OPT_NESTEROV, .lr = 0.2, .momentum = 0.8},
    };
    check_kinds(AD_F64, cfgs, 3);
}

Test(optim, adam_and_adamw_match_bias_corrected_torch_reference_over_three_steps)
{
    const ad_optim_config cfgs[] = {
        {.kind = AD_OPT_ADAM, .lr = 0.05, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6},
        {.kind = AD_OPT_ADAMW, .lr = 0.05, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6,
         .weight_decay = 0.2},
    };
    check_kinds(AD_F64, cfgs, 2);
}

/* Every kind with weight decay (coupled; AdamW's decoupled), unclipped and with a
** clip_norm (0.2) below the gradient norm (0.7), in f64 and in f32. */
Test(optim, weight_decay_and_clipping_match_reference_for_every_kind_and_dtype)
{
    for (int k = AD_OPT_DESCENT; k <= AD_OPT_ADAMW; k++)
        for (int v = 0; v < 4; v++) {
            ad_optim_config c = {.kind = (ad_optim_kind)k, .lr = 0.1, .momentum = 0.6,
                                 .beta1 = 0.85, .beta2 = 0.9, .eps = 1e-7,
                                 .weight_decay = 0.3, .clip_norm = v & 1 ? 0.2 : 0.0};
            check_kinds(v & 2 ? AD_F32 : AD_F64, &c, 1);
        }
}

Test(optim, defaults_train_as_the_documented_values)
{
    ad_optim_config mom = ad_optim_defaults(AD_OPT_MOMENTUM);
    ad_optim_config mom_ref = {.kind = AD_OPT_MOMENTUM, .lr = 0.01, .momentum = 0.9};
    check_against_reference(AD_F64, &mom, &mom_ref, 1e-12);
    ad_optim_config adam = ad_optim_defaults(AD_OPT_ADAM);
    ad_optim_config adam_ref = {.kind = AD_OPT_ADAM, .lr = 0.01, .beta1 = 0.9,
                                .beta2 = 0.999, .eps = 1e-8};
    check_against_reference(AD_F64, &adam, &adam_ref, 1e-12);
}

/* With w == c the gradient is exactly 0: Adam's coupled decay feeds g = wd p into the
** moments, so p moves by about lr toward 0 (m_hat / sqrt(v_hat) = sign(p)); AdamW only
** shrinks p by the factor 1 - lr wd and its moments stay 0. */
Test(optim, adamw_decay_only_shrinks_weights_while_adam_decay_drives_the_moments)
{
    const double lr = 0.01, wd = 0.5;
    for (int k = 0; k < 2; k++) {
        problem p;
        problem_open(&p, AD_F64, false);
        cr_assert_eq(ad_tensor_copy_from(p.c, p.w), AD_OK);
        ad_optim_config c = ad_optim_defaults(k ? AD_OPT_ADAMW : AD_OPT_ADAM);
        c.lr = lr;
        c.weight_decay = wd;
        ad_optim *o = optim_for(&p, c);
        problem_step(&p, o);
        for (int i = 0; i < NW; i++) {
            double want = k ? w0[i] * (1.0 - lr * wd) : w0[i] - lr * (w0[i] > 0 ? 1 : -1);
            cr_expect(fabs(ts_get(p.w, i) - want) < (k ? 1e-15 : 1e-8),
                      "%s: w[%d] = %.17g, want %.17g", k ? "adamw" : "adam", i,
                      ts_get(p.w, i), want);
        }
        ad_optim_free(o);
        problem_close(&p);
    }
}

/* ---- clipping and the global norm ---- */

static double hand_norm(void)
{
    double s = 0.0;
    for (int i = 0; i < NW; i++)
        s += pow(2.0 * (w0[i] - c0[i]) / NW, 2);
    return sqrt(s);
}

/* Descent with lr 1: the step is exactly the (clipped) gradient. */
static void one_clipped_step(double clip_norm, double want_factor)
{
    problem p;
    problem_open(&p, AD_F64, true);
    ad_optim *o = optim_for(&p, (ad_optim_config){.kind = AD_OPT_DESCENT, .lr = 1.0,
                                                  .clip_norm = clip_norm});
    problem_step(&p, o);
    double step_sq = 0.0, want_norm = fmin(clip_norm, hand_norm());
    for (int i = 0; i < NW; i++) {
        double want = w0[i] - want_factor * 2.0 * (w0[i] - c0[i]) / NW;
        cr_expect(fabs(ts_get(p.w, i) - want) < 1e-14, "clip %g: w[%d] = %.17g, want %.17g",
                  clip_norm, i, ts_get(p.w, i), want);
        step_sq += pow(ts_get(p.w, i) - w0[i], 2);
    }
    cr_expect(fabs(sqrt(step_sq) - want_norm) < 1e-6, "clip %g: step norm %.9g, want %.9g",
              clip_norm, sqrt(step_sq), want_norm);
    ad_optim_free(o);
    problem_close(&p);
}

Test(optim, clipping_scales_the_step_to_clip_norm_when_the_norm_exceeds_it)
{
    double n = hand_norm(); /* 0.7 */
    cr_assert_gt(n, 0.5);
    one_clipped_step(0.25, 0.25 / (n + 1e-6));
}

Test(optim, clipping_leaves_the_step_alone_when_the_norm_is_below_clip_norm)
{
    cr_assert_lt(hand_norm(), 2.0);
    one_clipped_step(2.0, 1.0);
}

Test(optim, global_norm_covers_every_present_gradient_and_nothing_else)
{
    problem p;
    problem_open(&p, AD_F64, true);
    cr_expect_eq(ad_grads_global_norm(p.gs), 0.0, "no sweep yet");
    cr_expect_eq(ad_grads_global_norm(NULL), 0.0);
    p.mode = LOSS_W;
    problem_grad(&p);
    double n = hand_norm();
    cr_expect(fabs(ad_grads_global_norm(p.gs) - n) < 1e-15, "w only: %.17g, want %.17g",
              ad_grads_global_norm(p.gs), n);
    p.mode = LOSS_BOTH; /* d sum(u) / du = 1 for each of the NU elements */
    problem_grad(&p);
    double both = sqrt(n * n + NU);
    cr_expect(fabs(ad_grads_global_norm(p.gs) - both) < 1e-15, "w and u: %.17g, want %.17g",
              ad_grads_global_norm(p.gs), both);
    problem_close(&p);
}

/* ---- absent gradients and growth ---- */

/* Three steps without a gradient for u must not advance u's Adam count: u's first
** real step is then bias-corrected as step 1, moving each element by lr / (1 + eps). */
Test(optim, parameter_without_gradient_keeps_its_values_version_and_adam_state)
{
    problem p;
    problem_open(&p, AD_F64, true);
    ad_optim_config c = ad_optim_defaults(AD_OPT_ADAM);
    c.lr = 0.1;
    c.beta1 = 0.5;
    ad_optim *o = optim_for(&p, c);
    uint64_t uv = p.u->version;
    for (int s = 0; s < 3; s++)
        problem_step(&p, o);
    expect_u_untouched(&p, uv, "after 3 steps on w");
    p.mode = LOSS_U;
    uint64_t wv = p.w->version;
    ad_tensor *w_before = ts_clone(p.w);
    problem_step(&p, o);
    expect_u_after_first_adam_step(&p, 0.1, 1e-8);
    cr_expect_eq(ts_max_abs_diff(p.w, w_before), 0.0, "w moved without a gradient");
    cr_expect_eq(p.w->version, wv);
    ad_tensor_free(w_before);
    ad_optim_free(o);
    problem_close(&p);
}

/* u joins the set after the optimiser was made: the step grows the state. Each failed
** allocation on the way returns AD_ERR_NOMEM, leaks nothing and touches no parameter. */
Test(optim, step_grows_state_for_added_parameters_and_fails_cleanly_out_of_memory)
{
    ts_alloc_install();
    problem p;
    problem_open(&p, AD_F64, false);
    problem_grad(&p); /* the rule registry fills on first use and is never freed */
    problem_close(&p);
    int64_t at_start = ts_alloc_outstanding();
    problem_open(&p, AD_F64, false);
    ad_optim_config c = ad_optim_defaults(AD_OPT_ADAM);
    c.lr = 0.1;
    ad_optim *o = optim_for(&p, c);
    problem_step(&p, o);
    cr_assert_eq(ad_params_add(p.ps, p.u, NULL), AD_OK);
    p.mode = LOSS_BOTH;
    problem_grad(&p);
    ad_tensor *w_before = ts_clone(p.w);
    uint64_t wv = p.w->version, uv = p.u->version, n = 0;
    for (ad_status rc = AD_ERR_NOMEM; rc != AD_OK; n++) {
        int64_t before = ts_alloc_outstanding();
        ts_alloc_fail_at(n + 1);
        rc = ad_optim_step(o, p.gs);
        ts_alloc_fail_at(0);
        cr_assert(rc == AD_OK || rc == AD_ERR_NOMEM, "allocation %llu: %d",
                  (unsigned long long)n + 1, rc);
        if (rc == AD_ERR_NOMEM) {
            cr_assert_eq(ts_alloc_outstanding(), before, "allocation %llu leaked",
                         (unsigned long long)n + 1);
            cr_assert_eq(ts_max_abs_diff(p.w, w_before), 0.0);
            cr_assert_eq(p.w->version, wv);
            expect_u_untouched(&p, uv, "failed step");
        }
    }
    cr_expect_gt(n, 1, "the growing step never allocated");
    expect_u_after_first_adam_step(&p, 0.1, 1e-8);
    cr_expect_gt(ts_max_abs_diff(p.w, w_before), 0.0, "w did not move");
    ad_tensor_free(w_before);
    ad_optim_free(o);
    problem_close(&p);
    cr_expect_eq(ts_alloc_outstanding(), at_start, "the grown state leaked");
    ts_alloc_uninstall();
}

/* ---- training ---- */

Test(optim, momentum_trains_a_linear_regression_to_a_small_loss)
{
    problem r;
    regression_open(&r);
    ad_optim *o = optim_for(&r, (ad_optim_config){.kind = AD_OPT_MOMENTUM, .lr = 0.05,
                                                  .momentum = 0.9});
    double first = problem_step(&r, o), last = first;
    for (int s = 1; s < 200; s++)
        last = problem_step(&r, o);
    cr_expect_gt(first, 1.0, "initial loss %g: the problem is too easy", first);
    cr_expect_lt(last, 1e-4 * first, "loss %g -> %g after 200 steps", first, last);
    for (int j = 0; j < RIN; j++)
        cr_expect(fabs(ts_get(r.w, j) - w_star[j]) < 1e-2, "w[%d] = %g, want %g", j,
                  ts_get(r.w, j), w_star[j]);
    ad_optim_free(o);
    problem_close(&r);
}

/* Every kind, with clipping and decay on so every path runs: after warm-up, 50 more
** steps (sweep and update) make no heap allocation at all. */
Test(optim, steady_state_steps_allocate_nothing)
{
    ts_alloc_install();
    for (int k = AD_OPT_DESCENT; k <= AD_OPT_ADAMW; k++) {
        problem r;
        regression_open(&r);
        ad_optim_config c = ad_optim_defaults((ad_optim_kind)k);
        c.weight_decay = 1e-3;
        c.clip_norm = 1;
        ad_optim *o = optim_for(&r, c);
        for (int s = 0; s < 3; s++)
            problem_step(&r, o);
        uint64_t before = ts_alloc_count();
        for (int s = 0; s < 50; s++)
            problem_step(&r, o);
        cr_expect_eq(ts_alloc_count(), before, "kind %d: %llu allocations in 50 steps", k,
                     (unsigned long long)(ts_alloc_count() - before));
        ad_optim_free(o);
        problem_close(&r);
    }
    ts_alloc_uninstall();
}

/* ---- errors ---- */

/* Struct, state array, one buffer per parameter (none for descent): each can fail. */
Test(optim, new_out_of_memory_at_every_allocation_fails_cleanly)
{
    ts_alloc_install();
    problem p;
    problem_open(&p, AD_F64, true);
    for (int k = AD_OPT_DESCENT; k <= AD_OPT_ADAMW; k++) {
        ad_optim_config c = ad_optim_defaults((ad_optim_kind)k);
        ad_optim *const sentinel = (ad_optim *)&c, *o = sentinel;
        int64_t before = ts_alloc_outstanding();
        uint64_t n = 0;
        for (ad_status rc = AD_ERR_NOMEM; rc != AD_OK; n++) {
            ts_alloc_fail_at(n + 1);
            rc = ad_optim_new(p.ps, &c, &o);
            ts_alloc_fail_at(0);
            if (rc == AD_OK)
                break;
            cr_assert_eq(rc, AD_ERR_NOMEM, "kind %d, allocation %llu: %d", k,
                         (unsigned long long)n + 1, rc);
            cr_assert(strstr(ad_last_error(), "ad_optim_new"), "%s", ad_last_error());
            cr_assert_eq(o, sentinel, "kind %d: *out written on failure", k);
            cr_assert_eq(ts_alloc_outstanding(), before, "kind %d, allocation %llu leaked",
                         k, (unsigned long long)n + 1);
        }
        cr_expect_eq(n, k == AD_OPT_DESCENT ? 2u : 4u, "kind %d: %llu failures", k,
                     (unsigned long long)n);
        ad_optim_free(o);
        cr_expect_eq(ts_alloc_outstanding(), before, "kind %d: free leaked", k);
    }
    problem_close(&p);
    ts_alloc_uninstall();
}

/* Each bad field: AD_ERR_INVALID naming the field, *out untouched, nothing leaked. */
Test(optim, every_out_of_range_config_field_is_invalid_and_named)
{
    const struct { ad_optim_config c; const char *field; } cases[] = {
        {{.lr = -0.1}, "lr"}, {{.lr = NAN}, "lr"}, {{.lr = INFINITY}, "lr"},
        {{.kind = AD_OPT_MOMENTUM, .momentum = -0.5}, "momentum"},
        {{.kind = AD_OPT_MOMENTUM, .momentum = 1.0}, "momentum"},
        {{.kind = AD_OPT_ADAM, .beta1 = 1.0}, "beta1"}, {{.beta1 = -0.1}, "beta1"},
        {{.kind = AD_OPT_ADAM, .beta2 = 1.5}, "beta2"}, {{.beta2 = NAN}, "beta2"},
        {{.kind = AD_OPT_ADAM, .eps = -1e-8}, "eps"},
        {{.kind = AD_OPT_ADAMW, .eps = 1e-8, .weight_decay = -0.01}, "weight_decay"},
        {{.clip_norm = -1.0}, "clip_norm"},
        {{.kind = AD_OPT_RMSPROP, .alpha = 1.0}, "alpha"},
        {{.kind = AD_OPT_RMSPROP, .alpha = -0.01}, "alpha"}, {{.alpha = NAN}, "alpha"},
        {{.kind = (ad_optim_kind)99}, "kind"}, {{.kind = (ad_optim_kind)-1}, "kind"},
    };
    ts_alloc_install();
    problem p;
    problem_open(&p, AD_F64, true);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ad_optim *const sentinel = (ad_optim *)&p, *o = sentinel;
        int64_t before = ts_alloc_outstanding();
        cr_expect_eq(ad_optim_new(p.ps, &cases[i].c, &o), AD_ERR_INVALID, "case %zu (%s)", i,
                     cases[i].field);
        char want[32];
        snprintf(want, sizeof want, ": %s ", cases[i].field);
        cr_expect(strstr(ad_last_error(), want), "case %zu: '%s'", i, ad_last_error());
        cr_expect_eq(o, sentinel, "case %zu: *out written", i);
        cr_expect_eq(ts_alloc_outstanding(), before, "case %zu leaked", i);
    }
    problem_close(&p);
    ts_alloc_uninstall();
}

Test(optim, null_arguments_are_refused)
{
    problem p;
    problem_open(&p, AD_F64, true);
    ad_optim_config c = {.kind = AD_OPT_DESCENT};
    ad_optim *o = NULL;
    cr_expect_eq(ad_optim_new(NULL, &c, &o), AD_ERR_NULL);
    cr_expect_eq(ad_optim_new(p.ps, NULL, &o), AD_ERR_NULL);
    cr_expect(strstr(ad_last_error(), "config") != NULL, "%s", ad_last_error());
    cr_expect_eq(ad_optim_new(p.ps, &c, NULL), AD_ERR_NULL);
    cr_expect_null(o);
    cr_assert_eq(ad_optim_new(p.ps, &c, &o), AD_OK);
    cr_expect_eq(ad_optim_step(NULL, p.gs), AD_ERR_NULL);
    cr_expect_eq(ad_optim_step(o, NULL), AD_ERR_NULL);
    cr_expect_eq(ad_optim_set_lr(NULL, 0.1), AD_ERR_NULL);
    ad_optim_free(o);
    ad_optim_free(NULL);
    problem_close(&p);
}

Test(optim, step_with_gradients_of_another_set_is_invalid_and_touches_nothing)
{
    problem a, b;
    problem_open(&a, AD_F64, true);
    problem_open(&b, AD_F64, true);
    problem_grad(&b);
    ad_optim *o = optim_for(&a, ad_optim_defaults(AD_OPT_MOMENTUM));
    uint64_t wv = a.w->version;
    cr_expect_eq(ad_optim_step(o, b.gs), AD_ERR_INVALID);
    cr_expect(strstr(ad_last_error(), "another parameter set"), "%s", ad_last_error());
    for (int i = 0; i < NW; i++)
        cr_expect_eq(ts_get(a.w, i), w0[i]);
    cr_expect_eq(a.w->version, wv);
    ad_optim_free(o);
    problem_close(&a);
    problem_close(&b);
}

Test(optim, set_lr_changes_later_steps_and_refuses_negative_or_nan)
{
    problem p;
    problem_open(&p, AD_F64, true);
    ad_optim *o = optim_for(&p, (ad_optim_config){.kind = AD_OPT_DESCENT, .lr = 0.1});
    cr_expect_eq(ad_optim_set_lr(o, -0.5), AD_ERR_INVALID);
    cr_expect(strstr(ad_last_error(), "lr") != NULL, "%s", ad_last_error());
    cr_expect_eq(ad_optim_set_lr(o, NAN), AD_ERR_INVALID);
    cr_assert_eq(ad_optim_set_lr(o, 0.0), AD_OK); /* 0 is a valid rate: no motion */
    problem_step(&p, o);
    for (int i = 0; i < NW; i++)
        cr_expect_eq(ts_get(p.w, i), w0[i], "lr 0 moved w[%d]", i);
    cr_assert_eq(ad_optim_set_lr(o, 0.5), AD_OK);
    problem_step(&p, o);
    for (int i = 0; i < NW; i++) {
        double want = w0[i] - 0.5 * 2.0 * (w0[i] - c0[i]) / NW;
        cr_expect(fabs(ts_get(p.w, i) - want) < 1e-15, "w[%d] = %.17g, want %.17g", i,
                  ts_get(p.w, i), want);
    }
    ad_optim_free(o);
    problem_close(&p);
}
