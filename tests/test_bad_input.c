/*
** test_bad_input.c: bad input through the public API: each case a named error (or, for
** functions returning void, a pointer or a number, a neutral answer), never a crash,
** with the caller's data unchanged. Complements test_errors.c, which already covers
** NULL tensors in ad_use and ad_tensor_copy_from's source, rank 5 and overflow in
** ad_tensor_new, mixed dtypes in ad_add, a handle from another tape or before a reset
** (test_tape.c) and a pullback's own error; those are not repeated here.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

#define MENTIONS(text, needle)                                                          \
    cr_expect(strstr((text), (needle)) != NULL, "\"%s\" does not mention \"%s\"", (text),  \
              (needle))
/* call returns code and the thread's last error mentions needle. */
#define EXPECT_FAIL(call, code, needle)                                                 \
    do {                                                                                \
        cr_expect_eq((call), (code), "%s: %s", #call, ad_last_error());                 \
        MENTIONS(ad_last_error(), (needle));                                            \
    } while (0)

static const int64_t BIG = (int64_t)1 << 40;

/* ---- user functions ---- */

/* What a probing primal asks ad_out for (ad_call_attrs). */
typedef struct out_request {
    ad_dtype dtype;
    int ndim;
    int64_t shape[5];
} out_request;

static ad_status copy_out(ad_ctx *cx, const ad_tensor *x, ad_tensor **out)
{
    ad_status rc = ad_out(cx, x->dtype, x->ndim, x->shape, out);
    if (rc == AD_OK && x->size)
        memcpy((*out)->data, x->data, (size_t)x->size * ad_dtype_size(x->dtype));
    return rc;
}

static ad_status id_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return copy_out(cx, in[0], out);
}

/* Asks ad_out for the shape in its attributes. */
static ad_status shaped_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    (void)in;
    const out_request *r = ad_attrs(cx);
    return ad_out(cx, r->dtype, r->ndim, r->shape, out);
}

/* A primal that breaks the ad_out contract in the way its attribute says. */
enum { FORGETS_OUT, RETURNS_ITS_OWN, OUT_TWICE };
static ad_tensor not_from_the_tape;

static ad_status sloppy_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const int *how = ad_attrs(cx);
    if (*how == FORGETS_OUT)
        return AD_OK;
    ad_status rc = copy_out(cx, in[0], out);
    if (*how == RETURNS_ITS_OWN)
        *out = &not_from_the_tape;
    return rc || *how != OUT_TWICE ? rc : ad_out(cx, AD_F32, 1, TS_SHAPE(2), out);
}

/* Every NULL a primal could pass to its context; the statuses land in ctx_rc. */
static ad_status ctx_rc[6];

static ad_status ctx_nulls_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *x = in[0];
    ad_tensor *t;
    ctx_rc[0] = ad_out(NULL, x->dtype, x->ndim, x->shape, &t);
    ctx_rc[1] = ad_out(cx, x->dtype, x->ndim, x->shape, NULL);
    ctx_rc[2] = ad_out(cx, x->dtype, 2, NULL, &t);
    ctx_rc[3] = ad_save(NULL, x->dtype, x->ndim, x->shape, &t);
    ctx_rc[4] = ad_save(cx, x->dtype, x->ndim, x->shape, NULL);
    ctx_rc[5] = ad_scratch(NULL, x->dtype, x->ndim, x->shape, &t);
    return copy_out(cx, x, out);
}

/* dx = dy; for pass-through functions. */
static ad_status pass_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    for (int64_t i = 0; din[0] && i < dy->size; i++)
        ts_set(din[0], i, (beta[0] != 0.0f ? ts_get(din[0], i) : 0.0) + ts_get(dy, i));
    return AD_OK;
}

/* The identity, whose pullback uses what only a primal may: ad_save (attribute 0) or
** ad_out (attribute 1). */
static ad_status late_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return copy_out(cx, in[0], out);
}

static ad_status late_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    ad_tensor *t;
    ad_status rc = *(const int *)ad_attrs(cx)
                       ? ad_out(cx, dy->dtype, dy->ndim, dy->shape, &t)
                       : ad_save(cx, dy->dtype, dy->ndim, dy->shape, &t);
    return rc ? rc : pass_pullback(cx, dy, in, y, din, beta);
}

static void register_all(void)
{
    static const struct {
        ad_primal_fn fn;
        const char *name;
        ad_rule rule;
    } all[] = {
        {id_fn, "id_fn", {.name = "identity", .pullback = pass_pullback, .n_inputs = 1}},
        {shaped_fn, "shaped_fn", {.name = "shaped", .pullback = pass_pullback, .n_inputs = 1,
                                  .attrs_size = sizeof(out_request)}},
        {sloppy_fn, "sloppy_fn", {.name = "sloppy", .pullback = pass_pullback, .n_inputs = 1,
                                  .attrs_size = sizeof(int)}},
        {ctx_nulls_fn, "ctx_nulls_fn",
         {.name = "null prober", .pullback = pass_pullback, .n_inputs = 1}},
        {late_fn, "late_fn", {.name = "late", .pullback = late_pullback, .n_inputs = 1,
                              .attrs_size = sizeof(int)}},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        cr_assert_eq(ad_rule_register_as(all[i].fn, all[i].name, &all[i].rule, 0), AD_OK,
                     "%s", ad_last_error());
}

/* ---- a rig: w (2x3 f32, a parameter, 1..6), a tape, a gradient set ---- */

typedef struct rig {
    ad_tape *t;
    ad_tensor *w;
    ad_params *ps;
    ad_grads *gs;
    uint64_t version;
} rig;

static rig rig_open(void)
{
    register_all();
    rig r = {.w = ts_tensor(AD_F32, 2, TS_SHAPE(2, 3))};
    for (int i = 0; i < 6; i++)
        ts_set(r.w, i, i + 1);
    r.version = r.w->version;
    cr_assert_eq(ad_tape_new(&r.t), AD_OK);
    cr_assert_eq(ad_params_new(&r.ps), AD_OK);
    cr_assert_eq(ad_params_add(r.ps, r.w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r.ps, &r.gs), AD_OK);
    return r;
}

/* Closes the rig after checking that w is as it was. */
static void rig_close(rig *r)
{
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ts_get(r->w, i), i + 1.0, "w[%d] changed", i);
    cr_expect_eq(r->w->version, r->version, "w's version moved");
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tape_free(r->t);
    ad_tensor_free(r->w);
}

static ad_var sum_of(ad_tape *t, void *user)
{
    return ad_sum(t, ad_use(t, (ad_tensor *)user));
}

static int loss_calls;

static ad_var counting_loss(ad_tape *t, void *user)
{
    loss_calls++;
    return sum_of(t, user);
}

/* ---- NULL ---- */

Test(bad_input, functions_returning_void_pointers_or_numbers_take_null_quietly)
{
    ad_tape_free(NULL), ad_tape_reset(NULL), ad_tape_set_grad_enabled(NULL, 0);
    ad_tape_set_anomaly_mode(NULL, 1), ad_params_free(NULL), ad_grads_free(NULL);
    ad_grads_on_ready(NULL, NULL, NULL), ad_tensor_free(NULL), ad_tensor_touch(NULL);
    ad_rng_seed(NULL, 1);
    cr_expect_eq(ad_rng_u64(NULL), 0u);
    ad_var none = {0};
    cr_expect_not(ad_var_ok(none));
    cr_expect_null(ad_value(NULL, none));
    cr_expect_null(ad_cotangent(NULL, none));
    cr_expect_str_eq(ad_tape_error(NULL), "");
    cr_expect_eq(ad_tape_status(NULL), AD_ERR_NULL);
    cr_expect_eq(ad_tape_get_stats(NULL).nodes, 0u);
    cr_expect_eq(ad_tape_pullback_count(NULL, ad_op_tanh), 0u);
    cr_expect_eq(ad_params_count(NULL), 0);
    cr_expect_eq(ad_params_index(NULL, NULL), -1);
    cr_expect_null(ad_params_at(NULL, 0));
    cr_expect_null(ad_grads_params(NULL));
    cr_expect_null(ad_grads_get(NULL, NULL));
    cr_expect_null(ad_grads_at(NULL, 0));
    cr_expect_eq(ad_grads_global_norm(NULL), 0.0);
    cr_expect_null(ad_optim_params(NULL));
    cr_expect_eq(ad_optim_state_count(NULL), -1);
    cr_expect_null(ad_rule_find((ad_primal_fn)NULL));
    cr_expect_eq(ad_rule_total_pullbacks((ad_primal_fn)NULL), 0u);
    cr_expect_null(ad_saved(NULL));
    cr_expect_null(ad_attrs(NULL));
    cr_expect_eq(ad_ctx_saving(NULL), 0);
    cr_expect_str_eq(ad_ctx_op_name(NULL), "");
    char buf[16];
    cr_expect_str_eq(ad_tensor_describe(NULL, buf, sizeof buf), "(null)");
    cr_expect_null(ad_tensor_describe(NULL, NULL, 0));
    cr_expect(isnan(ad_tensor_get(NULL, 0)));
    cr_expect(isnan(ad_angle_degrees(NULL, NULL)));
    cr_expect_eq(ad_fail(AD_ERR_INVALID, (const char *)NULL), AD_ERR_INVALID);
    cr_expect_str_eq(ad_last_error(), "");
    cr_expect_eq(ad_set_allocator(NULL), AD_OK, "NULL restores malloc and free");
}

Test(bad_input, recording_functions_refuse_null_with_named_errors)
{
    rig r = rig_open();
    ad_var x = ad_use(NULL, r.w);
    cr_expect_not(ad_var_ok(x));
    MENTIONS(ad_last_error(), "ad_use: tape is NULL");
    cr_expect_not(ad_var_ok(ad_call(NULL, id_fn, x)));
    MENTIONS(ad_last_error(), "ad_call id_fn: tape is NULL");
    x = ad_use_named(r.t, r.w, NULL);
    cr_expect(ad_var_ok(x), "a NULL leaf name is allowed: %s", ad_tape_error(r.t));
    ts_assert_tape_failed(r.t, ad_call_as(r.t, NULL, "nothing", &x, 1, NULL, 0),
                          AD_ERR_NULL, "function is NULL", NULL);
    ad_tape_reset(r.t);
    ts_assert_tape_failed(r.t, ad_call_as(r.t, id_fn, "id_fn", NULL, 1, NULL, 0), AD_ERR_NULL,
                          "id_fn", "inputs is NULL");
    ad_tape_reset(r.t);
    ad_tensor hollow = *r.w; /* a descriptor whose data pointer was never set */
    hollow.data = NULL;
    ts_assert_tape_failed(r.t, ad_use(r.t, &hollow), AD_ERR_NULL, "hollow", "NULL data");
    EXPECT_FAIL(ad_tape_print(NULL, stdout), AD_ERR_NULL, "ad_tape_print");
    EXPECT_FAIL(ad_tape_print(r.t, NULL), AD_ERR_NULL, "ad_tape_print");
    EXPECT_FAIL(ad_tape_print_rule_counts(NULL, stdout), AD_ERR_NULL, "rule_counts");
    EXPECT_FAIL(ad_tape_print_rule_counts(r.t, NULL), AD_ERR_NULL, "rule_counts");
    EXPECT_FAIL(ad_tape_new(NULL), AD_ERR_NULL, "ad_tape_new");
    ad_dfa *no_dfa = NULL;
    ad_tape_reset(r.t);
    ts_assert_tape_failed(r.t, ad_dfa_output(r.t, no_dfa, ad_use(r.t, r.w)), AD_ERR_NULL,
                          "ad_dfa", NULL);
    rig_close(&r);
}

Test(bad_input, sweep_and_gradient_refuse_null_before_touching_anything)
{
    rig r = rig_open();
    ad_var loss = sum_of(r.t, r.w);
    EXPECT_FAIL(ad_backward(NULL, loss, r.ps, r.gs), AD_ERR_NULL, "ad_backward");
    EXPECT_FAIL(ad_backward(r.t, loss, NULL, r.gs), AD_ERR_NULL, "ad_backward");
    EXPECT_FAIL(ad_backward_ex(r.t, loss, r.ps, NULL, NULL), AD_ERR_NULL, "ad_backward");
    double value = 7.0;
    EXPECT_FAIL(ad_gradient(NULL, r.ps, counting_loss, r.w, r.gs, &value), AD_ERR_NULL, "tape");
    EXPECT_FAIL(ad_gradient(r.t, NULL, counting_loss, r.w, r.gs, &value), AD_ERR_NULL, "ps");
    EXPECT_FAIL(ad_gradient(r.t, r.ps, NULL, r.w, r.gs, &value), AD_ERR_NULL, "loss_fn");
    EXPECT_FAIL(ad_gradient(r.t, r.ps, counting_loss, r.w, NULL, &value), AD_ERR_NULL, "gs");
    cr_expect_eq(loss_calls, 0, "the loss ran despite a NULL argument");
    cr_expect_eq(value, 7.0);
    cr_expect_not_null(ad_value(r.t, loss), "a refused ad_gradient reset the tape");
    EXPECT_FAIL(ad_descent_step(NULL, r.gs, 0.1), AD_ERR_NULL, "ad_descent_step");
    EXPECT_FAIL(ad_descent_step(r.ps, NULL, 0.1), AD_ERR_NULL, "ad_descent_step");
    rig_close(&r);
}

Test(bad_input, sets_tensors_gemm_and_checker_refuse_null_with_named_errors)
{
    rig r = rig_open();
    ad_grads *gs = (ad_grads *)&r; /* a marker: must stay as it is */
    int index = 5;
    EXPECT_FAIL(ad_params_new(NULL), AD_ERR_NULL, "ad_params_new");
    EXPECT_FAIL(ad_params_add(NULL, r.w, &index), AD_ERR_NULL, "set");
    EXPECT_FAIL(ad_params_add(r.ps, NULL, &index), AD_ERR_NULL, "tensor");
    cr_expect(index == 5 && ad_params_count(r.ps) == 1, "a failed add changed something");
    EXPECT_FAIL(ad_grads_new(NULL, &gs), AD_ERR_NULL, "ad_grads_new");
    EXPECT_FAIL(ad_grads_new(r.ps, NULL), AD_ERR_NULL, "ad_grads_new");
    cr_expect_eq((void *)gs, (void *)&r, "a failed ad_grads_new wrote *out");
    EXPECT_FAIL(ad_tensor_fill(NULL, 1.0), AD_ERR_NULL, "ad_tensor_fill");
    EXPECT_FAIL(ad_tensor_copy_from(NULL, r.w), AD_ERR_NULL, "ad_tensor_copy_from");
    EXPECT_FAIL(ad_tensor_init(NULL, AD_F32, 1, TS_SHAPE(2), r.w->data), AD_ERR_NULL,
                "ad_tensor_init");
    EXPECT_FAIL(ad_gemm_tensors(NULL, 0, r.w, 1, 1.0, 0.0f, r.w), AD_ERR_NULL, "NULL");
    EXPECT_FAIL(ad_gemm_tensors(r.w, 0, r.w, 1, 1.0, 0.0f, NULL), AD_ERR_NULL, "NULL");
    EXPECT_FAIL(ad_rule_unregister((ad_primal_fn)NULL), AD_ERR_NULL, "ad_rule_unregister");
    const ad_tensor *in[1] = {NULL};
    EXPECT_FAIL(ad_rule_check(id_fn, NULL, 1, NULL, NULL), AD_ERR_NULL, "ad_rule_check");
    EXPECT_FAIL(ad_rule_check_as(NULL, "none", in, 1, NULL, NULL), AD_ERR_NULL, "fn");
    EXPECT_FAIL(ad_rule_check(id_fn, in, 1, NULL, NULL), AD_ERR_NULL, "input 0");
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    EXPECT_FAIL(ad_sf_draw_magnitudes(NULL, &rng), AD_ERR_NULL, "NULL");
    EXPECT_FAIL(ad_sf_draw_magnitudes(r.w, NULL), AD_ERR_NULL, "generator");
    EXPECT_FAIL(ad_checkpoint_load(NULL, r.ps, NULL, NULL), AD_ERR_NULL, "path");
    EXPECT_FAIL(ad_checkpoint_load("x.safetensors", NULL, NULL, NULL), AD_ERR_NULL,
                "parameter set");
    rig_close(&r);
}

Test(bad_input, context_functions_refuse_null_inside_a_primal)
{
    rig r = rig_open();
    ad_var y = ad_call(r.t, ctx_nulls_fn, ad_use(r.t, r.w));
    cr_assert(ad_var_ok(y), "%s", ad_tape_error(r.t));
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ctx_rc[i], AD_ERR_NULL, "probe %d gave %s", i, ad_status_str(ctx_rc[i]));
    rig_close(&r);
}

/* The built-in primals are public so that rules can be registered and checked for
** them; called by hand without a context they fail and leave *out alone. */
Test(bad_input, builtin_primals_called_without_a_context_fail_cleanly)
{
    ad_tensor *m = ts_tensor(AD_F32, 2, TS_SHAPE(2, 2)), *out = NULL;
    const ad_tensor *in[3] = {m, m, m};
    ad_primal_fn fns[] = {ad_op_matmul, ad_op_add, ad_op_sub, ad_op_mul, ad_op_scale,
                          ad_op_bias_add, ad_op_tanh, ad_op_relu, ad_op_sigmoid, ad_op_sum,
                          ad_op_mean, ad_op_mse, ad_op_softmax_cross_entropy,
                          ad_op_dense_fa, ad_op_dense_usf,
                          ad_op_dense_sf, ad_op_dense_kp, ad_op_dfa_output, ad_op_dfa_hidden,
                          ad_op_dfa_conv_hidden, ad_op_clamp_grad};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        cr_expect(fns[i](NULL, in, &out) != AD_OK && !out, "primal %zu", i);
    ad_tensor_free(m);
}

/* ---- ranks, sizes and dtypes ---- */

/* Records shaped_fn asking for `req`; expects `code` naming shaped_fn and `needle`,
** and no allocation on a tape that is warm (its arena has room for the node). */
static void expect_out_refused(rig *r, out_request req, ad_status code, const char *needle)
{
    ad_tape_reset(r->t);
    ad_var x = ad_use(r->t, r->w);
    ts_alloc_fail_at(0); /* zeroes the count */
    ad_var y = ad_call_attrs(r->t, shaped_fn, &req, x);
    cr_expect_eq(ts_alloc_count(), 0u, "asking for %s allocated", needle);
    ts_assert_tape_failed(r->t, y, code, "shaped_fn", needle);
}

Test(bad_input, primal_outputs_of_bad_rank_size_or_dtype_are_refused_without_allocating)
{
    ts_alloc_install();
    rig r = rig_open();
    cr_assert(ad_var_ok(ad_call(r.t, id_fn, ad_use(r.t, r.w)))); /* warms the arena */
    expect_out_refused(&r, (out_request){AD_F32, 5, {1, 1, 1, 1, 1}}, AD_ERR_RANK, "rank 5");
    expect_out_refused(&r, (out_request){AD_F32, 2, {BIG, BIG}}, AD_ERR_OVERFLOW, "overflow");
    expect_out_refused(&r, (out_request){AD_F64, 1, {INT64_MAX}}, AD_ERR_OVERFLOW, "overflow");
    expect_out_refused(&r, (out_request){AD_F32, 2, {4, -3}}, AD_ERR_INVALID, "-3");
    expect_out_refused(&r, (out_request){(ad_dtype)7, 1, {4}}, AD_ERR_INVALID, "dtype 7");
    rig_close(&r);
    ts_alloc_uninstall();
}

Test(bad_input, tensors_of_rank_five_or_overflowing_size_are_refused_without_allocating)
{
    ts_alloc_install();
    float data[4] = {1, 2, 3, 4};
    ad_tensor view = {.ndim = 3, .size = 77}, copy = view, *out = &view;
    ts_alloc_fail_at(0);
    cr_expect_eq(ad_tensor_new(AD_F32, 2, TS_SHAPE(BIG, BIG), &out), AD_ERR_OVERFLOW);
    cr_expect_eq(ts_alloc_count(), 0u, "an overflowing ad_tensor_new allocated");
    cr_expect_eq(out, &view);
    EXPECT_FAIL(ad_tensor_init(&view, AD_F32, 5, TS_SHAPE(1, 1, 1, 1, 4), data), AD_ERR_RANK,
                "rank 5");
    EXPECT_FAIL(ad_tensor_init(&view, AD_F32, 2, TS_SHAPE(BIG, BIG), data), AD_ERR_OVERFLOW,
                "ad_tensor_init");
    cr_expect_eq(ad_tensor_init(&view, AD_F32, 1, TS_SHAPE(INT64_MIN), data), AD_ERR_INVALID);
    cr_expect(memcmp(&view, &copy, sizeof view) == 0, "a failed ad_tensor_init wrote *t");
    cr_expect_eq(data[3], 4.0f);
    ts_alloc_uninstall();

    rig r = rig_open();
    ad_tensor five = *r.w, lying = *r.w, odd = *r.w;
    five.ndim = 5;
    lying.size = 5;
    odd.dtype = (ad_dtype)9;
    ts_assert_tape_failed(r.t, ad_use(r.t, &five), AD_ERR_RANK, "ad_use", "rank 5");
    ad_tape_reset(r.t);
    ts_assert_tape_failed(r.t, ad_use(r.t, &lying), AD_ERR_INVALID, "lying", "size");
    ad_tape_reset(r.t);
    ts_assert_tape_failed(r.t, ad_use(r.t, &odd), AD_ERR_INVALID, "dtype 9", NULL);
    rig_close(&r);
}

Test(bad_input, dtype_mismatches_are_named_and_change_nothing)
{
    rig r = rig_open();
    ad_tensor *d = ts_tensor(AD_F64, 2, TS_SHAPE(3, 2)), *c = ts_tensor(AD_F32, 2, TS_SHAPE(2, 2));
    ad_tensor *flabels = ts_tensor(AD_F32, 1, TS_SHAPE(2));
    ts_set(c, 0, 9.0);
    EXPECT_FAIL(ad_gemm_tensors(r.w, 0, d, 0, 1.0, 0.0f, c), AD_ERR_DTYPE, "f64");
    cr_expect_eq(ts_get(c, 0), 9.0, "a refused gemm wrote C");
    ts_assert_tape_failed(r.t, ad_softmax_cross_entropy(r.t, ad_use(r.t, r.w),
                                                        ad_use(r.t, flabels)),
                          AD_ERR_DTYPE, "ad_softmax_cross_entropy", "f32");
    ad_tape_reset(r.t);
    ts_assert_tape_failed(r.t, ad_mse(r.t, ad_use(r.t, r.w), ad_use(r.t, d)), AD_ERR_DTYPE,
                          "ad_mse", "3x2 f64");
    ad_tensor odd = *r.w;
    odd.dtype = (ad_dtype)9;
    cr_expect_eq(ad_params_add(r.ps, &odd, NULL), AD_ERR_DTYPE);
    cr_expect_eq(ad_params_count(r.ps), 1);
    ad_tensor_free(d);
    ad_tensor_free(c);
    ad_tensor_free(flabels);
    rig_close(&r);
}

/* ---- handles ---- */

Test(bad_input, poisoned_and_foreign_handles_are_bad_handles_naming_the_slot)
{
    rig r = rig_open();
    ad_var none = {0};
    ts_assert_tape_failed(r.t, ad_add(r.t, ad_use(r.t, r.w), none), AD_ERR_BAD_HANDLE,
                          "input 1", "poisoned");
    ad_tape_reset(r.t);
    EXPECT_FAIL(ad_backward(r.t, none, r.ps, r.gs), AD_ERR_BAD_HANDLE, "poisoned");
    ad_tape *other;
    cr_assert_eq(ad_tape_new(&other), AD_OK);
    ad_var foreign = ad_use(other, r.w);
    ts_assert_tape_failed(r.t, ad_add(r.t, ad_use(r.t, r.w), foreign), AD_ERR_BAD_HANDLE,
                          "input 1", "another tape");
    cr_expect_eq(ad_tape_status(other), AD_OK, "the other tape was poisoned");
    ad_tape_free(other);
    ad_tape_reset(r.t);
    ad_var stale = ad_use(r.t, r.w);
    ad_tape *freed;
    cr_assert_eq(ad_tape_new(&freed), AD_OK);
    ad_var dead = ad_use(freed, r.w);
    ad_tape_free(freed); /* a new tape may reuse its memory, never its generation */
    cr_assert_eq(ad_tape_new(&freed), AD_OK);
    ts_assert_tape_failed(freed, ad_tanh(freed, dead), AD_ERR_BAD_HANDLE, "ad_tanh", NULL);
    ad_tape_free(freed);
    ad_tape_reset(r.t);
    cr_expect_null(ad_cotangent(r.t, stale), "a cotangent from before the reset");
    rig_close(&r);
}

/* A loss callback that keeps a handle from the previous step: the classic misuse. */
typedef struct cached {
    ad_tensor *w;
    ad_var leaf;
    int step;
} cached;

static ad_var caching_loss(ad_tape *t, void *user)
{
    cached *c = user;
    if (c->step++ == 0)
        c->leaf = ad_use(t, c->w);
    return ad_sum(t, ad_tanh(t, c->leaf));
}

Test(bad_input, handles_kept_from_an_earlier_step_are_refused)
{
    rig r = rig_open();
    cached c = {.w = r.w};
    cr_assert_eq(ad_gradient(r.t, r.ps, caching_loss, &c, r.gs, NULL), AD_OK, "%s",
                 ad_last_error());
    EXPECT_FAIL(ad_gradient(r.t, r.ps, caching_loss, &c, r.gs, NULL), AD_ERR_BAD_HANDLE,
                "ad_tanh");
    MENTIONS(ad_last_error(), "before a reset");
    rig_close(&r);
}

/* ---- what a primal and a pullback may ask of their context ---- */

Test(bad_input, primal_that_forgets_ad_out_returns_another_tensor_or_asks_twice_is_refused)
{
    rig r = rig_open();
    const struct {
        int how;
        ad_status code;
        const char *needle;
    } cases[] = {{FORGETS_OUT, AD_ERR_BAD_RULE, "did not return the tensor from ad_out"},
                 {RETURNS_ITS_OWN, AD_ERR_BAD_RULE, "did not return the tensor from ad_out"},
                 {OUT_TWICE, AD_ERR_INVALID, "ad_out: sloppy_fn asked for its output twice"}};
    for (int i = 0; i < 3; i++) {
        ad_tape_reset(r.t);
        ts_assert_tape_failed(r.t, ad_call_attrs(r.t, sloppy_fn, &cases[i].how,
                                                 ad_use(r.t, r.w)),
                              cases[i].code, "sloppy_fn (rule \"sloppy\")", cases[i].needle);
        cr_expect_eq(ad_tape_get_stats(r.t).nodes, 0u, "case %d recorded a node", i);
    }
    rig_close(&r);
}

Test(bad_input, ad_save_or_ad_out_in_a_pullback_fails_the_sweep_naming_the_node)
{
    rig r = rig_open();
    int use_out = 0;
    ad_var loss = ad_sum(r.t, ad_call_attrs(r.t, late_fn, &use_out, ad_use(r.t, r.w)));
    cr_assert(ad_var_ok(loss), "%s", ad_tape_error(r.t));
    EXPECT_FAIL(ad_backward(r.t, loss, r.ps, r.gs), AD_ERR_INVALID,
                "pullback of late_fn (rule \"late\", node 0)");
    MENTIONS(ad_last_error(), "ad_save: called outside a primal");
    ad_tape_reset(r.t);
    use_out = 1;
    loss = ad_sum(r.t, ad_call_attrs(r.t, late_fn, &use_out, ad_use(r.t, r.w)));
    EXPECT_FAIL(ad_backward(r.t, loss, r.ps, r.gs), AD_ERR_INVALID,
                "pullback of late_fn (rule \"late\", node 0)");
    MENTIONS(ad_last_error(), "ad_out: late_fn asked for its output outside its primal");
    rig_close(&r);
}
