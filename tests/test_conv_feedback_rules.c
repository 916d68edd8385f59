/*
** test_conv_feedback_rules.c: conv2d with uSF, scaled uSF, SF (brSF/frSF) and Kolen-Pollack, each
** with and without bias. Every rule passes the default float64 check; through the
** tape, in f32 and f64, dX equals a naive transposed convolution of dY with the
** feedback computed here (sign(W) with sign(0) = 0, |M| .* sign(W), B, and for scaled
** uSF sign(W) sqrt(2 / (fan_in + fan_out))), dW and db are
** bitwise ad_conv2d(_bias)'s, KP's dB is bitwise its dW, and the reference sweep gives
** backprop's dX (and 0 for KP's B); memory-saving sweeps in anomaly mode, every input
** an intermediate, give the same bits (so unread is truthful); uSF's dX is bitwise conv FA's with B = sign(W); a
** magnitudes tensor or B of another shape is a named error.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad_feedback.h"
#include "support.h"

typedef struct conv_case {
    int64_t n, c, h, w, co, kh, kw;
    ad_conv2d_attrs at;
} conv_case;

static const conv_case cases[] = {
    {2, 3, 5, 5, 4, 3, 3, {1, 1, 0, 0, 1, 1, 1}},
    {2, 2, 7, 6, 3, 3, 2, {2, 3, 1, 0, 1, 1, 1}}, /* stride, padding */
    {1, 1, 7, 7, 2, 2, 3, {1, 1, 2, 1, 2, 2, 1}}, /* dilation, one channel, batch 1 */
    {2, 4, 5, 4, 6, 3, 1, {1, 2, 1, 1, 1, 1, 2}}, /* two groups */
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

enum rule { USF, SF, KP, USF_SCALED, FA, BACKPROP };
static const char *const rule_names[] = {"uSF", "SF", "KP", "scaled uSF", "FA", "backprop"};

static int64_t extent(int64_t in, int64_t k, int pad, int dil, int stride)
{
    return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

/* x, w (with a few exact zeros, for sign(0)), b, M (magnitudes drawn by
** ad_sf_draw_magnitudes, every third negated), B and G (dL/dY). */
typedef struct io { ad_tensor *x, *w, *b, *m, *fb, *g; int64_t ho, wo; } io;

static io make_io(ad_dtype dt, const conv_case *c, uint64_t *rng)
{
    io r;
    const int64_t *ws = TS_SHAPE(c->co, c->c / c->at.groups, c->kh, c->kw);
    r.ho = extent(c->h, c->kh, c->at.pad_h, c->at.dilation_h, c->at.stride_h);
    r.wo = extent(c->w, c->kw, c->at.pad_w, c->at.dilation_w, c->at.stride_w);
    r.x = ts_tensor(dt, 4, TS_SHAPE(c->n, c->c, c->h, c->w));
    r.w = ts_tensor(dt, 4, ws);
    r.m = ts_tensor(dt, 4, ws);
    r.fb = ts_tensor(dt, 4, ws);
    r.b = ts_tensor(dt, 1, TS_SHAPE(c->co));
    r.g = ts_tensor(dt, 4, TS_SHAPE(c->n, c->co, r.ho, r.wo));
    ad_tensor *all[] = {r.x, r.w, r.m, r.fb, r.b, r.g};
    for (int i = 0; i < 6; i++)
        ts_fill_uniform(all[i], rng, -1, 1);
    for (int64_t i = 0; i < r.w->size; i += 5)
        ts_set(r.w, i, 0.0);
    ad_rng d;
    ad_rng_seed(&d, ts_next(rng));
    cr_assert_eq(ad_sf_draw_magnitudes(r.m, &d), AD_OK);
    for (int64_t i = 1; i < r.m->size; i += 3) /* the rules take |M| */
        ts_set(r.m, i, -ts_get(r.m, i));
    return r;
}

static void free_io(io *r)
{
    ad_tensor *all[] = {r->x, r->w, r->m, r->fb, r->b, r->g};
    for (int i = 0; i < 6; i++)
        ad_tensor_free(all[i]);
}

/* The feedback each rule's dX should go through, computed here: sign(W) (sign(0) =
** 0), |M| .* sign(W), or B; backprop's is W. */
static ad_tensor *feedback_of(enum rule r, const io *s)
{
    ad_tensor *f = ts_clone(s->w);
    /* scaled uSF: sqrt(2 / (fan_in + fan_out)), both fans times kh * kw (PyTorch's) */
    double field = (double)(s->w->shape[2] * s->w->shape[3]);
    double scale = sqrt(2.0 / ((double)s->w->shape[1] * field + (double)s->w->shape[0] * field));
    for (int64_t i = 0; i < f->size; i++) {
        double w = ts_get(s->w, i), sg = w > 0 ? 1.0 : w < 0 ? -1.0 : 0.0;
        double v = r == USF ? sg : r == USF_SCALED ? sg * scale : r == SF ? fabs(ts_get(s->m, i)) * sg
                 : r == KP || r == FA ? ts_get(s->fb, i) : w;
        ts_set(f, i, v);
    }
    return f;
}

/* ---- the default float64 check ---- */

static void check_rule(ad_primal_fn fn, const char *name, const ad_tensor *const in[],
                       int n, const conv_case *c, ad_check_report *rep)
{
    ad_check_options o = ad_check_defaults();
    o.attrs = &c->at, o.attrs_size = sizeof c->at;
    cr_assert_eq(ad_rule_check_as(fn, name, in, n, &o, rep), AD_OK, "%s: %s", name,
                 ad_last_error());
    cr_expect_eq(rep->slot[0].method, AD_CHECK_STRUCTURAL, "%s: dX is feedback", name);
    cr_expect_eq(rep->slot[1].method, AD_CHECK_FINITE_DIFFERENCES, "%s: dW", name);
}

Test(conv_feedback_rules, every_rule_passes_the_default_float64_check)
{
    uint64_t rng = 31;
    for (int k = 0; k < N_CASES; k++) {
        const conv_case *c = &cases[k];
        io s = make_io(AD_F64, c, &rng);
        ad_check_report rep = {0};
        check_rule(ad_op_conv2d_usf, "ad_op_conv2d_usf",
                   (const ad_tensor *const[]){s.x, s.w}, 2, c, &rep);
        cr_expect_eq(rep.slots_checked, 2);
        check_rule(ad_op_conv2d_bias_usf, "ad_op_conv2d_bias_usf",
                   (const ad_tensor *const[]){s.x, s.w, s.b}, 3, c, &rep);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_FINITE_DIFFERENCES, "uSF db");
        check_rule(ad_op_conv2d_sf, "ad_op_conv2d_sf",
                   (const ad_tensor *const[]){s.x, s.w, s.m}, 3, c, &rep);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_SKIPPED_NONDIFF, "SF's M");
        check_rule(ad_op_conv2d_bias_sf, "ad_op_conv2d_bias_sf",
                   (const ad_tensor *const[]){s.x, s.w, s.b, s.m}, 4, c, &rep);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_FINITE_DIFFERENCES, "SF db");
        cr_expect_eq(rep.slot[3].method, AD_CHECK_SKIPPED_NONDIFF, "SF's M");
        check_rule(ad_op_conv2d_usf_scaled, "ad_op_conv2d_usf_scaled",
                   (const ad_tensor *const[]){s.x, s.w}, 2, c, &rep);
        cr_expect_eq(rep.slots_checked, 2);
        check_rule(ad_op_conv2d_bias_usf_scaled, "ad_op_conv2d_bias_usf_scaled",
                   (const ad_tensor *const[]){s.x, s.w, s.b}, 3, c, &rep);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_FINITE_DIFFERENCES, "scaled uSF db");
        check_rule(ad_op_conv2d_kp, "ad_op_conv2d_kp",
                   (const ad_tensor *const[]){s.x, s.w, s.fb}, 3, c, &rep);
        cr_expect_eq(rep.slots_checked, 3);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_STRUCTURAL, "KP's B");
        cr_expect_eq(rep.slot[2].angle, AD_CHECK_ANGLE_ZERO_REFERENCE, "B's gradient is 0");
        check_rule(ad_op_conv2d_bias_kp, "ad_op_conv2d_bias_kp",
                   (const ad_tensor *const[]){s.x, s.w, s.b, s.fb}, 4, c, &rep);
        cr_expect_eq(rep.slot[2].method, AD_CHECK_FINITE_DIFFERENCES, "KP db");
        cr_expect_eq(rep.slot[3].method, AD_CHECK_STRUCTURAL, "KP's B");
        free_io(&s);
    }
}

/* ---- sweeps through the tape ---- */

typedef struct grads { ad_tensor *dx, *dw, *db, *dfb; } grads;

/* sum(G .* layer(x, w (, b), extra)) for rule r, params x, w, b (with bias) and, for
** KP, B; extra is M for SF, B for KP and FA. reference 1 runs the references, as a
** second sweep of the tape into the same gradient set. saving 1: a memory-saving sweep
** in anomaly mode with every input of the layer an intermediate (scaled by 1, exact),
** so an input the rule declares unread but reads is NaN by then. */
static grads sweep_ex(enum rule r, int bias, const conv_case *c, const io *s,
                      const ad_tensor *extra, int reference, int saving)
{
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    ad_tensor *p[] = {s->x, s->w, s->b};
    for (int i = 0; i < 2 + bias; i++)
        cr_assert_eq(ad_params_add(ps, p[i], NULL), AD_OK);
    if (r == KP)
        cr_assert_eq(ad_params_add(ps, (ad_tensor *)extra, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var x = ad_use(t, s->x), w = ad_use(t, s->w), b = ad_use(t, s->b);
    ad_var e = extra ? ad_use(t, extra) : x;
    if (saving) {
        ad_tape_set_memory_saving(t, 1);
        ad_tape_set_anomaly_mode(t, 1);
        x = ad_scale(t, x, 1.0), w = ad_scale(t, w, 1.0), b = ad_scale(t, b, 1.0);
        e = ad_scale(t, e, 1.0);
    }
    const ad_conv2d_attrs *at = &c->at;
    ad_var y;
    switch (r) {
    case USF: y = bias ? ad_conv2d_bias_usf(t, x, w, b, at) : ad_conv2d_usf(t, x, w, at); break;
    case SF: y = bias ? ad_conv2d_bias_sf(t, x, w, b, e, at) : ad_conv2d_sf(t, x, w, e, at); break;
    case KP: y = bias ? ad_conv2d_bias_kp(t, x, w, b, e, at) : ad_conv2d_kp(t, x, w, e, at); break;
    case USF_SCALED:
        y = bias ? ad_conv2d_bias_usf_scaled(t, x, w, b, at) : ad_conv2d_usf_scaled(t, x, w, at);
        break;
    case FA: y = bias ? ad_conv2d_bias_fa(t, x, w, b, e, at) : ad_conv2d_fa(t, x, w, e, at); break;
    default: y = bias ? ad_conv2d_bias(t, x, w, b, at) : ad_conv2d(t, x, w, at); break;
    }
    cr_assert(ad_var_ok(y), "%s: %s", rule_names[r], ad_tape_error(t));
    ad_var loss = ad_sum(t, ad_mul(t, y, ad_use(t, s->g)));
    ad_sweep_options so = {0};
    for (int pass = 0; pass <= reference; pass++) { /* an ordinary sweep first leaves */
        so.use_reference = pass;                   /* gs holding FA's gradients */
        cr_assert_eq(ad_backward_ex(t, loss, ps, gs, &so), AD_OK, "%s: %s", rule_names[r],
                     ad_last_error());
    }
    grads g = {ts_clone(ad_grads_get(gs, s->x)), ts_clone(ad_grads_get(gs, s->w)),
               bias ? ts_clone(ad_grads_get(gs, s->b)) : NULL,
               r == KP ? ts_clone(ad_grads_get(gs, extra)) : NULL};
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    return g;
}

static grads sweep(enum rule r, int bias, const conv_case *c, const io *s,
                   const ad_tensor *extra, int reference)
{
    return sweep_ex(r, bias, c, s, extra, reference, 0);
}

static void free_grads(grads *g)
{
    ad_tensor_free(g->dx), ad_tensor_free(g->dw), ad_tensor_free(g->db);
    ad_tensor_free(g->dfb);
}

static int same_bits(const ad_tensor *a, const ad_tensor *b)
{
    return a && b && a->size == b->size && a->dtype == b->dtype &&
           !memcmp(a->data, b->data, (size_t)a->size * ad_dtype_size(a->dtype));
}

/* dX of sum(G .* conv(x, w)) through kernel kern, by one loop over every
** (n, o, p, q, c, i, j) as the definition reads (independent of conv.c). */
static double *naive_dx(const conv_case *k, const io *s, const ad_tensor *kern)
{
    double *dx = calloc((size_t)s->x->size, sizeof *dx);
    cr_assert(dx);
    int64_t cg = k->c / k->at.groups, cog = k->co / k->at.groups;
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t o = 0; o < k->co; o++)
            for (int64_t p = 0; p < s->ho; p++)
                for (int64_t q = 0; q < s->wo; q++) {
                    double gy = ts_get(s->g, ((n * k->co + o) * s->ho + p) * s->wo + q);
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t ci = (o / cog) * cg + c;
                                int64_t ih = p * k->at.stride_h - k->at.pad_h + i * k->at.dilation_h;
                                int64_t iw = q * k->at.stride_w - k->at.pad_w + j * k->at.dilation_w;
                                if (ih < 0 || ih >= k->h || iw < 0 || iw >= k->w)
                                    continue;
                                int64_t wi = ((o * cg + c) * k->kh + i) * k->kw + j;
                                dx[((n * k->c + ci) * k->h + ih) * k->w + iw] +=
                                    gy * ts_get(kern, wi);
                            }
                }
    return dx;
}

Test(conv_feedback_rules, dx_goes_through_the_feedback_and_dw_db_are_backprops_bitwise)
{
    uint64_t rng = 33;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < N_CASES; k++)
            for (int bias = 0; bias < 2; bias++) {
                ad_dtype dt = d ? AD_F32 : AD_F64;
                const conv_case *c = &cases[k];
                io s = make_io(dt, c, &rng);
                grads bp = sweep(BACKPROP, bias, c, &s, NULL, 0);
                for (enum rule r = USF; r <= USF_SCALED; r++) {
                    const ad_tensor *extra = r == SF ? s.m : r == KP ? s.fb : NULL;
                    char what[96];
                    snprintf(what, sizeof what, "%s%s case %d %s", rule_names[r],
                             bias ? " with bias" : "", k, d ? "f32" : "f64");
                    grads g = sweep(r, bias, c, &s, extra, 0);
                    ad_tensor *f = feedback_of(r, &s);
                    double *dx = naive_dx(c, &s, f);
                    ts_assert_near(g.dx, dx, dt == AD_F32 ? 1e-4 : 1e-12, what);
                    cr_expect(same_bits(g.dw, bp.dw), "%s: dW is not backprop's", what);
                    cr_expect(!bias || same_bits(g.db, bp.db), "%s: db is not backprop's", what);
                    cr_expect(r != KP || same_bits(g.dfb, g.dw), "%s: dB is not dW", what);
                    grads ref = sweep(r, bias, c, &s, extra, 1);
                    cr_expect(same_bits(ref.dx, bp.dx), "%s: reference dX", what);
                    cr_expect(same_bits(ref.dw, bp.dw), "%s: reference dW", what);
                    for (int64_t i = 0; r == KP && i < ref.dfb->size; i++)
                        cr_expect_eq(ts_get(ref.dfb, i), 0.0, "%s: reference dB", what);
                    free(dx);
                    ad_tensor_free(f);
                    free_grads(&g), free_grads(&ref);
                }
                free_grads(&bp);
                free_io(&s);
            }
}

Test(conv_feedback_rules, memory_saving_sweeps_with_intermediate_inputs_are_bitwise_ordinary)
{
    uint64_t rng = 37;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < N_CASES; k++)
            for (int bias = 0; bias < 2; bias++) {
                io s = make_io(d ? AD_F32 : AD_F64, &cases[k], &rng);
                for (enum rule r = USF; r <= USF_SCALED; r++) {
                    const ad_tensor *extra = r == SF ? s.m : r == KP ? s.fb : NULL;
                    grads g = sweep(r, bias, &cases[k], &s, extra, 0);
                    grads m = sweep_ex(r, bias, &cases[k], &s, extra, 0, 1);
                    cr_expect(same_bits(g.dx, m.dx) && same_bits(g.dw, m.dw) &&
                              (!bias || same_bits(g.db, m.db)) &&
                              (r != KP || same_bits(g.dfb, m.dfb)),
                              "%s case %d bias %d d %d", rule_names[r], k, bias, d);
                    free_grads(&g), free_grads(&m);
                }
                free_io(&s);
            }
}

Test(conv_feedback_rules, usf_is_bitwise_fa_with_b_equal_to_sign_w)
{
    uint64_t rng = 35;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < N_CASES; k++)
            for (int bias = 0; bias < 2; bias++) {
                io s = make_io(d ? AD_F32 : AD_F64, &cases[k], &rng);
                ad_tensor *sign = feedback_of(USF, &s);
                grads u = sweep(USF, bias, &cases[k], &s, NULL, 0);
                grads fa = sweep(FA, bias, &cases[k], &s, sign, 0);
                cr_expect(same_bits(u.dx, fa.dx), "case %d bias %d d %d: dX", k, bias, d);
                cr_expect(same_bits(u.dw, fa.dw), "case %d bias %d d %d: dW", k, bias, d);
                free_grads(&u), free_grads(&fa);
                ad_tensor_free(sign);
                free_io(&s);
            }
}

Test(conv_feedback_rules, a_magnitudes_tensor_or_b_of_another_shape_is_a_named_error)
{
    ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(1, 2, 5, 5));
    ad_tensor *w = ts_tensor(AD_F64, 4, TS_SHAPE(3, 2, 3, 3));
    ad_tensor *f = ts_tensor(AD_F64, 4, TS_SHAPE(3, 2, 3, 2));
    ad_tensor *b = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_conv2d_sf(t, ad_use(t, x), ad_use(t, w), ad_use(t, f), NULL);
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, "conv2d_sf",
                          "magnitudes M 3x2x3x2 f64 must have w's shape 3x2x3x3");
    ad_tape_reset(t);
    y = ad_conv2d_bias_sf(t, ad_use(t, x), ad_use(t, w), ad_use(t, b), ad_use(t, f), NULL);
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, "conv2d_bias_sf", "must have w's shape");
    ad_tape_reset(t);
    y = ad_conv2d_kp(t, ad_use(t, x), ad_use(t, w), ad_use(t, f), NULL);
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, "conv2d_kp",
                          "feedback B 3x2x3x2 f64 must have w's shape 3x2x3x3");
    ad_tape_reset(t);
    y = ad_conv2d_bias_kp(t, ad_use(t, x), ad_use(t, w), ad_use(t, b), ad_use(t, f), NULL);
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, "conv2d_bias_kp", "must have w's shape");
    ad_tape_free(t);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(f), ad_tensor_free(b);
}
