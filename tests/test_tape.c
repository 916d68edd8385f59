/*
** test_tape.c: recording, the arena, handles, poison, printing and forward-only mode.
** The model throughout is tape_model.h's: one dense layer with a bias and tanh, scored
** by MSE. The sweep's contract is in test_sweep.c.
*/
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "tape_model.h"

static ad_var model_loss(ad_tape *t, void *user)
{
    model *m = user;
    cr_assert_eq(m->t, t);
    return model_record(m).loss;
}

/* The forward pass in double, independently of the library: z = x W', h = tanh(z + b). */
static double reference_forward(const model *m, double z[N * OUT], double h[N * OUT])
{
    ts_naive_matmul(m->features, 0, m->weights, 1, z);
    double loss = 0.0;
    for (int i = 0; i < N * OUT; i++) {
        h[i] = tanh(z[i] + ts_get(m->bias, i % OUT));
        double d = h[i] - ts_get(m->target, i);
        loss += d * d;
    }
    return loss / (N * OUT);
}

static void expect_close(const ad_tensor *t, const double *want, double tol, const char *what)
{
    for (int64_t i = 0; i < t->size; i++)
        cr_expect(fabs(ts_get(t, i) - want[i]) <= tol, "%s[%lld] = %.9g, want %.9g", what,
                  (long long)i, ts_get(t, i), want[i]);
}

/* ---- the arena ---- */

/* The arena grew since *last; the tape holds `nodes` nodes. */
static void expect_growth(const ad_tape *t, size_t *last, size_t nodes, const char *what)
{
    ad_tape_stats s = ad_tape_get_stats(t);
    cr_expect_gt(s.bytes_used, *last, "%s took no arena memory", what);
    cr_expect_geq(s.high_water, s.bytes_used);
    cr_expect_eq(s.nodes, nodes, "%s: %zu nodes", what, s.nodes);
    *last = s.bytes_used;
}

Test(tape, arena_use_grows_with_recording_and_reset_keeps_high_water)
{
    model m;
    model_open(&m);
    size_t used = 0;
    cr_expect_eq(ad_tape_get_stats(m.t).bytes_used, 0u);
    ad_var x = ad_use(m.t, m.features);
    expect_growth(m.t, &used, 0, "a leaf");
    ad_var w = ad_use(m.t, m.weights), b = ad_use(m.t, m.bias), y = ad_use(m.t, m.target);
    ad_var z = ad_matmul(m.t, x, w, 0, 1);
    expect_growth(m.t, &used, 1, "matmul");
    ad_var h = ad_tanh(m.t, ad_bias_add(m.t, z, b));
    expect_growth(m.t, &used, 3, "bias_add and tanh");
    ad_var loss = ad_mse(m.t, h, y);
    expect_growth(m.t, &used, 4, "mse");
    size_t recorded = used;
    cr_assert_eq(ad_backward(m.t, loss, m.ps, m.gs), AD_OK, "%s", ad_last_error());
    expect_growth(m.t, &used, 4, "the sweep's cotangents");
    size_t high = ad_tape_get_stats(m.t).high_water;

    ad_tape_reset(m.t);
    ad_tape_stats s = ad_tape_get_stats(m.t);
    cr_expect_eq(s.bytes_used, 0u, "reset did not rewind the arena");
    cr_expect_eq(s.high_water, high, "reset lost the high-water mark");
    cr_expect_eq(s.nodes, 0u);
    model_record(&m);
    cr_expect_eq(ad_tape_get_stats(m.t).bytes_used, recorded,
                 "the same recording took a different amount of arena");
    cr_expect_eq(ad_tape_get_stats(m.t).high_water, high);
    model_close(&m);
}

Test(tape, steady_state_steps_allocate_nothing)
{
    ts_alloc_install();
    model m;
    model_open(&m);
    double loss_value = 0.0;
    handles v = model_record(&m); /* warm-up */
    cr_assert_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_descent_step(m.ps, m.gs, 0.05), AD_OK);
    uint64_t heap = ad_tape_get_stats(m.t).heap_allocs;
    uint64_t calls = ts_alloc_count();
    int64_t live = ts_alloc_outstanding();
    for (int step = 0; step < 6; step++) {
        if (step % 2) {
            cr_assert_eq(ad_gradient(m.t, m.ps, model_loss, &m, m.gs, &loss_value), AD_OK,
                         "%s", ad_last_error());
        } else {
            ad_tape_reset(m.t);
            v = model_record(&m);
            cr_assert_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_OK, "%s",
                         ad_last_error());
        }
        cr_assert_eq(ad_descent_step(m.ps, m.gs, 0.05), AD_OK);
    }
    cr_expect_eq(ad_tape_get_stats(m.t).heap_allocs, heap, "the tape counted allocations");
    cr_expect_eq(ts_alloc_count(), calls, "%llu allocations after the warm-up step",
                 (unsigned long long)(ts_alloc_count() - calls));
    cr_expect_eq(ts_alloc_outstanding(), live);
    cr_expect(isfinite(loss_value) && loss_value > 0.0);
    model_close(&m);
    ts_alloc_uninstall();
}

/* loss = mse(0.5 tanh(W), Y) with W and Y 1000x1000: every arena tensor is 4 MB. */
static ad_var big_loss(ad_tape *t, ad_tensor *w, ad_tensor *y)
{
    return ad_mse(t, ad_scale(t, ad_tanh(t, ad_use(t, w)), 0.5), ad_use(t, y));
}

Test(tape, multi_block_arena_consolidates_into_one_block_after_reset)
{
    ts_alloc_install();
    ad_tensor *w = ts_tensor(AD_F32, 2, TS_SHAPE(1000, 1000));
    ad_tensor *y = ts_tensor(AD_F32, 2, TS_SHAPE(1000, 1000));
    uint64_t seed = 3;
    ts_fill_uniform(w, &seed, -1.0, 1.0);
    ts_fill_uniform(y, &seed, -0.5, 0.5);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);

    cr_assert_eq(ad_backward(t, big_loss(t, w, y), ps, gs), AD_OK, "%s", ad_last_error());
    ad_tape_stats first = ad_tape_get_stats(t);
    int64_t live_chained = ts_alloc_outstanding();
    ad_tape_reset(t);
    ad_tape_stats after_reset = ad_tape_get_stats(t);
    int64_t blocks_freed = live_chained - ts_alloc_outstanding();
    cr_expect_eq(after_reset.heap_allocs, first.heap_allocs + 1,
                 "reset should allocate exactly one consolidated block");
    cr_expect_geq(blocks_freed, 2, "the first step used %lld blocks; expected several",
                  (long long)blocks_freed + 1);
    cr_expect_geq(first.high_water, 4u * 4000000u);

    uint64_t calls = ts_alloc_count();
    int64_t live = ts_alloc_outstanding();
    for (int step = 0; step < 3; step++) {
        cr_assert_eq(ad_backward(t, big_loss(t, w, y), ps, gs), AD_OK, "%s",
                     ad_last_error());
        cr_expect_eq(ad_tape_get_stats(t).high_water, first.high_water);
        ad_tape_reset(t);
    }
    cr_expect_eq(ts_alloc_count(), calls, "%llu allocations after consolidation",
                 (unsigned long long)(ts_alloc_count() - calls));
    cr_expect_eq(ts_alloc_outstanding(), live);
    cr_expect_eq(ad_tape_get_stats(t).heap_allocs, after_reset.heap_allocs);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(w);
    ad_tensor_free(y);
    ts_alloc_uninstall();
}

/* ---- printing ---- */

/* How many lines of text contain needle; *line gets a copy of the first (or ""). */
static int lines_with(const char *text, const char *needle, char *line, size_t size)
{
    int count = 0;
    line[0] = '\0';
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)len, p);
        if (strstr(buf, needle) && count++ == 0)
            snprintf(line, size, "%s", buf);
        p += len + (end ? 1 : 0);
    }
    return count;
}

Test(tape, print_writes_one_line_per_leaf_and_node_with_op_rule_and_shapes)
{
    model m;
    model_open(&m);
    model_record(&m);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cr_assert_eq(ad_tape_print(m.t, f), AD_OK);
    fclose(f);
    static const char *const want[][4] = {
        {"m->features", "4x3 f32", NULL, NULL},
        {"m->weights", "5x3 f32", NULL, NULL},
        {"m->bias", " 5 f32", NULL, NULL},
        {"m->target", "4x5 f32", NULL, NULL},
        {"ad_matmul", "rule \"matmul\"", "4x3 f32", "4x5 f32"},
        {"ad_bias_add", "rule \"bias_add\"", " 5 f32", "4x5 f32"},
        {"ad_tanh", "rule \"tanh\"", "4x5 f32", NULL},
        {"ad_mse", "rule \"mse\"", "4x5 f32", "scalar f32"},
    };
    char line[512];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_expect_eq(lines_with(text, want[i][0], line, sizeof line), 1,
                     "%s should appear on one line:\n%s", want[i][0], text);
        for (int k = 1; k < 4 && want[i][k]; k++)
            cr_expect(strstr(line, want[i][k]) != NULL, "line for %s lacks %s: %s",
                      want[i][0], want[i][k], line);
    }
    cr_expect_eq(lines_with(text, "rule \"", line, sizeof line), 4, "%s", text);
    free(text);
    cr_expect_eq(ad_tape_print(NULL, stdout), AD_ERR_NULL);
    cr_expect_eq(ad_tape_print(m.t, NULL), AD_ERR_NULL);
    model_close(&m);
}

/* ---- values, modes and handles ---- */

Test(tape, value_gives_shape_and_data_of_every_handle)
{
    model m;
    model_open(&m);
    handles v = model_record(&m);
    double z[N * OUT], h[N * OUT], zb[N * OUT];
    double loss = reference_forward(&m, z, h);
    for (int i = 0; i < N * OUT; i++)
        zb[i] = z[i] + ts_get(m.bias, i % OUT);
    cr_expect_eq(ad_value(m.t, v.x), m.features, "a leaf's value is the user's tensor");
    cr_expect_eq(ad_value(m.t, v.w), m.weights);
    const ad_var outs[3] = {v.z, v.zb, v.h};
    const double *want[3] = {z, zb, h};
    for (int k = 0; k < 3; k++) {
        const ad_tensor *t = ad_value(m.t, outs[k]);
        cr_assert_not_null(t);
        cr_expect(t->dtype == AD_F32 && t->ndim == 2 && t->shape[0] == N &&
                  t->shape[1] == OUT && t->size == N * OUT, "value %d has the wrong shape", k);
        expect_close(t, want[k], 1e-5, "value");
    }
    const ad_tensor *l = ad_value(m.t, v.loss);
    cr_assert_not_null(l);
    cr_expect(l->ndim == 0 && l->size == 1 && l->dtype == AD_F32);
    cr_expect_float_eq(ts_get(l, 0), loss, 1e-6);
    model_close(&m);
}

Test(tape, forward_only_mode_computes_values_but_refuses_backward)
{
    model m;
    model_open(&m);
    double z[N * OUT], h[N * OUT];
    double loss = reference_forward(&m, z, h);
    ad_tape_set_grad_enabled(m.t, 0);
    handles v = model_record(&m);
    cr_assert_eq(ad_tape_status(m.t), AD_OK, "%s", ad_tape_error(m.t));
    expect_close(ad_value(m.t, v.h), h, 1e-5, "h");
    cr_expect_float_eq(ts_get(ad_value(m.t, v.loss), 0), loss, 1e-6);
    cr_expect_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_ERR_NO_GRAD);
    cr_expect(strstr(ad_last_error(), "forward-only") != NULL, "%s", ad_last_error());
    cr_expect_eq(ad_gradient(m.t, m.ps, model_loss, &m, m.gs, NULL), AD_ERR_NO_GRAD,
                 "the forward-only setting did not survive a reset");
    ad_tape_set_grad_enabled(m.t, 1);
    ad_tape_reset(m.t);
    v = model_record(&m);
    cr_expect_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_OK, "%s", ad_last_error());
    model_close(&m);
}

Test(tape, handles_from_before_a_reset_are_refused)
{
    model m;
    model_open(&m);
    handles v = model_record(&m);
    ad_tape_reset(m.t);
    cr_expect_null(ad_value(m.t, v.h));
    cr_expect_null(ad_value(m.t, v.x));
    cr_expect_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_ERR_BAD_HANDLE);
    ad_var again = ad_call(m.t, ad_op_tanh, v.h);
    cr_expect_not(ad_var_ok(again));
    cr_expect_eq(ad_tape_status(m.t), AD_ERR_BAD_HANDLE);
    cr_expect(strstr(ad_tape_error(m.t), "ad_op_tanh") != NULL, "%s", ad_tape_error(m.t));
    model_close(&m);
}

Test(tape, handles_from_another_tape_are_refused)
{
    model m;
    model_open(&m);
    ad_tape *other;
    cr_assert_eq(ad_tape_new(&other), AD_OK);
    ad_var x = ad_use(m.t, m.features);
    cr_expect_eq(ad_value(m.t, x), m.features);
    cr_expect_null(ad_value(other, x));
    ad_var y = ad_call(other, ad_op_tanh, x);
    cr_expect_not(ad_var_ok(y));
    cr_expect_eq(ad_tape_status(other), AD_ERR_BAD_HANDLE);
    cr_expect_eq(ad_tape_status(m.t), AD_OK, "the owning tape was poisoned");
    model_close(&m);
    ad_tape_free(other);
}

/* Records x W (4x3 times 5x3: the inner extents differ), then more calls. */
static ad_var poisoned_loss(ad_tape *t, void *user)
{
    model *m = user;
    ad_var x = ad_use(t, m->features), w = ad_use(t, m->weights);
    ad_var bad = ad_matmul(t, x, w, 0, 0);
    cr_expect_not(ad_var_ok(bad));
    cr_expect_not(ad_var_ok(ad_tanh(t, x)), "a valid call on a poisoned tape succeeded");
    cr_expect_not(ad_var_ok(ad_use(t, m->target)));
    ad_var later = ad_call_as(t, ad_op_tanh, "later_op", &x, 3, NULL, 0); /* arity */
    return ad_mse(t, ad_tanh(t, bad), later);
}

Test(tape, first_error_poisons_later_calls_and_is_reported_by_the_sweep)
{
    model m;
    model_open(&m);
    ad_var loss = poisoned_loss(m.t, &m);
    cr_expect_not(ad_var_ok(loss));
    cr_assert_eq(ad_tape_status(m.t), AD_ERR_SHAPE, "the first error was not kept");
    char first[512];
    snprintf(first, sizeof first, "%s", ad_tape_error(m.t));
    cr_expect(strstr(first, "ad_matmul") && strstr(first, "4x3 f32") &&
              strstr(first, "5x3 f32"), "message: %s", first);
    cr_expect_eq(ad_tape_get_stats(m.t).nodes, 0u, "a poisoned call recorded a node");
    cr_expect_eq(ad_backward(m.t, loss, m.ps, m.gs), AD_ERR_SHAPE);
    cr_expect_str_eq(ad_last_error(), first);
    ad_fail(AD_ERR_INVALID, "something else");
    cr_expect_eq(ad_gradient(m.t, m.ps, poisoned_loss, &m, m.gs, NULL), AD_ERR_SHAPE);
    cr_expect_str_eq(ad_last_error(), first);
    ad_tape_reset(m.t);
    cr_expect_eq(ad_tape_status(m.t), AD_OK, "reset did not clear the error");
    cr_expect_str_eq(ad_tape_error(m.t), "");
    model_close(&m);
}

/* ---- recording order ---- */

/* z = tanh(x) * sigmoid(x), its arguments recorded in the order of the statements
** (ad_tape.h: nested, the compiler would choose); the tape's text into *text. */
static void record_sequenced(ad_tape *t, ad_tensor *x, int tanh_first, char **text)
{
    ad_tape_reset(t);
    ad_var xv = ad_use(t, x), u, v;
    if (tanh_first) {
        u = ad_tanh(t, xv);
        v = ad_sigmoid(t, xv);
    } else {
        v = ad_sigmoid(t, xv);
        u = ad_tanh(t, xv);
    }
    ad_var z = ad_sum(t, ad_mul(t, u, v));
    cr_assert(ad_var_ok(z), "%s", ad_tape_error(t));
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    cr_assert_not_null(f);
    cr_assert_eq(ad_tape_print(t, f), AD_OK);
    fclose(f);
}

Test(tape, arguments_assigned_first_are_recorded_in_statement_order)
{
    ad_tensor *x = ts_tensor(AD_F64, 1, TS_SHAPE(6));
    uint64_t rng = 3;
    ts_fill_uniform(x, &rng, -2, 2);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    for (int k = 0; k < 2; k++) {
        char *text = NULL;
        record_sequenced(t, x, k == 0, &text);
        const char *at_tanh = strstr(text, "ad_tanh"), *at_sigmoid = strstr(text, "ad_sigmoid");
        cr_assert(at_tanh && at_sigmoid, "%s", text);
        cr_expect_eq(at_tanh < at_sigmoid, k == 0, "%s first, but the tape says:\n%s",
                     k == 0 ? "tanh" : "sigmoid", text);
        free(text);
    }
    ad_tape_free(t);
    ad_tensor_free(x);
}
