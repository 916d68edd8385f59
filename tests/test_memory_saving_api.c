/*
** test_memory_saving_api.c: memory-saving sweeps (ad_tape_set_memory_saving) as a user
** meets them. An MLP's high-water mark drops by two hidden activations; reused values
** read as NULL naming ad_keep, kept ones stay; a second sweep is refused; a user rule
** that declares nothing finds its values intact when its pullback runs, one that reads
** what it declared unread is caught; ad_keep's errors; no heap allocation per step; a
** NULL tape. Every built-in rule is in test_memory_saving.c; the nets and sweeps both
** use are in support/saving_nets.c.
*/
#include <criterion/criterion.h>
#include <string.h>

#include "saving_nets.h"
#include "support.h"

/* ---- an MLP 32 -> 64 -> 64 -> 10, batch 16, float32 ---- */

enum { MB = 16, MI = 32, MH = 64, MO = 10 };
#define HIDDEN_BYTES ((size_t)MB * MH * sizeof(float)) /* 4096, a multiple of 64 */

typedef struct mlp {
    bag g;
    ad_tensor *x, *w[3], *b[3], *labels;
    int keep_h1;
    ad_var z1, h1, z2, h2; /* from the last recording */
} mlp;

static void mlp_open(mlp *m)
{
    *m = (mlp){.g.seed = 7};
    const int64_t fan[4] = {MI, MH, MH, MO};
    m->x = bag_add(&m->g, AD_F32, MB, MI, 1, 0);
    m->labels = bag_add(&m->g, AD_F32, MB, MO, 0, 0);
    for (int l = 0; l < 3; l++) {
        m->w[l] = bag_add(&m->g, AD_F32, fan[l + 1], fan[l], 0.3, 1);
        m->b[l] = bag_add(&m->g, AD_F32, fan[l + 1], 0, 0.1, 1);
    }
}

static ad_var mlp_loss(ad_tape *t, void *user)
{
    mlp *m = user;
    m->z1 = ad_matmul(t, ad_use(t, m->x), ad_use(t, m->w[0]), 0, 1);
    m->h1 = ad_bias_relu(t, m->z1, ad_use(t, m->b[0]));
    m->z2 = ad_matmul(t, m->h1, ad_use(t, m->w[1]), 0, 1);
    m->h2 = ad_bias_relu(t, m->z2, ad_use(t, m->b[1]));
    ad_var logits = ad_bias_add(t, ad_matmul(t, m->h2, ad_use(t, m->w[2]), 0, 1),
                                ad_use(t, m->b[2]));
    if (m->keep_h1)
        cr_assert_eq(ad_keep(t, m->h1), AD_OK, "%s", ad_last_error());
    return ad_softmax_cross_entropy(t, logits, ad_use(t, m->labels));
}

/*
** The recordings are the same, so only the sweeps' arena use differs. The ordinary one
** takes 4 hidden-sized (16 x 64 f32) cotangents fresh: h2's (at matmul 3's pullback), z2's
** (bias_relu 2), h1's (matmul 2) and z1's (bias_relu 1). With saving, h2's cotangent is dead
** once bias_relu 2 has run, in time for h1's; z2's once matmul 2 has run, in time for z1's.
** A reused buffer costs only the descriptor that a fresh one has too, so the high-water
** mark drops by at least 2 * HIDDEN_BYTES from cotangents alone (z1 and z2, which no
** pullback reads, add two more with the built-in rules' declarations).
*/
Test(memory_saving_api, mlp_high_water_drops_by_two_hidden_activations_with_the_same_gradients)
{
    mlp m;
    mlp_open(&m);
    run plain = net_sweep(m.g.ps, mlp_loss, &m, 0, "mlp");
    run save = net_sweep(m.g.ps, mlp_loss, &m, 1, "mlp");
    size_t hw0 = ad_tape_get_stats(plain.t).high_water;
    size_t hw1 = ad_tape_get_stats(save.t).high_water;
    cr_assert_lt(hw1, hw0, "high water %zu with saving, %zu without", hw1, hw0);
    cr_assert_geq(hw0 - hw1, 2 * HIDDEN_BYTES, "saved %zu bytes, want >= %zu", hw0 - hw1,
                  2 * HIDDEN_BYTES);
    same_grads(m.g.ps, &plain, &save, "mlp");
    run_drop(&plain);
    run_drop(&save);
    bag_close(&m.g);
}

Test(memory_saving_api, reused_values_read_null_naming_ad_keep_while_kept_values_and_loss_stay)
{
    mlp m;
    mlp_open(&m);
    m.keep_h1 = 1;
    run plain = net_sweep(m.g.ps, mlp_loss, &m, 0, "mlp");
    ad_var plain_h1 = m.h1; /* mlp_loss rewrites the handles */
    run r = run_open(m.g.ps, 1);
    r.loss = mlp_loss(r.t, &m);
    ad_tensor *h1_copy = ts_clone(ad_value(r.t, m.h1));
    cr_assert_eq(ad_backward(r.t, r.loss, m.g.ps, r.gs), AD_OK, "%s", ad_last_error());
    /* z1 and z2 (matmul outputs under bias_relu) are read by no pullback. */
    const ad_var reused[] = {m.z1, m.z2};
    for (int i = 0; i < 2; i++) {
        cr_expect_null(ad_value(r.t, reused[i]), "z%d is still readable", i + 1);
        cr_expect(strstr(ad_last_error(), "ad_keep") != NULL, "z%d: %s", i + 1,
                  ad_last_error());
    }
    cr_expect_null(ad_cotangent(r.t, m.h2), "h2's cotangent was not reused");
    cr_expect(strstr(ad_last_error(), "ad_keep") != NULL, "%s", ad_last_error());
    const ad_tensor *h1 = ad_value(r.t, m.h1), *dh1 = ad_cotangent(r.t, m.h1);
    cr_assert_not_null(h1, "the kept h1: %s", ad_last_error());
    cr_expect(memcmp(h1->data, h1_copy->data, HIDDEN_BYTES) == 0, "h1 changed");
    cr_assert_not_null(dh1, "the kept h1's cotangent: %s", ad_last_error());
    cr_expect(memcmp(dh1->data, ad_cotangent(plain.t, plain_h1)->data, HIDDEN_BYTES) == 0,
              "h1's cotangent differs");
    const ad_tensor *loss = ad_value(r.t, r.loss);
    cr_assert_not_null(loss, "the loss: %s", ad_last_error());
    cr_expect_eq(ts_get(loss, 0), ts_get(ad_value(plain.t, plain.loss), 0));
    double l0, l1;
    cr_assert_eq(ad_gradient(plain.t, m.g.ps, mlp_loss, &m, plain.gs, &l0), AD_OK);
    cr_assert_eq(ad_gradient(r.t, m.g.ps, mlp_loss, &m, r.gs, &l1), AD_OK, "%s",
                 ad_last_error());
    cr_expect(memcmp(&l0, &l1, sizeof l0) == 0, "ad_gradient's loss %.17g vs %.17g", l1, l0);
    ad_tensor_free(h1_copy);
    run_drop(&r);
    run_drop(&plain);
    bag_close(&m.g);
}

/* Recording on after a saving sweep: a kept value (or a view of it) can be used, a
** reused one is refused at record time rather than read as a cotangent's bytes. */
Test(memory_saving_api, ops_recorded_after_the_sweep_refuse_reused_inputs)
{
    mlp m;
    mlp_open(&m);
    m.keep_h1 = 1;
    run r = run_open(m.g.ps, 1);
    r.loss = mlp_loss(r.t, &m);
    cr_assert_eq(ad_backward(r.t, r.loss, m.g.ps, r.gs), AD_OK, "%s", ad_last_error());
    ad_var flat = ad_flatten(r.t, m.h1);
    cr_assert_eq(ad_tape_status(r.t), AD_OK, "a view of the kept h1: %s", ad_tape_error(r.t));
    cr_expect(ad_value(r.t, flat)->data == ad_value(r.t, m.h1)->data);
    ad_var z = ad_relu(r.t, m.z1);
    cr_expect(!ad_var_ok(z));
    cr_expect_eq(ad_tape_status(r.t), AD_ERR_REUSED);
    cr_expect(strstr(ad_tape_error(r.t), "ad_keep") != NULL &&
                  strstr(ad_tape_error(r.t), "input 0") != NULL,
              "%s", ad_tape_error(r.t));
    run_drop(&r);
    bag_close(&m.g);
}

Test(memory_saving_api, second_and_reference_sweeps_of_a_saved_recording_are_refused)
{
    mlp m;
    mlp_open(&m);
    run r = net_sweep(m.g.ps, mlp_loss, &m, 1, "mlp");
    cr_expect_eq(ad_backward(r.t, r.loss, m.g.ps, r.gs), AD_ERR_REUSED);
    cr_expect(strstr(ad_last_error(), "record") != NULL, "%s", ad_last_error());
    ad_sweep_options ref = {.use_reference = 1};
    cr_expect_eq(ad_backward_ex(r.t, r.loss, m.g.ps, r.gs, &ref), AD_ERR_REUSED);
    ad_tape_reset(r.t);
    /* A reference sweep reuses nothing, so an ordinary (saving) sweep may follow it. */
    ad_var loss = mlp_loss(r.t, &m);
    cr_assert_eq(ad_backward_ex(r.t, loss, m.g.ps, r.gs, &ref), AD_OK, "%s", ad_last_error());
    cr_expect_not_null(ad_value(r.t, m.z1), "a reference sweep reused z1");
    cr_assert_eq(ad_backward(r.t, loss, m.g.ps, r.gs), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ad_backward(r.t, loss, m.g.ps, r.gs), AD_ERR_REUSED);
    run_drop(&r);
    bag_close(&m.g);
}

/* ---- user rules, float64 ---- */

/* y = x^2, elementwise. Declares nothing. */
static ad_status square_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, AD_F64, in[0]->ndim, in[0]->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < in[0]->size; i++)
        ((double *)(*out)->data)[i] = ((const double *)in[0]->data)[i] *
                                      ((const double *)in[0]->data)[i];
    return rc;
}

/* dx = 2 x dy: reads its input, as a rule that declares nothing may. */
static ad_status square_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                 const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    double *d = din[0] ? din[0]->data : NULL;
    const double *x = in[0]->data, *g = dy->data;
    for (int64_t i = 0; d && i < dy->size; i++)
        d[i] = (beta[0] != 0.0f ? d[i] : 0.0) + 2.0 * x[i] * g[i];
    return AD_OK;
}

/* dx = 2 dy: the pullback of y = 2x, carried by the bad rule below. */
static ad_status twice_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    double *d = din[0] ? din[0]->data : NULL;
    for (int64_t i = 0; d && i < dy->size; i++)
        d[i] = (beta[0] != 0.0f ? d[i] : 0.0) + 2.0 * ((const double *)dy->data)[i];
    return AD_OK;
}

/* y = sum of x^2, rank 0. */
static ad_status sumsq_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const double *x = in[0]->data;
    double s = 0.0;
    for (int64_t i = 0; i < in[0]->size; i++)
        s += x[i] * x[i];
    ad_status rc = ad_out(cx, AD_F64, 0, NULL, out);
    if (rc == AD_OK)
        *(double *)(*out)->data = s;
    return rc;
}

/* dx = 2 x dy  (reads x, whatever its rule claims) */
static ad_status sumsq_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)y;
    double g = *(const double *)dy->data, *d = din[0] ? din[0]->data : NULL;
    const double *x = in[0]->data;
    for (int64_t i = 0; d && i < in[0]->size; i++)
        d[i] = (beta[0] != 0.0f ? d[i] : 0.0) + 2.0 * x[i] * g;
    return AD_OK;
}

#define F64_IN {{AD_ACCEPT_F64, 0}}

/*
** in = tanh(x W1') W3', out = square(in), then the tail: after square's pullback the
** cotangents of tanh's output and of x W1' (B x M, the size of square's input and output)
** are still to come and take what the sweep releases. square declares nothing, so its
** input (which matmul leaves unread) is released only after square's pullback: the
** gradients, computed with anomaly mode's NaN fill, match the ordinary sweep's. After
** the sweep, its input and output are gone unless kept, like any value.
*/
static int keep_square_input;

static ad_var c_square(ad_tape *t, void *user)
{
    net *s = user;
    s->in = ad_matmul(t, ad_tanh(t, A), U(w3), 0, 1);
    s->out = ad_call(t, square_fn, s->in);
    if (keep_square_input)
        cr_assert_eq(ad_keep(t, s->in), AD_OK, "%s", ad_last_error());
    return net_tail(t, s, s->out);
}

Test(memory_saving_api, user_rule_declaring_nothing_sees_its_values_intact)
{
    const ad_rule r = {.name = "square", .pullback = square_pullback, .n_inputs = 1,
                       .inputs = F64_IN};
    cr_assert_eq(ad_rule_register(square_fn, &r), AD_OK, "%s", ad_last_error());
    net s;
    net_open(&s, AD_F64, 3);
    run plain = net_sweep(s.g.ps, c_square, &s, 0, "square");
    const ad_var in0 = s.in;
    run save = net_sweep(s.g.ps, c_square, &s, 1, "square");
    same_grads(s.g.ps, &plain, &save, "square");
    cr_expect_null(ad_value(save.t, s.in), "square's input was not released");
    cr_expect_null(ad_value(save.t, s.out), "square's output was not released");
    cr_expect(strstr(ad_last_error(), "ad_keep") != NULL, "%s", ad_last_error());
    keep_square_input = 1;
    run kept = net_sweep(s.g.ps, c_square, &s, 1, "square, input kept");
    keep_square_input = 0;
    same_grads(s.g.ps, &plain, &kept, "square, input kept");
    const ad_tensor *want = ad_value(plain.t, in0), *got = ad_value(kept.t, s.in);
    cr_assert_not_null(got, "%s", ad_last_error());
    cr_expect(memcmp(got->data, want->data, sizeof(double) * BATCH * M) == 0);
    run_drop(&plain);
    run_drop(&save);
    run_drop(&kept);
    bag_close(&s.g);
}

/*
** loss = 0.5 sumsq(a), a = x W1' (B x M), and sumsq's rule claims a unread. Then no
** pullback reads a (matmul leaves its output unread too), so the sweep releases it at
** once, NaN-filled in anomaly mode; the next B x M buffer wanted is a's own cotangent, at
** sumsq's pullback, which reads NaN. (An elementwise y = x * x would not show it: y's
** cotangent, B x M too, would take a's buffer first, and the pullback would read finite
** garbage: silently wrong.)
*/
CASE(sumsq, ad_scale(t, ad_call(t, sumsq_fn, A), 0.5))

Test(memory_saving_api, rule_reading_an_input_it_declared_unread_fails_in_anomaly_mode)
{
    const ad_rule r = {.name = "sumsq (lies)", .pullback = sumsq_pullback, .n_inputs = 1,
                       .inputs = F64_IN, .unread = AD_INPUT(0)};
    cr_assert_eq(ad_rule_register(sumsq_fn, &r), AD_OK, "%s", ad_last_error());
    net s;
    net_open(&s, AD_F64, 5);
    run plain = net_sweep(s.g.ps, c_sumsq, &s, 0, "sumsq"); /* the lie is harmless here */
    run save = run_open(s.g.ps, 1);
    ad_status rc = ad_backward(save.t, c_sumsq(save.t, &s), s.g.ps, save.gs);
    cr_expect_eq(rc, AD_ERR_NONFINITE, "got %s: %s", ad_status_str(rc), ad_last_error());
    cr_expect(strstr(ad_last_error(), "sumsq") != NULL, "%s", ad_last_error());
    run_drop(&plain);
    run_drop(&save);
    bag_close(&s.g);
}

Test(memory_saving_api, registering_unread_past_the_inputs_is_a_bad_rule)
{
    const ad_rule r = {.pullback = twice_pullback, .n_inputs = 2, .unread = AD_INPUT(2)};
    cr_expect_eq(ad_rule_register(sumsq_fn, &r), AD_ERR_BAD_RULE);
    cr_expect(strstr(ad_last_error(), "sumsq_fn") != NULL, "%s", ad_last_error());
    cr_expect_null(ad_rule_find(sumsq_fn), "the table changed");
}

/* ---- ad_keep's errors, allocations, NULL ---- */

Test(memory_saving_api, keep_refuses_a_null_tape_and_stale_or_foreign_handles)
{
    ad_tape *t, *other;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_tape_new(&other), AD_OK);
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(4));
    ad_var v = ad_tanh(t, ad_use(t, x));
    cr_expect_eq(ad_keep(NULL, v), AD_ERR_NULL);
    cr_expect(strstr(ad_last_error(), "ad_keep") != NULL, "%s", ad_last_error());
    cr_expect_eq(ad_keep(other, v), AD_ERR_BAD_HANDLE);
    cr_expect_eq(ad_keep(t, (ad_var){0}), AD_ERR_BAD_HANDLE);
    cr_expect_eq(ad_keep(t, v), AD_OK);
    ad_tape_reset(t);
    cr_expect_eq(ad_keep(t, v), AD_ERR_BAD_HANDLE);
    cr_expect(strstr(ad_last_error(), "ad_keep") != NULL, "%s", ad_last_error());
    ad_tensor_free(x);
    ad_tape_free(other);
    ad_tape_free(t);
}

Test(memory_saving_api, saving_steps_make_no_heap_allocation_after_the_first_two)
{
    ts_alloc_install();
    mlp m;
    mlp_open(&m);
    m.keep_h1 = 1;
    run r = run_open(m.g.ps, 1);
    double first, last;
    for (int step = 0; step < 22; step++) {
        if (step == 2)
            ts_alloc_fail_at(0); /* restarts the count */
        cr_assert_eq(ad_gradient(r.t, m.g.ps, mlp_loss, &m, r.gs, step ? &last : &first),
                     AD_OK, "step %d: %s", step, ad_last_error());
        cr_assert_eq(ad_descent_step(m.g.ps, r.gs, 0.1), AD_OK);
    }
    cr_expect_eq(ts_alloc_count(), 0u, "%llu allocations in 20 steps",
                 (unsigned long long)ts_alloc_count());
    cr_expect_lt(last, first, "loss did not fall: %g -> %g", first, last);
    /* The setting survived the resets: the last recording was swept with saving. */
    cr_expect_null(ad_value(r.t, m.z1), "z1 readable after the last step");
    run_drop(&r);
    bag_close(&m.g);
    ts_alloc_uninstall();
}

Test(memory_saving_api, setting_on_a_null_tape_is_ignored)
{
    ad_tape_set_memory_saving(NULL, 1);
    ad_tape_set_memory_saving(NULL, 0);
}
