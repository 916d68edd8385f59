/*
** test_conv_net.c: a small conv net as a user writes one (conv_bias, relu, conv with FA,
** flatten, dense, softmax cross-entropy) under allocation failure: for every n, failing
** the n-th allocation of a whole step on a fresh tape (recording, then the sweep, with
** memory saving off and on) gives AD_ERR_NOMEM naming what ran out, leaves no
** allocation behind once the tape is freed, and changes no input; the first step that
** succeeds gives bitwise the gradients of a step that never failed.
*/
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "ad_feedback.h"
#include "support.h"

enum { N = 3, C = 2, H = 9, CO = 4, CLASSES = 5 };

typedef struct conv_net {
    ad_tensor *x, *labels, *w1, *b1, *w2, *fb2, *wd, *p[4];
    ad_params *ps;
    ad_grads *gs;
    int saving;
} conv_net;

static void net_open(conv_net *m)
{
    uint64_t rng = 17;
    m->x = ts_tensor(AD_F32, 4, TS_SHAPE(N, C, H, H));
    m->w1 = ts_tensor(AD_F32, 4, TS_SHAPE(CO, C, 3, 3));
    m->b1 = ts_tensor(AD_F32, 1, TS_SHAPE(CO));
    m->w2 = ts_tensor(AD_F32, 4, TS_SHAPE(CO, CO, 3, 3));
    m->fb2 = ts_tensor(AD_F32, 4, TS_SHAPE(CO, CO, 3, 3));
    m->wd = ts_tensor(AD_F32, 2, TS_SHAPE(CLASSES, CO * 2 * 2));
    m->labels = ts_tensor(AD_I32, 1, TS_SHAPE(N));
    ad_tensor *fill[] = {m->x, m->w1, m->b1, m->w2, m->fb2, m->wd};
    for (int i = 0; i < 6; i++)
        ts_fill_uniform(fill[i], &rng, -0.5, 0.5);
    for (int i = 0; i < N; i++)
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

/* 9x9 -> conv 3x3 pad 1 (9x9) -> relu -> FA conv 3x3 stride 4 ((9 - 3) / 4 + 1 = 2:
** 2x2) -> flatten (N x 16) -> dense -> softmax cross-entropy. */
static ad_var record(ad_tape *t, void *user)
{
    conv_net *m = user;
    ad_conv2d_attrs pad1 = AD_CONV2D_ATTRS_DEFAULT, s4 = AD_CONV2D_ATTRS_DEFAULT;
    pad1.pad_h = pad1.pad_w = 1;
    s4.stride_h = s4.stride_w = 4;
    ad_var h = ad_relu(t, ad_conv2d_bias(t, ad_use(t, m->x), ad_use(t, m->w1),
                                         ad_use(t, m->b1), &pad1));
    ad_var h2 = ad_conv2d_fa(t, h, ad_use(t, m->w2), ad_use(t, m->fb2), &s4);
    ad_var logits = ad_matmul(t, ad_flatten(t, h2), ad_use(t, m->wd), 0, 1);
    return ad_softmax_cross_entropy(t, logits, ad_use(t, m->labels));
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
    }
    ad_tape_free(t);
    return rc;
}

Test(conv_net, every_failed_allocation_in_a_step_is_nomem_and_leaves_nothing_behind)
{
    for (int saving = 0; saving < 2; saving++) {
        conv_net m;
        net_open(&m);
        m.saving = saving;
        ts_alloc_install();
        cr_assert_eq(attempt_step(&m, 0), AD_OK, "%s", ad_last_error());
        ad_tensor *want[4];
        for (int i = 0; i < 4; i++)
            want[i] = ts_clone(ad_grads_get(m.gs, m.p[i]));
        ad_tensor *x0 = ts_clone(m.x);
        int64_t base = ts_alloc_outstanding();
        uint64_t n = 1;
        while (attempt_step(&m, n) != AD_OK) {
            cr_assert_eq(ts_alloc_outstanding(), base, "allocation %llu: leaked",
                         (unsigned long long)n);
            cr_assert_lt(n++, 10000u, "never succeeded");
        }
        cr_expect_gt(n, 1u, "no allocation was ever failed");
        for (int i = 0; i < 4; i++)
            cr_expect_eq(memcmp(ad_grads_get(m.gs, m.p[i])->data, want[i]->data,
                                (size_t)want[i]->size * 4), 0,
                         "saving %d: parameter %d's gradient after %llu failures", saving,
                         i, (unsigned long long)n - 1);
        cr_expect_eq(memcmp(m.x->data, x0->data, (size_t)x0->size * 4), 0, "x changed");
        ts_alloc_uninstall();
        for (int i = 0; i < 4; i++)
            ad_tensor_free(want[i]);
        ad_tensor_free(x0);
        net_close(&m);
    }
}
