/*
** test_feedback_models.c: feedback rules inside small networks: tied feedback equals
** backprop, the reference sweep is backprop, Kolen-Pollack aligns B with W.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

enum { N = 8, IN = 6, HID = 5, OUT = 3 };

typedef struct net {
    ad_tensor *x, *y, *w1, *b1, *w2, *fb1, *fb2; /* fb: FA/KP feedback (W's shape), DFA B */
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    ad_dfa dfa;
    ad_var pre1; /* hidden pre-activation, for cotangent checks */
} net;

static void net_open(net *m, uint64_t seed)
{
    uint64_t rng = seed;
    m->x = ts_tensor(AD_F64, 2, TS_SHAPE(N, IN));
    m->y = ts_tensor(AD_F64, 2, TS_SHAPE(N, OUT));
    m->w1 = ts_tensor(AD_F64, 2, TS_SHAPE(HID, IN));
    m->b1 = ts_tensor(AD_F64, 1, TS_SHAPE(HID));
    m->w2 = ts_tensor(AD_F64, 2, TS_SHAPE(OUT, HID));
    m->fb1 = ts_tensor(AD_F64, 2, TS_SHAPE(HID, IN));
    m->fb2 = ts_tensor(AD_F64, 2, TS_SHAPE(OUT, HID));
    ad_tensor *all[] = {m->x, m->y, m->w1, m->b1, m->w2, m->fb1, m->fb2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ts_fill_uniform(all[i], &rng, -1, 1);
    cr_assert_eq(ad_params_new(&m->ps), AD_OK);
    cr_assert_eq(ad_params_add(m->ps, m->w1, NULL), AD_OK);
    cr_assert_eq(ad_params_add(m->ps, m->b1, NULL), AD_OK);
    cr_assert_eq(ad_params_add(m->ps, m->w2, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(m->ps, &m->gs), AD_OK);
    cr_assert_eq(ad_tape_new(&m->t), AD_OK);
    m->dfa = (ad_dfa){0};
}

static void net_close(net *m)
{
    ad_tensor *all[] = {m->x, m->y, m->w1, m->b1, m->w2, m->fb1, m->fb2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ad_tensor_free(all[i]);
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
    ad_tape_free(m->t);
}

enum rule { BP, FA, DFA, KP };

/* mse(W2 tanh(W1 x + b1), y) with the given rule on both layers. */
static ad_var net_loss(net *m, enum rule r)
{
    ad_tape *t = m->t;
    ad_var x = ad_use(t, m->x), w1 = ad_use(t, m->w1), w2 = ad_use(t, m->w2);
    ad_var a1 = r == FA   ? ad_dense_fa(t, w1, x, ad_use(t, m->fb1))
                : r == KP ? ad_dense_kp(t, w1, x, ad_use(t, m->fb1))
                          : ad_matmul(t, x, w1, 0, 1);
    m->pre1 = ad_bias_add(t, a1, ad_use(t, m->b1));
    ad_var h = ad_tanh(t, m->pre1);
    if (r == DFA)
        h = ad_dfa_hidden(t, &m->dfa, h, ad_use(t, m->fb2));
    ad_var a2 = r == FA   ? ad_dense_fa(t, w2, h, ad_use(t, m->fb2))
                : r == KP ? ad_dense_kp(t, w2, h, ad_use(t, m->fb2))
                          : ad_matmul(t, h, w2, 0, 1);
    if (r == DFA)
        a2 = ad_dfa_output(t, &m->dfa, a2);
    return ad_mse(t, a2, ad_use(t, m->y));
}

/* Gradients of every parameter under rule r, copied out (n doubles each). */
static void grads_of(net *m, enum rule r, double out[3][64])
{
    ad_tape_reset(m->t);
    ad_var loss = net_loss(m, r);
    cr_assert_eq(ad_backward(m->t, loss, m->ps, m->gs), AD_OK, "%s", ad_last_error());
    for (int p = 0; p < 3; p++) {
        const ad_tensor *g = ad_grads_at(m->gs, p);
        cr_assert_not_null(g, "param %d has no gradient", p);
        for (int64_t k = 0; k < g->size; k++)
            out[p][k] = ts_get(g, k);
    }
}

static void expect_same(double a[3][64], double b[3][64], double tol, const char *what)
{
    for (int p = 0; p < 3; p++)
        for (int k = 0; k < 64; k++)
            cr_expect(fabs(a[p][k] - b[p][k]) <= tol, "%s: param %d element %d: %.17g vs "
                      "%.17g", what, p, k, a[p][k], b[p][k]);
}

Test(feedback_models, fa_with_b_tied_to_w_reproduces_backprop_exactly)
{
    net m;
    net_open(&m, 1);
    cr_assert_eq(ad_tensor_copy_from(m.fb1, m.w1), AD_OK);
    cr_assert_eq(ad_tensor_copy_from(m.fb2, m.w2), AD_OK);
    double bp[3][64] = {{0}}, fa[3][64] = {{0}};
    grads_of(&m, BP, bp);
    grads_of(&m, FA, fa);
    expect_same(bp, fa, 0.0, "FA with B = W");
    net_close(&m);
}

Test(feedback_models, dfa_with_b1_tied_to_w2_transposed_reproduces_backprop)
{
    net m;
    net_open(&m, 2);
    ad_tensor_free(m.fb2);
    m.fb2 = ts_tensor(AD_F64, 2, TS_SHAPE(HID, OUT)); /* hidden x outputs */
    for (int64_t j = 0; j < HID; j++)
        for (int64_t k = 0; k < OUT; k++)
            ts_set(m.fb2, j * OUT + k, ts_get(m.w2, k * HID + j));
    double bp[3][64] = {{0}}, dfa[3][64] = {{0}};
    grads_of(&m, BP, bp);
    grads_of(&m, DFA, dfa);
    expect_same(bp, dfa, 1e-15, "DFA with B1 = W2'");
    net_close(&m);
}

Test(feedback_models, reference_sweep_on_an_fa_tape_is_backprop_and_counts_nothing)
{
    net m;
    net_open(&m, 3);
    double bp[3][64] = {{0}}, ref[3][64] = {{0}};
    grads_of(&m, BP, bp);
    ad_tape_reset(m.t);
    ad_var loss = net_loss(&m, FA);
    uint64_t before = ad_tape_pullback_count(m.t, ad_op_dense_fa);
    ad_sweep_options ref_opts = {.use_reference = 1};
    cr_assert_eq(ad_backward_ex(m.t, loss, m.ps, m.gs, &ref_opts), AD_OK, "%s",
                 ad_last_error());
    for (int p = 0; p < 3; p++)
        for (int64_t k = 0; k < ad_grads_at(m.gs, p)->size; k++)
            ref[p][k] = ts_get(ad_grads_at(m.gs, p), k);
    expect_same(bp, ref, 1e-15, "reference sweep");
    cr_expect_eq(ad_tape_pullback_count(m.t, ad_op_dense_fa), before);
    /* The FA sweep on the same recording differs from backprop (B is random). */
    cr_assert_eq(ad_backward(m.t, loss, m.ps, m.gs), AD_OK);
    cr_expect_gt(fabs(ts_get(ad_grads_at(m.gs, 0), 0) - bp[0][0]), 1e-6);
    net_close(&m);
}

static ad_var fa_loss_fn(ad_tape *t, void *u)
{
    net *m = u;
    cr_assert_eq(t, m->t);
    return net_loss(m, FA);
}

/* ad_gradient keeps the loss handle on the tape, so the alignment sweep needs no
** hand-made recording: ad_backward_ex on ad_tape_loss gives backprop's gradients. */
Test(feedback_models, reference_sweep_after_ad_gradient_starts_from_ad_tape_loss)
{
    net m;
    net_open(&m, 6);
    cr_expect(!ad_var_ok(ad_tape_loss(m.t)), "a fresh tape has a loss");
    cr_expect(!ad_var_ok(ad_tape_loss(NULL)));
    double bp[3][64] = {{0}}, ref[3][64] = {{0}}, fa[3][64] = {{0}};
    grads_of(&m, BP, bp);
    cr_expect(!ad_var_ok(ad_tape_loss(m.t)), "ad_backward alone set the loss");
    double loss_value = NAN;
    cr_assert_eq(ad_gradient(m.t, m.ps, fa_loss_fn, &m, m.gs, &loss_value), AD_OK, "%s",
                 ad_last_error());
    for (int p = 0; p < 3; p++)
        for (int64_t k = 0; k < ad_grads_at(m.gs, p)->size; k++)
            fa[p][k] = ts_get(ad_grads_at(m.gs, p), k);
    ad_var loss = ad_tape_loss(m.t);
    cr_assert(ad_var_ok(loss));
    const ad_tensor *lv = ad_value(m.t, loss);
    cr_assert_not_null(lv, "the handle is not of this recording");
    cr_expect(lv->ndim == 0 && ad_tensor_get(lv, 0) == loss_value, "not the loss");
    ad_sweep_options ref_opts = {.use_reference = 1};
    cr_assert_eq(ad_backward_ex(m.t, loss, m.ps, m.gs, &ref_opts), AD_OK, "%s",
                 ad_last_error());
    for (int p = 0; p < 3; p++)
        for (int64_t k = 0; k < ad_grads_at(m.gs, p)->size; k++)
            ref[p][k] = ts_get(ad_grads_at(m.gs, p), k);
    expect_same(bp, ref, 1e-15, "reference sweep from ad_tape_loss");
    cr_expect_gt(fabs(fa[0][0] - bp[0][0]), 1e-6, "the FA sweep was backprop");
    ad_tape_reset(m.t);
    cr_expect(!ad_var_ok(ad_tape_loss(m.t)), "a reset kept the loss");
    net_close(&m);
}

Test(feedback_models, hidden_gradient_angle_fa_vs_backprop_from_two_sweeps_of_one_tape)
{
    net m;
    net_open(&m, 4);
    ad_var loss = net_loss(&m, FA);
    ad_sweep_options ref_opts = {.use_reference = 1};
    cr_assert_eq(ad_backward(m.t, loss, m.ps, m.gs), AD_OK);
    const ad_tensor *fa = ad_cotangent(m.t, m.pre1);
    cr_assert_eq(ad_backward_ex(m.t, loss, m.ps, m.gs, &ref_opts), AD_OK);
    const ad_tensor *bp = ad_cotangent(m.t, m.pre1);
    cr_assert(fa && bp && fa != bp, "each sweep keeps its own cotangent buffers");
    double angle = ad_angle_degrees(fa, bp);
    cr_expect(angle > 1.0 && angle < 179.0, "angle %g", angle);
    cr_assert_eq(ad_tensor_copy_from(m.fb2, m.w2), AD_OK); /* tie the top layer */
    ad_tape_reset(m.t);
    loss = net_loss(&m, FA);
    cr_assert_eq(ad_backward(m.t, loss, m.ps, m.gs), AD_OK);
    fa = ad_cotangent(m.t, m.pre1);
    cr_assert_eq(ad_backward_ex(m.t, loss, m.ps, m.gs, &ref_opts), AD_OK);
    cr_expect_float_eq(ad_angle_degrees(fa, ad_cotangent(m.t, m.pre1)), 0.0, 1e-4);
    net_close(&m);
}

Test(feedback_models, kolen_pollack_with_weight_decay_drives_b_toward_w)
{
    net m;
    net_open(&m, 5);
    cr_assert_eq(ad_params_add(m.ps, m.fb1, NULL), AD_OK);
    cr_assert_eq(ad_params_add(m.ps, m.fb2, NULL), AD_OK);
    ad_optim *opt;
    ad_optim_config cfg = {.kind = AD_OPT_DESCENT, .lr = 0.1, .weight_decay = 0.1};
    cr_assert_eq(ad_optim_new(m.ps, &cfg, &opt), AD_OK, "%s", ad_last_error());
    double start = ad_angle_degrees(m.fb2, m.w2);
    for (int step = 0; step < 500; step++) {
        ad_tape_reset(m.t);
        ad_var loss = net_loss(&m, KP);
        cr_assert_eq(ad_backward(m.t, loss, m.ps, m.gs), AD_OK, "%s", ad_last_error());
        cr_assert_not_null(ad_grads_get(m.gs, m.fb2), "KP gave B no update");
        cr_assert_eq(ad_optim_step(opt, m.gs), AD_OK);
    }
    double end = ad_angle_degrees(m.fb2, m.w2);
    cr_expect_gt(start, 45.0, "start %g", start);
    cr_expect_lt(end, 5.0, "angle between B and W: %g -> %g", start, end);
    ad_optim_free(opt);
    net_close(&m);
}
