/*
** test_sweep.c: the sweep's contract: summed, absent and early-ready gradients,
** descent, and stale inputs. Most tests use the shared model of tape_model.h; the
** exact-arithmetic ones use a float64 parameter of their own.
*/
#include <criterion/criterion.h>
#include <string.h>

#include "support.h"
#include "tape_model.h"

/* ---- summed and absent gradients ---- */

/* A float64 parameter w (2x3, exactly representable values) on its own tape. */
typedef struct tiny {
    ad_tape *t;
    ad_tensor *w;
    ad_params *ps;
    ad_grads *gs;
} tiny;

static tiny tiny_open(void)
{
    tiny r = {.w = ts_tensor(AD_F64, 2, TS_SHAPE(2, 3))};
    for (int i = 0; i < 6; i++)
        ts_set(r.w, i, 0.25 * (i - 2));
    cr_assert_eq(ad_tape_new(&r.t), AD_OK);
    cr_assert_eq(ad_params_new(&r.ps), AD_OK);
    cr_assert_eq(ad_params_add(r.ps, r.w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r.ps, &r.gs), AD_OK);
    return r;
}

static void tiny_close(tiny *r)
{
    ad_tape_free(r->t);
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tensor_free(r->w);
}

/* Runs the sweep, checks dw[i] == a + k w[i] exactly, and resets the tape. */
static void expect_sweep(tiny *r, ad_var loss, double a, double k, const char *what)
{
    cr_assert_eq(ad_backward(r->t, loss, r->ps, r->gs), AD_OK, "%s: %s", what,
                 ad_last_error());
    const ad_tensor *g = ad_grads_get(r->gs, r->w);
    cr_assert_not_null(g, "%s: no gradient", what);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ts_get(g, i), a + k * ts_get(r->w, i), "%s: dw[%d] = %g, want %g",
                     what, i, ts_get(g, i), a + k * ts_get(r->w, i));
    ad_tape_reset(r->t);
}

Test(sweep, parameter_used_twice_gets_the_summed_gradient)
{
    tiny r = tiny_open();
    ad_tape *t = r.t;
    ad_var w = ad_use(t, r.w);
    expect_sweep(&r, ad_sum(t, ad_add(t, ad_scale(t, w, 2.0), ad_scale(t, w, 3.0))), 5.0,
                 0.0, "2w + 3w, one leaf");
    w = ad_use(t, r.w);
    expect_sweep(&r, ad_sum(t, ad_mul(t, w, w)), 0.0, 2.0, "w * w, one leaf");
    ad_var w1 = ad_use(t, r.w), w2 = ad_use(t, r.w);
    expect_sweep(&r, ad_sum(t, ad_add(t, ad_scale(t, w1, 2.0), ad_scale(t, w2, 3.0))), 5.0,
                 0.0, "2w + 3w, two leaves");
    tiny_close(&r);
}

Test(sweep, parameter_in_two_slots_of_one_call_through_two_leaves_gets_both_parts)
{
    tiny r = tiny_open();
    ad_var w1 = ad_use(r.t, r.w), w2 = ad_use(r.t, r.w);
    expect_sweep(&r, ad_sum(r.t, ad_mul(r.t, w1, w2)), 0.0, 2.0, "w * w, two leaves");
    tiny_close(&r);
}

Test(sweep, parameter_the_loss_does_not_depend_on_gets_no_gradient)
{
    model m;
    model_open(&m);
    cr_assert_eq(ad_params_add(m.ps, m.target, NULL), AD_OK); /* only a nondiff slot */
    handles v = model_record(&m);
    ad_var side = ad_tanh(m.t, ad_use(m.t, m.unused)); /* recorded, not in the loss */
    cr_assert(ad_var_ok(side));
    cr_assert_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_OK, "%s", ad_last_error());
    cr_expect_not_null(ad_grads_get(m.gs, m.weights));
    cr_expect_not_null(ad_grads_get(m.gs, m.bias));
    cr_expect_null(ad_grads_get(m.gs, m.unused), "a parameter off the loss's path");
    cr_expect_null(ad_grads_get(m.gs, m.target), "a parameter in a nondiff slot");
    cr_expect_null(ad_grads_get(m.gs, m.features), "a constant");
    model_close(&m);
}

/* ---- gradient-ready callbacks ---- */

/* Tied weights: loss = mse(tanh(x W' + b) W, x), so W gets two contributions. */
static ad_var tied_loss(model *m)
{
    ad_var x = ad_use(m->t, m->features), w = ad_use(m->t, m->weights);
    ad_var h = ad_tanh(m->t, ad_bias_add(m->t, ad_matmul(m->t, x, w, 0, 1),
                                         ad_use(m->t, m->bias)));
    return ad_mse(m->t, ad_matmul(m->t, h, w, 0, 0), x);
}

typedef struct ready_log {
    ad_tape *t;
    ad_params *ps;
    int calls[3], total, stop_at;
    uint64_t matmuls_run[3];       /* matmul pullbacks run when it fired */
    float snapshot[3][OUT * IN];   /* the gradient as the callback saw it */
} ready_log;

static int on_ready(int index, const ad_tensor *param, const ad_tensor *grad, void *user)
{
    ready_log *log = user;
    cr_assert(index >= 0 && index < 3, "index %d", index);
    cr_expect_eq(param, ad_params_at(log->ps, index));
    log->calls[index]++;
    log->matmuls_run[index] = ad_tape_pullback_count(log->t, ad_op_matmul);
    memcpy(log->snapshot[index], grad->data, (size_t)grad->size * sizeof(float));
    return ++log->total == log->stop_at;
}

Test(sweep, ready_callback_fires_once_per_parameter_with_its_final_gradient)
{
    model m;
    model_open(&m);
    ready_log log = {.t = m.t, .ps = m.ps};
    ad_grads_on_ready(m.gs, on_ready, &log);
    cr_assert_eq(ad_backward(m.t, tied_loss(&m), m.ps, m.gs), AD_OK, "%s", ad_last_error());
    const ad_tensor *const params[3] = {m.weights, m.bias, m.unused};
    for (int p = 0; p < 3; p++) {
        const ad_tensor *g = ad_grads_get(m.gs, params[p]);
        cr_expect_eq(log.calls[p], g ? 1 : 0, "parameter %d: %d calls", p, log.calls[p]);
        if (g && log.calls[p])
            cr_expect(memcmp(log.snapshot[p], g->data, (size_t)g->size * sizeof(float)) == 0,
                      "parameter %d's gradient changed after its callback", p);
    }
    cr_expect_eq(log.matmuls_run[1], 1u, "b is final before the first layer's pullback");
    cr_expect_eq(log.matmuls_run[0], 2u, "W is final only after both of its uses");
    ad_grads_on_ready(m.gs, NULL, NULL);
    ad_tape_reset(m.t);
    cr_assert_eq(ad_backward(m.t, tied_loss(&m), m.ps, m.gs), AD_OK);
    cr_expect_eq(log.total, 2, "a removed callback still fired");
    model_close(&m);
}

Test(sweep, ready_callback_returning_nonzero_stops_the_sweep)
{
    model m;
    model_open(&m);
    ready_log log = {.t = m.t, .ps = m.ps, .stop_at = 1};
    ad_grads_on_ready(m.gs, on_ready, &log);
    cr_expect_eq(ad_backward(m.t, tied_loss(&m), m.ps, m.gs), AD_ERR_PULLBACK);
    cr_expect(strstr(ad_last_error(), "callback") != NULL, "%s", ad_last_error());
    cr_expect_eq(log.total, 1, "the sweep went on after the callback said stop");
    cr_expect_eq(ad_tape_pullback_count(m.t, ad_op_matmul), 1u,
                 "the first layer's pullback ran after the stop");
    model_close(&m);
}

/* ---- descent ---- */

Test(sweep, descent_step_subtracts_lr_times_gradient_exactly_and_bumps_versions)
{
    model m;
    model_open(&m);
    handles v = model_record(&m);
    cr_assert_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_OK, "%s", ad_last_error());
    ad_tensor *const params[3] = {m.weights, m.bias, m.unused};
    float before[3][OUT * IN], want[3][OUT * IN];
    uint64_t version[3];
    const float lr = (float)0.1;
    for (int p = 0; p < 3; p++) {
        const ad_tensor *g = ad_grads_get(m.gs, params[p]);
        version[p] = params[p]->version;
        for (int64_t i = 0; i < params[p]->size; i++) {
            before[p][i] = ((float *)params[p]->data)[i];
            want[p][i] = g ? before[p][i] - lr * ((const float *)g->data)[i] : before[p][i];
        }
    }
    cr_assert_eq(ad_descent_step(m.ps, m.gs, 0.1), AD_OK, "%s", ad_last_error());
    for (int p = 0; p < 3; p++) {
        for (int64_t i = 0; i < params[p]->size; i++)
            cr_expect_eq(((float *)params[p]->data)[i], want[p][i],
                         "param %d [%lld]: %.9g, want %.9g", p, (long long)i,
                         ((float *)params[p]->data)[i], want[p][i]);
        cr_expect_eq(params[p]->version, version[p] + (p < 2 ? 1 : 0),
                     "param %d: version %llu", p, (unsigned long long)params[p]->version);
    }
    cr_expect_neq(want[0][0], before[0][0], "the step moved nothing");

    tiny r = tiny_open(); /* float64: loss = sum(w * w), dw = 2w */
    ad_var w = ad_use(r.t, r.w);
    cr_assert_eq(ad_backward(r.t, ad_sum(r.t, ad_mul(r.t, w, w)), r.ps, r.gs), AD_OK);
    cr_assert_eq(ad_descent_step(r.ps, r.gs, 0.25), AD_OK);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ts_get(r.w, i), 0.5 * 0.25 * (i - 2), "w[%d] = %g", i, ts_get(r.w, i));
    tiny_close(&r);
    model_close(&m);
}

/* ---- stale inputs ---- */

static void expect_stale(model *m, ad_tensor *written, const char *leaf, const char *op)
{
    ad_tape_reset(m->t);
    handles v = model_record(m);
    if (written == m->bias)
        cr_assert_eq(ad_tensor_fill(written, 0.25), AD_OK);
    else
        ad_tensor_touch(written);
    cr_expect_eq(ad_backward(m->t, v.loss, m->ps, m->gs), AD_ERR_STALE_INPUT, "%s", leaf);
    cr_expect(strstr(ad_last_error(), leaf) && strstr(ad_last_error(), op),
              "the message should name %s and %s: %s", leaf, op, ad_last_error());
}

Test(sweep, input_written_after_recording_fails_the_sweep_naming_op_and_leaf)
{
    model m;
    model_open(&m);
    expect_stale(&m, m.features, "m->features", "ad_matmul"); /* a constant */
    expect_stale(&m, m.target, "m->target", "ad_mse");        /* a nondiff constant */
    expect_stale(&m, m.weights, "m->weights", "ad_matmul");   /* a parameter */
    expect_stale(&m, m.bias, "m->bias", "ad_bias_add");       /* written by the API */
    ad_tape_reset(m.t);
    handles v = model_record(&m);
    cr_expect_eq(ad_backward(m.t, v.loss, m.ps, m.gs), AD_OK, "a fresh recording: %s",
                 ad_last_error());
    model_close(&m);
}
