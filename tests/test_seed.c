/*
** test_seed.c: the seed scenario, proved with numbers computed independently.
** A Feedback Alignment rule registered for the user's my_matmul must be the rule
** that runs, give FA's gradients (not backprop's), and never train B.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "seed_model.h"
#include "support.h"

static void register_fa(void)
{
    cr_assert_eq(ad_rule_register(my_matmul, &my_matmul_rule), AD_OK, "%s", ad_last_error());
}

/* max |got - want| / max |want| over a layer's gradient. */
static double rel_err(const ad_tensor *got, const double *want)
{
    double num = 0, den = 0;
    for (int64_t k = 0; k < got->size; k++) {
        num = fmax(num, fabs(ts_get(got, k) - want[k]));
        den = fmax(den, fabs(want[k]));
    }
    return num / den;
}

static void reference(const seed_model *m, int fa, double *dW[SEED_LAYERS])
{
    for (int l = 0; l < SEED_LAYERS; l++)
        dW[l] = calloc((size_t)m->W[l]->size, sizeof(double));
    seed_reference_grads(m, fa, dW);
}

static void free_reference(double *dW[SEED_LAYERS])
{
    for (int l = 0; l < SEED_LAYERS; l++)
        free(dW[l]);
}

Test(seed, user_fa_rule_is_used_and_gives_fa_gradient_not_backprop)
{
    register_fa();
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F32, 7);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    double loss;
    cr_assert_eq(ad_gradient(t, m.ps, seed_loss, &m, m.gs, &loss), AD_OK, "%s",
                 ad_last_error());
    double *fa[SEED_LAYERS], *bp[SEED_LAYERS];
    reference(&m, 1, fa);
    reference(&m, 0, bp);
    const ad_tensor *g0 = ad_grads_get(m.gs, m.W[0]);
    cr_assert_not_null(g0);
    cr_expect_lt(rel_err(g0, fa[0]), 1e-5, "first layer dW differs from FA by %g",
                 rel_err(g0, fa[0]));
    cr_expect_gt(rel_err(g0, bp[0]), 0.1, "first layer dW is backprop's (%g)",
                 rel_err(g0, bp[0]));
    for (int l = 1; l < SEED_LAYERS; l++)
        cr_expect_lt(rel_err(ad_grads_get(m.gs, m.W[l]), fa[l]), 1e-5, "layer %d", l);
    cr_expect_eq(ad_tape_pullback_count(t, my_matmul), SEED_LAYERS);
    free_reference(fa);
    free_reference(bp);
    ad_tape_free(t);
    seed_model_free(&m);
}

Test(seed, fa_with_b_equal_to_w_equals_backprop)
{
    register_fa();
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F64, 11);
    for (int l = 0; l < SEED_LAYERS; l++)
        cr_assert_eq(ad_tensor_copy_from(m.B[l], m.W[l]), AD_OK);
    ad_grads *bp;
    cr_assert_eq(ad_grads_new(m.ps, &bp), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_gradient(t, m.ps, seed_loss, &m, m.gs, NULL), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_gradient(t, m.ps, seed_loss_backprop, &m, bp, NULL), AD_OK);
    for (int l = 0; l < SEED_LAYERS; l++) {
        const ad_tensor *a = ad_grads_get(m.gs, m.W[l]), *b = ad_grads_get(bp, m.W[l]);
        cr_expect_leq(ts_max_abs_diff(a, b), 1e-14, "layer %d differs by %g", l,
                      ts_max_abs_diff(a, b));
    }
    ad_grads_free(bp);
    ad_tape_free(t);
    seed_model_free(&m);
}

static int unregistered_ran;

/* External linkage on purpose; the static case is the next test. */
ad_status my_matmul_without_rule(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
ad_status my_matmul_without_rule(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    unregistered_ran = 1;
    return my_matmul(cx, in, out);
}

static ad_status static_op_without_rule(ad_ctx *cx, const ad_tensor *const in[],
                                        ad_tensor **out)
{
    unregistered_ran = 1;
    return my_matmul(cx, in, out);
}

Test(seed, call_without_rule_fails_at_record_time_naming_the_function)
{
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F32, 3);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_call(t, my_matmul_without_rule, ad_use(t, m.W[0]), ad_use(t, m.x),
                       ad_use(t, m.B[0]));
    cr_expect_not(ad_var_ok(y));
    cr_expect_eq(ad_tape_status(t), AD_ERR_NO_RULE);
    cr_expect_not_null(strstr(ad_tape_error(t), "no rule registered for my_matmul_without_rule"),
                       "message: %s", ad_tape_error(t));
    cr_expect_eq(unregistered_ran, 0, "the primal ran although it has no rule");
    cr_expect_eq(ad_backward(t, y, m.ps, m.gs), AD_ERR_NO_RULE);
    ad_tape_free(t);
    seed_model_free(&m);
}

Test(seed, static_function_without_rule_is_named_in_the_message)
{
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F32, 3);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_call(t, static_op_without_rule, ad_use(t, m.W[0]), ad_use(t, m.x), ad_use(t, m.B[0]));
    cr_expect_eq(ad_tape_status(t), AD_ERR_NO_RULE);
    cr_expect_not_null(strstr(ad_tape_error(t), "static_op_without_rule"), "message: %s",
                       ad_tape_error(t));
    cr_expect_eq(unregistered_ran, 0);
    ad_tape_free(t);
    seed_model_free(&m);
}

static int replacement_calls;

static ad_status replacement_pullback(ad_ctx *cx, const ad_tensor *dy,
                                      const ad_tensor *const in[], const ad_tensor *y,
                                      ad_tensor *const din[], const float beta[])
{
    replacement_calls++;
    return ad_dense_backprop_pullback(cx, dy, in, y, din, beta);
}

Test(seed, duplicate_registration_fails_and_explicit_replace_is_used)
{
    register_fa();
    ad_status rc = ad_rule_register(my_matmul, &my_matmul_rule);
    cr_expect_eq(rc, AD_ERR_RULE_EXISTS);
    cr_expect_not_null(strstr(ad_last_error(), "my_matmul"), "message: %s", ad_last_error());
    ad_rule backprop = my_matmul_rule;
    backprop.name = "my_matmul (backprop)";
    backprop.pullback = replacement_pullback;
    backprop.not_gradient = 0;
    cr_assert_eq(ad_rule_replace(my_matmul, &backprop), AD_OK, "%s", ad_last_error());

    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F64, 5);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    seed_log = (seed_pullback_log){0};
    cr_assert_eq(ad_gradient(t, m.ps, seed_loss, &m, m.gs, NULL), AD_OK, "%s", ad_last_error());
    cr_expect_eq(replacement_calls, SEED_LAYERS);
    cr_expect_eq(seed_log.calls, 0, "the replaced FA pullback still ran");
    double *bp[SEED_LAYERS];
    reference(&m, 0, bp);
    cr_expect_lt(rel_err(ad_grads_get(m.gs, m.W[0]), bp[0]), 1e-12);
    free_reference(bp);
    ad_tape_free(t);
    seed_model_free(&m);
}

Test(seed, b_gets_no_gradient_and_is_unchanged_by_the_step)
{
    register_fa();
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F32, 9);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    float *before[SEED_LAYERS];
    uint64_t version[SEED_LAYERS];
    for (int l = 0; l < SEED_LAYERS; l++) {
        size_t bytes = (size_t)m.B[l]->size * sizeof(float);
        before[l] = malloc(bytes);
        memcpy(before[l], m.B[l]->data, bytes);
        version[l] = m.B[l]->version;
    }
    for (int step = 0; step < 3; step++) {
        cr_assert_eq(ad_gradient(t, m.ps, seed_loss, &m, m.gs, NULL), AD_OK);
        cr_assert_eq(ad_descent_step(m.ps, m.gs, 0.1), AD_OK);
    }
    for (int l = 0; l < SEED_LAYERS; l++) {
        cr_expect_null(ad_grads_get(m.gs, m.B[l]), "B%d has a gradient", l);
        cr_expect_eq(memcmp(before[l], m.B[l]->data, (size_t)m.B[l]->size * sizeof(float)), 0);
        cr_expect_eq(m.B[l]->version, version[l]);
        free(before[l]);
    }
    ad_tape_free(t);
    seed_model_free(&m);
}

Test(seed, first_layer_dx_is_never_computed)
{
    register_fa();
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F32, 13);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    seed_log = (seed_pullback_log){.data = m.x};
    for (int step = 0; step < 4; step++)
        cr_assert_eq(ad_gradient(t, m.ps, seed_loss, &m, m.gs, NULL), AD_OK);
    cr_expect_eq(seed_log.calls, 4 * SEED_LAYERS);
    cr_expect_eq(seed_log.dx_requested, 4 * (SEED_LAYERS - 1));
    cr_expect_eq(seed_log.dx_requested_for_data, 0);
    ad_tape_free(t);
    seed_model_free(&m);
}

Test(seed, hundred_steps_after_the_first_make_no_heap_allocation)
{
    ts_alloc_install();
    register_fa();
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F32, 17);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    double first, last;
    cr_assert_eq(ad_gradient(t, m.ps, seed_loss, &m, m.gs, &first), AD_OK);
    cr_assert_eq(ad_descent_step(m.ps, m.gs, 0.1), AD_OK);
    uint64_t before = ts_alloc_count();
    uint64_t tape_before = ad_tape_get_stats(t).heap_allocs;
    for (int step = 0; step < 100; step++) {
        cr_assert_eq(ad_gradient(t, m.ps, seed_loss, &m, m.gs, &last), AD_OK);
        cr_assert_eq(ad_descent_step(m.ps, m.gs, 0.1), AD_OK);
    }
    cr_expect_eq(ts_alloc_count(), before, "%llu allocations in 100 steps",
                 (unsigned long long)(ts_alloc_count() - before));
    cr_expect_eq(ad_tape_get_stats(t).heap_allocs, tape_before);
    cr_expect_lt(last, first, "loss did not fall: %g -> %g", first, last);
    ad_tape_free(t);
    seed_model_free(&m);
    ts_alloc_uninstall();
}

Test(seed, matmul_shape_mismatch_names_both_shapes_and_touches_nothing)
{
    ad_tensor *x = ts_tensor(AD_F32, 2, TS_SHAPE(64, 50));
    ad_tensor *w = ts_tensor(AD_F32, 2, TS_SHAPE(60, 40));
    uint64_t rng = 1;
    ts_fill_uniform(x, &rng, -1, 1);
    ts_fill_uniform(w, &rng, -1, 1);
    float *xc = malloc(64 * 50 * sizeof(float)), *wc = malloc(60 * 40 * sizeof(float));
    memcpy(xc, x->data, 64 * 50 * sizeof(float));
    memcpy(wc, w->data, 60 * 40 * sizeof(float));
    uint64_t xv = x->version, wv = w->version;
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_matmul(t, ad_use(t, x), ad_use(t, w), 0, 1);
    cr_expect_not(ad_var_ok(y));
    cr_expect_eq(ad_tape_status(t), AD_ERR_SHAPE);
    cr_expect_not_null(strstr(ad_tape_error(t), "64x50"), "%s", ad_tape_error(t));
    cr_expect_not_null(strstr(ad_tape_error(t), "60x40"), "%s", ad_tape_error(t));
    cr_expect_eq(memcmp(xc, x->data, 64 * 50 * sizeof(float)), 0);
    cr_expect_eq(memcmp(wc, w->data, 60 * 40 * sizeof(float)), 0);
    cr_expect(x->version == xv && w->version == wv);
    free(xc);
    free(wc);
    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(w);
}

Test(seed, changing_w_between_recording_and_sweep_is_a_stale_input_error)
{
    register_fa();
    seed_model m;
    ad_tape *t;
    seed_model_make(&m, AD_F32, 19);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var loss = seed_loss(t, &m);
    ((float *)m.W[1]->data)[0] += 1.0f;
    ad_tensor_touch(m.W[1]);
    cr_expect_eq(ad_backward(t, loss, m.ps, m.gs), AD_ERR_STALE_INPUT);
    cr_expect_not_null(strstr(ad_last_error(), "my_matmul"), "%s", ad_last_error());
    /* The leaf is named by the expression given to ad_use, the node by its index. */
    cr_expect_not_null(strstr(ad_last_error(), "m->W[l]"), "%s", ad_last_error());
    cr_expect_not_null(strstr(ad_last_error(), "node 1"), "%s", ad_last_error());
    ad_tape_free(t);
    seed_model_free(&m);
}

/* dX through B, by loops: the independent reference for the FA slot. */
static ad_status naive_fa_dx(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx;
    (void)y;
    const ad_tensor *b = in[2];
    int64_t n = dy->shape[0], o = b->shape[0], i = b->shape[1];
    for (int64_t r = 0; din[1] && r < n; r++)
        for (int64_t c = 0; c < i; c++) {
            double s = beta[1] ? ts_get(din[1], r * i + c) : 0.0;
            for (int64_t a = 0; a < o; a++)
                s += ts_get(dy, r * o + a) * ts_get(b, a * i + c);
            ts_set(din[1], r * i + c, s);
        }
    return AD_OK;
}

Test(seed, fa_rule_passes_the_default_check_and_dx_equals_naive_dy_b)
{
    register_fa();
    const int64_t shapes[3][3] = {{5, 3, 4}, {1, 6, 2}, {7, 4, 9}}; /* batch, in, out */
    for (int s = 0; s < 3; s++) {
        int64_t n = shapes[s][0], i = shapes[s][1], o = shapes[s][2];
        ad_tensor *w = ts_tensor(AD_F64, 2, TS_SHAPE(o, i));
        ad_tensor *x = ts_tensor(AD_F64, 2, TS_SHAPE(n, i));
        ad_tensor *b = ts_tensor(AD_F64, 2, TS_SHAPE(o, i));
        uint64_t rng = 100 + (uint64_t)s;
        ts_fill_uniform(w, &rng, -1, 1);
        ts_fill_uniform(x, &rng, -1, 1);
        ts_fill_uniform(b, &rng, -1, 1);
        const ad_tensor *in[3] = {w, x, b};
        /* As the README's user would run it: no options, nothing but the inputs. */
        ad_check_report rep;
        cr_expect_eq(ad_rule_check(my_matmul, in, 3, NULL, &rep), AD_OK, "%s", ad_last_error());
        cr_expect_eq(rep.slots_checked, 2);
        cr_expect_eq(rep.slot[0].method, AD_CHECK_FINITE_DIFFERENCES);
        cr_expect_eq(rep.slot[1].method, AD_CHECK_STRUCTURAL);
        cr_expect_gt(rep.slot[1].angle_degrees, 1.0, "dY B against backprop's dY W");
        /* With the expected dX = dY B from a loop, the values are compared too. */
        ad_check_options o1 = ad_check_defaults();
        o1.expected = naive_fa_dx;
        cr_expect_eq(ad_rule_check(my_matmul, in, 3, &o1, &rep), AD_OK, "%s", ad_last_error());
        cr_expect_eq(rep.slot[1].method, AD_CHECK_EXPECTED);
        cr_expect_lt(rep.slot[1].max_rel_err, 1e-12);
        ad_tensor_free(w);
        ad_tensor_free(x);
        ad_tensor_free(b);
    }
}
