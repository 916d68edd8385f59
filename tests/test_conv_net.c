/*
** test_conv_net.c: a small conv net as a user writes one (conv_bias, relu, max pool,
** conv with FA, average pool, global average pool, flatten, dense, softmax
** cross-entropy) under allocation failure: for every n, failing the n-th allocation of
** a whole step on a fresh tape (recording, then the sweep, with memory saving off and
** on) gives AD_ERR_NOMEM naming what ran out, leaves no allocation behind once the tape
** is freed, and changes no input; the first step that succeeds gives bitwise the
** gradients of a step that never failed.
**
** The tape's heap allocations are arena blocks (64 KiB, then doubling), so a step
** fails only where a block runs out: a handful of places. The net runs in a few
** geometries picked so that those places fall inside each pooling op (max pool's
** output and its saved argmax, average pool, global average pool), which the test
** checks from the error messages.
*/
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad_feedback.h"
#include "support.h"

enum { CLASSES = 5 };

/* x N x C x H x W with H = W, CO channels after each conv; `met`: what the message of
** one of the failures names, where the arena's block boundaries put it. The messages do
** not tell max pool's output from its argmax: which of the two runs out was found by
** tracing the primal (a backtrace of the failing allocation: ad_save or ad_out). Both
** convs take conv2d's direct path (conv_direct.c), whose scratch differs from im2col's;
** the geometries were chosen anew when it came. */
typedef struct geometry {
    int64_t n, c, h, co;
    const char *met;
} geometry;

static const geometry geometries[] = {
    {2, 1, 15, 4, "pullback of ad_conv2d_fa"},
    {4, 1, 17, 5, "ad_call ad_max_pool2d (rule"}, /* its saved argmax */
    {5, 1, 17, 5, "ad_call ad_max_pool2d (rule"}, /* its output */
    {5, 3, 15, 4, "ad_call ad_avg_pool2d (rule"},
    {6, 3, 16, 3, "ad_call ad_global_avg_pool2d (rule"},
};

typedef struct conv_net {
    ad_tensor *x, *labels, *w1, *b1, *w2, *fb2, *wd, *p[4];
    ad_params *ps;
    ad_grads *gs;
    int saving;
    char error[512]; /* the last failed step's message */
} conv_net;

static void net_open(conv_net *m, const geometry *g)
{
    uint64_t rng = 17;
    m->x = ts_tensor(AD_F32, 4, TS_SHAPE(g->n, g->c, g->h, g->h));
    m->w1 = ts_tensor(AD_F32, 4, TS_SHAPE(g->co, g->c, 3, 3));
    m->b1 = ts_tensor(AD_F32, 1, TS_SHAPE(g->co));
    m->w2 = ts_tensor(AD_F32, 4, TS_SHAPE(g->co, g->co, 3, 3));
    m->fb2 = ts_tensor(AD_F32, 4, TS_SHAPE(g->co, g->co, 3, 3));
    m->wd = ts_tensor(AD_F32, 2, TS_SHAPE(CLASSES, g->co));
    m->labels = ts_tensor(AD_I32, 1, TS_SHAPE(g->n));
    ad_tensor *fill[] = {m->x, m->w1, m->b1, m->w2, m->fb2, m->wd};
    for (int i = 0; i < 6; i++)
        ts_fill_uniform(fill[i], &rng, -0.5, 0.5);
    for (int i = 0; i < g->n; i++)
        ((int32_t *)m->labels->data)[i] = i % CLASSES;
    ad_tensor *p[4] = {m->w1, m->b1, m->w2, m->wd};
    cr_assert_eq(ad_params_new(&m->ps), AD_OK);
    for (int i = 0; i < 4; i++) {
        m->p[i] = p[i];
        cr_assert_eq(ad_params_add(m->ps, p[i], NULL), AD_OK);
    }
    cr_assert_eq(ad_grads_new(m->ps, &m->gs), AD_OK);
}

static void net_close(conv_net *m)
{
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
    ad_tensor *all[] = {m->x, m->w1, m->b1, m->w2, m->fb2, m->wd, m->labels};
    for (int i = 0; i < 7; i++)
        ad_tensor_free(all[i]);
}

/* H x H -> conv 3x3 pad 1 (H x H) -> relu -> max pool 3x3 stride 2 pad 1 (overlapping;
** (H - 1) / 2 + 1, 5x5 for H = 9) -> FA conv 3x3 pad 1 -> average pool 2x2 stride 2
** (2x2 for H = 9) -> global average pool (1x1) -> flatten (N x CO) -> dense -> softmax
** cross-entropy. */
static ad_var record(ad_tape *t, void *user)
{
    conv_net *m = user;
    ad_conv2d_attrs pad1 = AD_CONV2D_ATTRS_DEFAULT;
    pad1.pad_h = pad1.pad_w = 1;
    ad_pool2d_attrs max = {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2,
                           .pad_h = 1, .pad_w = 1};
    /* One declarator each, so every compiler records in this order (arguments are
    ** evaluated in an unspecified order, and the order moves the block boundaries). */
    ad_var x = ad_use(t, m->x), w1 = ad_use(t, m->w1), b1 = ad_use(t, m->b1);
    ad_var w2 = ad_use(t, m->w2), fb2 = ad_use(t, m->fb2), wd = ad_use(t, m->wd);
    ad_var labels = ad_use(t, m->labels);
    ad_var h = ad_relu(t, ad_conv2d_bias(t, x, w1, b1, &pad1));
    ad_var h2 = ad_conv2d_fa(t, ad_max_pool2d(t, h, &max), w2, fb2, &pad1);
    ad_var pooled = ad_global_avg_pool2d(t, ad_avg_pool2d(t, h2, &AD_POOL2D_ATTRS(2, 2)));
    ad_var logits = ad_matmul(t, ad_flatten(t, pooled), wd, 0, 1);
    return ad_softmax_cross_entropy(t, logits, labels);
}

/* A whole step on a fresh tape with allocation n failing (0: none). */
static ad_status attempt_step(conv_net *m, uint64_t n)
{
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_tape_set_memory_saving(t, m->saving);
    ts_alloc_fail_at(n);
    ad_var loss = record(t, m);
    ad_status rc = ad_tape_status(t);
    if (rc == AD_OK)
        rc = ad_backward(t, loss, m->ps, m->gs);
    ts_alloc_fail_at(0);
    if (rc) {
        cr_expect_eq(rc, AD_ERR_NOMEM, "allocation %llu: %s", (unsigned long long)n,
                     ad_last_error());
        cr_expect(strstr(ad_last_error(), "out of memory") != NULL, "%s", ad_last_error());
        snprintf(m->error, sizeof m->error, "%s", ad_last_error());
    }
    ad_tape_free(t);
    return rc;
}

Test(conv_net, every_failed_allocation_in_a_step_is_nomem_and_leaves_nothing_behind)
{
    for (size_t gi = 0; gi < sizeof geometries / sizeof geometries[0]; gi++)
    for (int saving = 0; saving < 2; saving++) {
        const geometry *g = &geometries[gi];
        conv_net m = {.saving = saving};
        net_open(&m, g);
        ts_alloc_install();
        cr_assert_eq(attempt_step(&m, 0), AD_OK, "%s", ad_last_error());
        ad_tensor *want[4];
        for (int i = 0; i < 4; i++)
            want[i] = ts_clone(ad_grads_get(m.gs, m.p[i]));
        ad_tensor *x0 = ts_clone(m.x);
        int64_t base = ts_alloc_outstanding();
        uint64_t n = 1;
        bool met = false;
        while (attempt_step(&m, n) != AD_OK) {
            cr_assert_eq(ts_alloc_outstanding(), base, "allocation %llu: leaked",
                         (unsigned long long)n);
            met = met || strstr(m.error, g->met);
            cr_assert_lt(n++, 10000u, "never succeeded");
        }
        cr_expect_gt(n, 1u, "no allocation was ever failed");
        /* If the tape's allocation sizes change, pick the geometry anew. */
        cr_expect(met, "geometry %zu, saving %d: no failure in \"%s\" (%llu failures, "
                  "the arena's blocks run out elsewhere)", gi, saving, g->met,
                  (unsigned long long)n - 1);
        for (int i = 0; i < 4; i++)
            cr_expect_eq(memcmp(ad_grads_get(m.gs, m.p[i])->data, want[i]->data,
                                (size_t)want[i]->size * 4), 0,
                         "geometry %zu, saving %d: parameter %d's gradient after %llu "
                         "failures", gi, saving, i, (unsigned long long)n - 1);
        cr_expect_eq(memcmp(m.x->data, x0->data, (size_t)x0->size * 4), 0, "x changed");
        ts_alloc_uninstall();
        for (int i = 0; i < 4; i++)
            ad_tensor_free(want[i]);
        ad_tensor_free(x0);
        net_close(&m);
    }
}
