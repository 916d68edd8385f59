/*
** test_dfa_conv_net.c: DFA into a conv layer inside a small LeNet-like net,
**   x -> conv1 -> relu -> max_pool 2x2 -> dfa_conv_hidden(B) -> conv2 (stride 2, pad 1)
**     -> flatten -> dense -> dfa_output -> softmax cross-entropy (mean),
** swept in f32 and f64. Every gradient is composed here by hand from naive loops
** (support/naive_conv.c), never the library's kernels: the forward values, e from the
** softmax, the dense and conv2 dW by plain backprop (the layers above the DFA layer),
** and conv1's dW from the DFA signal conv_transpose(e over conv2's grid, B), routed to
** the pool's argmax, masked by relu and taken through conv1's dW loop. The reference
** sweep gives backprop's conv1 dW (the signal through conv2's weights instead).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad_feedback.h"
#include "naive_conv.h"
#include "support.h"

enum { N = 2, CLASSES = 4, UNITS = 20 }; /* UNITS: conv2's 5 x 2 x 2 per image */

/* conv1: 2x1x8x8 by 3x1x3x3 -> 2x3x6x6; pooled 2x3x3x3; conv2: 5x3x2x2, stride 2, pad 1
** -> 2x5x2x2; B (DFA into conv2's input): CLASSES x 3 x 2 x 2 under conv2's attributes. */
static const ts_conv_geo conv1 = {N, 1, 8, 8, 3, 3, 3, {1, 1, 0, 0, 1, 1, 1}};
static const ts_conv_geo conv2 = {N, 3, 3, 3, 5, 2, 2, {2, 2, 1, 1, 1, 1, 1}};
static const ts_conv_geo dfa_geo = {N, 3, 3, 3, CLASSES, 2, 2, {2, 2, 1, 1, 1, 1, 1}};

typedef struct model {
    ad_tensor *x, *w1, *w2, *w3, *b, *labels;
} model;

static model model_open(ad_dtype dt)
{
    uint64_t rng = 29;
    model m = {ts_tensor(dt, 4, TS_SHAPE(N, 1, 8, 8)), ts_tensor(dt, 4, TS_SHAPE(3, 1, 3, 3)),
               ts_tensor(dt, 4, TS_SHAPE(5, 3, 2, 2)), ts_tensor(dt, 2, TS_SHAPE(CLASSES, UNITS)),
               ts_tensor(dt, 4, TS_SHAPE(CLASSES, 3, 2, 2)), ts_tensor(AD_I32, 1, TS_SHAPE(N))};
    ad_tensor *fl[] = {m.x, m.w1, m.w2, m.w3, m.b};
    for (int i = 0; i < 5; i++)
        ts_fill_uniform(fl[i], &rng, -1, 1);
    ((int32_t *)m.labels->data)[0] = 2, ((int32_t *)m.labels->data)[1] = 0;
    return m;
}

static void model_close(model *m)
{
    ad_tensor *all[] = {m->x, m->w1, m->w2, m->w3, m->b, m->labels};
    for (int i = 0; i < 6; i++)
        ad_tensor_free(all[i]);
}

/* The hand-composed values: the logits, and the dW of conv1 (DFA's, or backprop's when
** bp), conv2 and the dense layer, flat in their tensors' order. */
typedef struct hand {
    double logits[N * CLASSES], dw1[27], dw2[60], dw3[CLASSES * UNITS];
} hand;

/* 2x2 max pooling of r (N x 3 x 6 x 6) into p (N x 3 x 3 x 3), argmax kept in at; the
** first maximum in row-major order wins, as the library documents (ties are unlikely
** with these random values anyway). */
static void pool_forward(const double *r, double *p, int64_t *at)
{
    for (int64_t pl = 0; pl < N * 3; pl++)
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 3; j++) {
                int64_t best = pl * 36 + (2 * i) * 6 + 2 * j;
                for (int64_t a = 0; a < 2; a++)
                    for (int64_t b = 0; b < 2; b++) {
                        int64_t k = pl * 36 + (2 * i + a) * 6 + 2 * j + b;
                        if (r[k] > r[best])
                            best = k;
                    }
                p[pl * 9 + i * 3 + j] = r[best];
                at[pl * 9 + i * 3 + j] = best;
            }
}

static void compose(const model *m, int bp, hand *h)
{
    double *x = ts_doubles(m->x), *w1 = ts_doubles(m->w1), *w2 = ts_doubles(m->w2);
    double *w3 = ts_doubles(m->w3), *b = ts_doubles(m->b);
    double a1[N * 108] = {0}, r1[N * 108], p1[N * 27], z2[N * UNITS] = {0};
    double e[N * CLASSES], dz2[N * UNITS] = {0}, da1[N * 108] = {0};
    int64_t at[N * 27];
    memset(h, 0, sizeof *h);
    ts_conv_loops(&conv1, x, w1, NULL, a1, NULL, NULL);
    for (int k = 0; k < N * 108; k++)
        r1[k] = a1[k] > 0 ? a1[k] : 0;
    pool_forward(r1, p1, at);
    ts_conv_loops(&conv2, p1, w2, NULL, z2, NULL, NULL);
    for (int n = 0; n < N; n++) {
        double mx = -INFINITY, s = 0;
        for (int k = 0; k < CLASSES; k++) {
            double v = 0;
            for (int u = 0; u < UNITS; u++)
                v += z2[n * UNITS + u] * w3[k * UNITS + u];
            h->logits[n * CLASSES + k] = v;
            mx = fmax(mx, v);
        }
        for (int k = 0; k < CLASSES; k++)
            s += exp(h->logits[n * CLASSES + k] - mx);
        int label = ((const int32_t *)m->labels->data)[n];
        for (int k = 0; k < CLASSES; k++) /* d mean CE / d logits */
            e[n * CLASSES + k] = (exp(h->logits[n * CLASSES + k] - mx) / s - (k == label)) / N;
    }
    for (int n = 0; n < N; n++) /* the dense layer and conv2: plain backprop */
        for (int k = 0; k < CLASSES; k++)
            for (int u = 0; u < UNITS; u++) {
                h->dw3[k * UNITS + u] += e[n * CLASSES + k] * z2[n * UNITS + u];
                dz2[n * UNITS + u] += e[n * CLASSES + k] * w3[k * UNITS + u];
            }
    ts_conv_loops(&conv2, p1, NULL, dz2, NULL, NULL, h->dw2);
    /* the signal at the pool's output: backprop's through w2, or DFA's conv_transpose(E, B) */
    double *dp1 = bp ? calloc(N * 27, sizeof *dp1) : ts_naive_dfa_conv_dx(&dfa_geo, e, b);
    cr_assert_not_null(dp1);
    if (bp)
        ts_conv_loops(&conv2, NULL, w2, dz2, NULL, dp1, NULL);
    for (int k = 0; k < N * 27; k++) /* pool routing, then relu's mask */
        da1[at[k]] += dp1[k];
    for (int k = 0; k < N * 108; k++)
        da1[k] = a1[k] > 0 ? da1[k] : 0;
    ts_conv_loops(&conv1, x, NULL, da1, NULL, NULL, h->dw1);
    free(x), free(w1), free(w2), free(w3), free(b), free(dp1);
}

typedef struct swept {
    ad_tape *t;
    ad_params *ps;
    ad_grads *gs;
    ad_var logits;
} swept;

/* Records the net and sweeps it (reference: backprop's answer) over w1, w2, w3. */
static swept sweep(const model *m, ad_dfa *dfa, int reference)
{
    swept s;
    cr_assert(ad_tape_new(&s.t) == AD_OK && ad_params_new(&s.ps) == AD_OK);
    ad_tensor *ws[] = {m->w1, m->w2, m->w3};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ad_params_add(s.ps, ws[i], NULL), AD_OK);
    cr_assert_eq(ad_grads_new(s.ps, &s.gs), AD_OK);
    ad_tape *t = s.t;
    ad_var a = ad_relu(t, ad_conv2d(t, ad_use(t, m->x), ad_use(t, m->w1), NULL));
    ad_var p = ad_max_pool2d(t, a, &AD_POOL2D_ATTRS(2, 2));
    ad_var h = ad_dfa_conv_hidden(t, dfa, p, ad_use(t, m->b), &conv2.at);
    ad_var z = ad_flatten(t, ad_conv2d(t, h, ad_use(t, m->w2), &conv2.at));
    s.logits = ad_dfa_output(t, dfa, ad_matmul(t, z, ad_use(t, m->w3), 0, 1));
    ad_var loss = ad_softmax_cross_entropy(t, s.logits, ad_use(t, m->labels));
    cr_assert(ad_var_ok(loss), "%s", ad_tape_error(t));
    ad_sweep_options o = {.use_reference = reference};
    cr_assert_eq(ad_backward_ex(t, loss, s.ps, s.gs, &o), AD_OK, "%s", ad_last_error());
    return s;
}

static void swept_close(swept *s)
{
    ad_grads_free(s->gs);
    ad_params_free(s->ps);
    ad_tape_free(s->t);
}

static void expect_grads(const model *m, const swept *s, const hand *h, double tol,
                         const char *what)
{
    char label[96];
    snprintf(label, sizeof label, "%s: logits", what);
    ts_assert_near(ad_value(s->t, s->logits), h->logits, tol, label);
    snprintf(label, sizeof label, "%s: conv1 dW", what);
    ts_assert_near(ad_grads_get(s->gs, m->w1), h->dw1, tol, label);
    snprintf(label, sizeof label, "%s: conv2 dW (backprop)", what);
    ts_assert_near(ad_grads_get(s->gs, m->w2), h->dw2, tol, label);
    snprintf(label, sizeof label, "%s: dense dW (backprop)", what);
    ts_assert_near(ad_grads_get(s->gs, m->w3), h->dw3, tol, label);
}

Test(dfa_conv_net, first_conv_dw_is_the_hand_composed_dfa_signal_and_the_rest_backprop)
{
    for (int d = 0; d < 2; d++) {
        model m = model_open(d ? AD_F64 : AD_F32);
        ad_dfa dfa = {0};
        hand h;
        compose(&m, 0, &h);
        swept s = sweep(&m, &dfa, 0);
        expect_grads(&m, &s, &h, d ? 1e-11 : 2e-5, d ? "DFA f64" : "DFA f32");
        swept_close(&s);
        model_close(&m);
    }
}

/* The signal differs from backprop's, so the DFA dW above is not backprop's by accident. */
Test(dfa_conv_net, reference_sweep_gives_backprop_and_differs_from_dfa)
{
    for (int d = 0; d < 2; d++) {
        model m = model_open(d ? AD_F64 : AD_F32);
        ad_dfa dfa = {0};
        hand bp, dfa_h;
        compose(&m, 1, &bp);
        compose(&m, 0, &dfa_h);
        swept s = sweep(&m, &dfa, 1);
        expect_grads(&m, &s, &bp, d ? 1e-11 : 2e-5, d ? "reference f64" : "reference f32");
        double diff = 0;
        for (int k = 0; k < 27; k++)
            diff = fmax(diff, fabs(bp.dw1[k] - dfa_h.dw1[k]));
        cr_expect_gt(diff, 1e-3, "DFA's conv1 dW is backprop's (%g apart)", diff);
        swept_close(&s);
        model_close(&m);
    }
}
