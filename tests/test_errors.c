/*
** test_errors.c: every status code, and what each failure leaves behind: the code,
** a message naming what went wrong, and the caller's data as it was. Out-of-memory
** loops fail allocation 1, 2, 3, ... until the operation succeeds.
**
** Codes triggered elsewhere: AD_ERR_NO_RULE (at record time), AD_ERR_RULE_EXISTS,
** AD_ERR_BAD_RULE (test_registry.c); AD_ERR_STALE_INPUT, AD_ERR_NO_GRAD, AD_ERR_PULLBACK (test_tape.c).
*/
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* ---- user functions: one that accepts only rank 2, one that refuses, one whose
** pullback refuses, one whose rule is wrong ---- */

static int primal_runs;

static ad_status copy_into(ad_ctx *cx, const ad_tensor *x, double k, ad_tensor **out)
{
    ad_status rc = ad_out(cx, x->dtype, x->ndim, x->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < x->size; i++)
        ts_set(*out, i, k * ts_get(x, i));
    return rc;
}

static ad_status rank2_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    primal_runs++;
    return copy_into(cx, in[0], 1.0, out);
}

static ad_status refusing_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    (void)cx, (void)in, (void)out;
    primal_runs++;
    return ad_fail(AD_ERR_INVALID, "custom reason");
}

static ad_status grumpy_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return copy_into(cx, in[0], -1.0, out);
}

static ad_status double_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return copy_into(cx, in[0], 2.0, out);
}

/* dx = dy: right for rank2_fn, wrong for double_fn (dx = 2 dy). */
static ad_status copy_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                               const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    for (int64_t i = 0; din[0] && i < dy->size; i++)
        ts_set(din[0], i, (beta[0] != 0.0f ? ts_get(din[0], i) : 0.0) + ts_get(dy, i));
    return AD_OK;
}

static ad_status failing_pullback(ad_ctx *cx, const ad_tensor *dy,
                                  const ad_tensor *const in[], const ad_tensor *y,
                                  ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)dy, (void)in, (void)y, (void)din, (void)beta;
    return ad_fail(AD_ERR_SHAPE, "pullback says no");
}

static const ad_rule rank2_rule = {
    .name = "rank-2 copy", .pullback = copy_pullback, .n_inputs = 1,
    .inputs = {{0, AD_RANK(2)}}};
static const ad_rule refusing_rule = {
    .name = "refusing rule", .pullback = copy_pullback, .n_inputs = 1};
static const ad_rule grumpy_rule = {
    .name = "grumpy rule", .pullback = failing_pullback, .n_inputs = 1};
static const ad_rule wrong_rule = {
    .name = "double (wrong)", .pullback = copy_pullback, .n_inputs = 1};

static void register_all(void)
{
    cr_assert_eq(ad_rule_register(rank2_fn, &rank2_rule), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_rule_register(refusing_fn, &refusing_rule), AD_OK);
    cr_assert_eq(ad_rule_register(grumpy_fn, &grumpy_rule), AD_OK);
    cr_assert_eq(ad_rule_register(double_fn, &wrong_rule), AD_OK);
}

/* A 2x3 float64 tensor holding 1..6. */
static ad_tensor *six(void)
{
    ad_tensor *t = ts_tensor(AD_F64, 2, TS_SHAPE(2, 3));
    for (int i = 0; i < 6; i++)
        ts_set(t, i, i + 1);
    return t;
}

/* ---- codes and messages ---- */

/* Every code with the class the header puts it in, written out by hand here. */
static const struct {
    ad_status code;
    int cls;
} all_codes[] = {
    {AD_OK, AD_CLASS_OK},
    {AD_ERR_NOMEM, AD_CLASS_MEMORY},
    {AD_ERR_NULL, AD_CLASS_ARGUMENT}, {AD_ERR_INVALID, AD_CLASS_ARGUMENT},
    {AD_ERR_SHAPE, AD_CLASS_ARGUMENT}, {AD_ERR_DTYPE, AD_CLASS_ARGUMENT},
    {AD_ERR_RANK, AD_CLASS_ARGUMENT}, {AD_ERR_OVERFLOW, AD_CLASS_ARGUMENT},
    {AD_ERR_ARITY, AD_CLASS_ARGUMENT}, {AD_ERR_BAD_HANDLE, AD_CLASS_ARGUMENT},
    {AD_ERR_NOT_SCALAR, AD_CLASS_ARGUMENT}, {AD_ERR_ATTRS, AD_CLASS_ARGUMENT},
    {AD_ERR_NO_RULE, AD_CLASS_RULE}, {AD_ERR_RULE_EXISTS, AD_CLASS_RULE},
    {AD_ERR_BAD_RULE, AD_CLASS_RULE}, {AD_ERR_CHECK_FAILED, AD_CLASS_RULE},
    {AD_ERR_PULLBACK, AD_CLASS_RULE},
    {AD_ERR_STALE_INPUT, AD_CLASS_SWEEP}, {AD_ERR_NO_GRAD, AD_CLASS_SWEEP},
    {AD_ERR_NONFINITE, AD_CLASS_SWEEP}, {AD_ERR_REUSED, AD_CLASS_SWEEP},
    {AD_ERR_IO, AD_CLASS_FILE}, {AD_ERR_TRUNCATED, AD_CLASS_FILE},
    {AD_ERR_BAD_MAGIC, AD_CLASS_FILE}, {AD_ERR_COUNT_MISMATCH, AD_CLASS_FILE},
    {AD_ERR_HEADER_TOO_LARGE, AD_CLASS_FILE}, {AD_ERR_JSON, AD_CLASS_FILE},
    {AD_ERR_UNKNOWN_DTYPE, AD_CLASS_FILE}, {AD_ERR_DUPLICATE_NAME, AD_CLASS_FILE},
    {AD_ERR_BAD_NAME, AD_CLASS_FILE}, {AD_ERR_METADATA, AD_CLASS_FILE},
    {AD_ERR_OFFSETS, AD_CLASS_FILE}, {AD_ERR_TRAILING_DATA, AD_CLASS_FILE},
    {AD_ERR_MISSING_TENSOR, AD_CLASS_FILE}, {AD_ERR_EXTRA_TENSOR, AD_CLASS_FILE},
    {AD_ERR_UNSUPPORTED_DTYPE, AD_CLASS_FILE},
    {AD_ERR_MPI, AD_CLASS_MPI}, {AD_ERR_PEER_FAILED, AD_CLASS_MPI},
    {AD_ERR_MODEL_MISMATCH, AD_CLASS_MPI},
};
enum { N_CODES = sizeof all_codes / sizeof all_codes[0] };

Test(errors, every_status_code_has_its_own_text)
{
    for (int c = 0; c < N_CODES; c++) {
        const char *s = ad_status_str(all_codes[c].code);
        cr_assert_not_null(s);
        cr_expect(s[0] != '\0' && strcmp(s, "unknown status") != 0, "code %d: \"%s\"",
                  (int)all_codes[c].code, s);
        for (int d = 0; d < c; d++)
            cr_expect(strcmp(s, ad_status_str(all_codes[d].code)) != 0, "codes %d and %d "
                      "share \"%s\"", (int)all_codes[d].code, (int)all_codes[c].code, s);
    }
    cr_expect_str_eq(ad_status_str((ad_status)-1), "unknown status");
    cr_expect_str_eq(ad_status_str((ad_status)AD_STATUS_CODE(AD_CLASS_FILE, 200)),
                     "unknown status");
}

/* Only the values above are codes: a scan over every class and number finds them all,
** so none is missing from the table of this test. */
Test(errors, the_codes_above_are_all_the_codes)
{
    int known = 0;
    for (int cls = 0; cls < 256; cls++)
        for (int n = 0; n < 256; n++)
            known += ad_status_class((ad_status)AD_STATUS_CODE(cls, n)) >= 0;
    cr_expect_eq(known, N_CODES, "%d values are codes, the table has %d", known, N_CODES);
}

Test(errors, a_caller_can_test_the_class_of_a_code)
{
    for (int c = 0; c < N_CODES; c++) {
        cr_expect_eq(ad_status_class(all_codes[c].code), all_codes[c].cls, "code %s",
                     ad_status_str(all_codes[c].code));
        cr_expect_str_neq(ad_status_class_str(all_codes[c].cls), "unknown class");
    }
    cr_expect_eq(ad_status_class((ad_status)-1), -1);
    cr_expect_eq(ad_status_class((ad_status)AD_STATUS_CODE(AD_CLASS_RULE, 99)), -1);
    cr_expect_str_eq(ad_status_class_str(AD_CLASS_FILE), "file");
    cr_expect_str_eq(ad_status_class_str(7), "unknown class");
    cr_expect_str_eq(ad_status_class_str(-1), "unknown class");
    /* what the grouping is for: one test for every way a file can be bad */
    ad_tensor *x = NULL;
    ad_status rc = ad_idx_read("/nonexistent/adtape-test.idx", &x);
    cr_expect_eq(ad_status_class(rc), AD_CLASS_FILE, "%s", ad_last_error());
    cr_expect_null(x);
}

Test(errors, fail_returns_its_code_and_sets_a_truncated_message)
{
    cr_expect_eq(ad_fail(AD_ERR_SHAPE, "op %s: %d", "mine", 42), AD_ERR_SHAPE);
    cr_expect_str_eq(ad_last_error(), "op mine: 42");
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_expect_eq(ad_fail(AD_ERR_INVALID, "%s", big), AD_ERR_INVALID);
    cr_expect_eq(strlen(ad_last_error()), 511u);
}

/* ---- tensors ---- */

Test(errors, tensor_new_refuses_bad_shapes_and_leaves_out_unchanged)
{
    ad_tensor marker;
    ad_tensor *out = &marker;
    const int64_t big = (int64_t)1 << 40;
    cr_expect_eq(ad_tensor_new(AD_F32, 5, TS_SHAPE(1, 1, 1, 1, 1), &out), AD_ERR_RANK);
    EXPECT_MENTIONS(ad_last_error(), "ad_tensor_new", "rank 5");
    cr_expect_eq(ad_tensor_new(AD_F32, -1, NULL, &out), AD_ERR_RANK);
    cr_expect_eq(ad_tensor_new(AD_F32, 2, TS_SHAPE(3, -2), &out), AD_ERR_INVALID);
    EXPECT_MENTIONS(ad_last_error(), "ad_tensor_new", "negative", "-2");
    cr_expect_eq(ad_tensor_new(AD_F32, 2, TS_SHAPE(big, big), &out), AD_ERR_OVERFLOW);
    EXPECT_MENTIONS(ad_last_error(), "ad_tensor_new", "overflow");
    cr_expect_eq(ad_tensor_new(AD_F64, 1, TS_SHAPE(INT64_MAX / 4), &out), AD_ERR_OVERFLOW);
    cr_expect_eq(ad_tensor_new((ad_dtype)9, 1, TS_SHAPE(2), &out), AD_ERR_INVALID);
    cr_expect_eq(ad_tensor_new(AD_F32, 2, NULL, &out), AD_ERR_NULL);
    cr_expect_eq(out, &marker, "a failed ad_tensor_new wrote *out");
    cr_expect_eq(ad_tensor_new(AD_F32, 1, TS_SHAPE(2), NULL), AD_ERR_NULL);
    EXPECT_MENTIONS(ad_last_error(), "ad_tensor_new", "out");

    ad_tensor view = {.ndim = 3, .size = 77};
    ad_tensor copy = view;
    float data[4];
    cr_expect_eq(ad_tensor_init(&view, AD_F32, 1, TS_SHAPE(-4), data), AD_ERR_INVALID);
    cr_expect_eq(ad_tensor_init(&view, AD_F32, 1, TS_SHAPE(4), NULL), AD_ERR_NULL);
    cr_expect(memcmp(&view, &copy, sizeof view) == 0, "a failed ad_tensor_init wrote *t");
}

Test(errors, copy_from_mismatch_leaves_the_destination_unchanged)
{
    ad_tensor *dst = six();
    ad_tensor *other_dtype = ts_tensor(AD_F32, 2, TS_SHAPE(2, 3));
    ad_tensor *other_shape = ts_tensor(AD_F64, 2, TS_SHAPE(3, 2));
    uint64_t version = dst->version;
    cr_expect_eq(ad_tensor_copy_from(dst, other_dtype), AD_ERR_DTYPE);
    EXPECT_MENTIONS(ad_last_error(), "f32", "f64");
    cr_expect_eq(ad_tensor_copy_from(dst, other_shape), AD_ERR_SHAPE);
    EXPECT_MENTIONS(ad_last_error(), "3x2 f64", "2x3 f64");
    cr_expect_eq(ad_tensor_copy_from(dst, NULL), AD_ERR_NULL);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ts_get(dst, i), i + 1.0, "dst[%d] changed", i);
    cr_expect_eq(dst->version, version, "a failed copy bumped the version");
    ad_tensor_free(dst);
    ad_tensor_free(other_dtype);
    ad_tensor_free(other_shape);
}

/* ---- recording ---- */

Test(errors, use_of_a_null_tensor_poisons_the_tape_with_null)
{
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_expect_not(ad_var_ok(ad_use(t, NULL)));
    cr_expect_eq(ad_tape_status(t), AD_ERR_NULL);
    EXPECT_MENTIONS(ad_tape_error(t), "ad_use", "NULL");
    ad_tape_free(t);
}

Test(errors, call_with_a_wrong_number_of_inputs_fails_with_arity)
{
    register_all();
    ad_tape *t;
    ad_tensor *w = six();
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var x = ad_use(t, w);
    cr_expect_not(ad_var_ok(ad_call_as(t, rank2_fn, "rank2_fn", &x, 0, NULL, 0)));
    cr_expect_eq(ad_tape_status(t), AD_ERR_ARITY);
    EXPECT_MENTIONS(ad_tape_error(t), "rank2_fn", "0 inputs");
    ad_tape_reset(t);
    x = ad_use(t, w);
    cr_expect_not(ad_var_ok(ad_call(t, rank2_fn, x, x, x, x, x, x, x, x, x)));
    cr_expect_eq(ad_tape_status(t), AD_ERR_ARITY);
    EXPECT_MENTIONS(ad_tape_error(t), "rank2_fn", "9 inputs");
    ad_tape_reset(t);
    x = ad_use(t, w);
    cr_expect_not(ad_var_ok(ad_call(t, rank2_fn, x, x)));
    cr_expect_eq(ad_tape_status(t), AD_ERR_ARITY);
    EXPECT_MENTIONS(ad_tape_error(t), "rank2_fn", "rank-2 copy", "2 inputs", "2x3 f64");
    cr_expect_eq(primal_runs, 0, "the primal ran despite a wrong arity");
    ad_tape_free(t);
    ad_tensor_free(w);
}

Test(errors, rule_refuses_a_rank_it_does_not_accept_naming_the_op)
{
    register_all();
    ad_tape *t;
    ad_tensor *v = ts_tensor(AD_F64, 1, TS_SHAPE(6)), *m = six();
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_expect_not(ad_var_ok(ad_call(t, rank2_fn, ad_use(t, v))));
    cr_expect_eq(ad_tape_status(t), AD_ERR_RANK);
    EXPECT_MENTIONS(ad_tape_error(t), "rank2_fn", "rank-2 copy", "rank 1");
    cr_expect_eq(primal_runs, 0, "the primal ran on a rank it does not accept");
    ad_tape_reset(t);
    cr_expect(ad_var_ok(ad_call(t, rank2_fn, ad_use(t, m))), "%s", ad_tape_error(t));
    cr_expect_eq(primal_runs, 1);
    ad_tape_free(t);
    ad_tensor_free(v);
    ad_tensor_free(m);
}

Test(errors, rule_refuses_dtypes_it_does_not_accept)
{
    ad_tape *t;
    ad_tensor *labels = ts_tensor(AD_I32, 2, TS_SHAPE(2, 3));
    ad_tensor *a = six(), *b = ts_tensor(AD_F32, 2, TS_SHAPE(2, 3));
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_expect_not(ad_var_ok(ad_tanh(t, ad_use(t, labels))));
    cr_expect_eq(ad_tape_status(t), AD_ERR_DTYPE);
    EXPECT_MENTIONS(ad_tape_error(t), "ad_tanh", "i32");
    ad_tape_reset(t);
    cr_expect_not(ad_var_ok(ad_add(t, ad_use(t, a), ad_use(t, b))));
    cr_expect_eq(ad_tape_status(t), AD_ERR_DTYPE);
    EXPECT_MENTIONS(ad_tape_error(t), "ad_add", "2x3 f64", "2x3 f32");
    ad_tape_free(t);
    ad_tensor_free(labels);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

Test(errors, primal_failure_reports_op_rule_and_its_own_reason)
{
    register_all();
    ad_tape *t;
    ad_params *ps;
    ad_grads *gs;
    ad_tensor *w = six();
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    ad_var loss = ad_sum(t, ad_call(t, refusing_fn, ad_use(t, w)));
    cr_expect_not(ad_var_ok(loss));
    cr_expect_eq(ad_tape_status(t), AD_ERR_INVALID);
    EXPECT_MENTIONS(ad_tape_error(t), "refusing_fn", "refusing rule", "custom reason");
    cr_expect_eq(ad_backward(t, loss, ps, gs), AD_ERR_INVALID);
    EXPECT_MENTIONS(ad_last_error(), "refusing_fn", "refusing rule", "custom reason");
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tape_free(t);
    ad_tensor_free(w);
}

/* ---- the sweep ---- */

typedef struct sweep_rig {
    ad_tape *t;
    ad_tensor *w;
    ad_params *ps;
    ad_grads *gs;
} sweep_rig;

static sweep_rig rig_open(void)
{
    sweep_rig r = {.w = six()};
    cr_assert_eq(ad_tape_new(&r.t), AD_OK);
    cr_assert_eq(ad_params_new(&r.ps), AD_OK);
    cr_assert_eq(ad_params_add(r.ps, r.w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r.ps, &r.gs), AD_OK);
    return r;
}

static void rig_close(sweep_rig *r)
{
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tape_free(r->t);
    ad_tensor_free(r->w);
}

/* w holds 1..6 at version `version`. */
static void expect_w_untouched(const sweep_rig *r, uint64_t version)
{
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ts_get(r->w, i), i + 1.0, "w[%d] changed", i);
    cr_expect_eq(r->w->version, version, "w's version moved");
}

Test(errors, pullback_failure_is_returned_by_backward_naming_the_op)
{
    register_all();
    sweep_rig r = rig_open();
    uint64_t version = r.w->version;
    ad_var loss = ad_sum(r.t, ad_call(r.t, grumpy_fn, ad_use(r.t, r.w)));
    cr_assert(ad_var_ok(loss), "%s", ad_tape_error(r.t));
    cr_expect_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_ERR_SHAPE);
    EXPECT_MENTIONS(ad_last_error(), "grumpy_fn", "grumpy rule", "pullback says no");
    expect_w_untouched(&r, version);
    rig_close(&r);
}

Test(errors, loss_that_is_not_a_float_scalar_fails_with_not_scalar)
{
    sweep_rig r = rig_open();
    ad_tensor *label = ts_tensor(AD_I32, 0, NULL);
    cr_expect_eq(ad_backward(r.t, ad_tanh(r.t, ad_use(r.t, r.w)), r.ps, r.gs),
                 AD_ERR_NOT_SCALAR);
    EXPECT_MENTIONS(ad_last_error(), "2x3 f64", "rank-0");
    cr_expect_eq(ad_backward(r.t, ad_use(r.t, label), r.ps, r.gs), AD_ERR_NOT_SCALAR);
    EXPECT_MENTIONS(ad_last_error(), "scalar i32");
    ad_tensor_free(label);
    rig_close(&r);
}

Test(errors, loss_from_another_tape_fails_with_bad_handle)
{
    sweep_rig r = rig_open();
    ad_tape *other;
    cr_assert_eq(ad_tape_new(&other), AD_OK);
    ad_var loss = ad_sum(other, ad_use(other, r.w));
    cr_assert(ad_var_ok(loss));
    cr_expect_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_ERR_BAD_HANDLE);
    EXPECT_MENTIONS(ad_last_error(), "another tape");
    cr_expect_null(ad_grads_get(r.gs, r.w));
    ad_tape_free(other);
    rig_close(&r);
}

Test(errors, grads_made_for_another_parameter_set_are_refused_with_invalid)
{
    sweep_rig r = rig_open();
    ad_params *ps2;
    ad_grads *gs2;
    cr_assert_eq(ad_params_new(&ps2), AD_OK);
    cr_assert_eq(ad_params_add(ps2, r.w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps2, &gs2), AD_OK);
    ad_var loss = ad_sum(r.t, ad_use(r.t, r.w));
    cr_assert_eq(ad_backward(r.t, loss, ps2, gs2), AD_OK, "%s", ad_last_error());
    uint64_t version = r.w->version;
    cr_expect_eq(ad_backward(r.t, loss, r.ps, gs2), AD_ERR_INVALID);
    EXPECT_MENTIONS(ad_last_error(), "another parameter set");
    cr_expect_eq(ad_descent_step(r.ps, gs2, 0.5), AD_ERR_INVALID);
    EXPECT_MENTIONS(ad_last_error(), "ad_descent_step", "another parameter set");
    expect_w_untouched(&r, version);
    ad_grads_free(gs2);
    ad_params_free(ps2);
    rig_close(&r);
}

Test(errors, adding_an_int32_parameter_fails_with_dtype)
{
    ad_params *ps;
    ad_tensor *labels = ts_tensor(AD_I32, 1, TS_SHAPE(4));
    int index = 77;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_expect_eq(ad_params_add(ps, labels, &index), AD_ERR_DTYPE);
    EXPECT_MENTIONS(ad_last_error(), "ad_params_add", "i32");
    cr_expect_eq(index, 77, "a failed add wrote *index");
    cr_expect_eq(ad_params_count(ps), 0);
    cr_expect_eq(ad_params_index(ps, labels), -1);
    ad_params_free(ps);
    ad_tensor_free(labels);
}

Test(errors, rule_check_catches_a_pullback_that_is_not_the_gradient)
{
    register_all();
    ad_tensor *x = six();
    const ad_tensor *in[1] = {x};
    cr_expect_eq(ad_rule_check(double_fn, in, 1, NULL, NULL), AD_ERR_CHECK_FAILED);
    EXPECT_MENTIONS(ad_last_error(), "double (wrong)");
    cr_expect_eq(ad_rule_check(rank2_fn, in, 1, NULL, NULL), AD_OK, "%s", ad_last_error());
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ts_get(x, i), i + 1.0, "the checker changed its input");
    ad_tensor_free(x);
}

/* ---- out of memory and the allocation hooks ---- */

static void *plain_malloc(size_t size, void *user)
{
    (void)user;
    return malloc(size);
}

static void plain_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

Test(errors, allocator_with_a_null_hook_is_refused_and_the_old_one_kept)
{
    ts_alloc_install();
    const ad_allocator partial[2] = {{NULL, plain_free, NULL}, {plain_malloc, NULL, NULL}};
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(ad_set_allocator(&partial[i]), AD_ERR_INVALID, "hook %d missing", i);
        EXPECT_MENTIONS(ad_last_error(), "ad_set_allocator");
    }
    uint64_t before = ts_alloc_count();
    ad_tensor *t = ts_tensor(AD_F32, 1, TS_SHAPE(3));
    cr_expect_gt(ts_alloc_count(), before, "a refused allocator replaced the counting one");
    ad_tensor_free(t);
    ts_alloc_uninstall();
}

/*
** Runs attempt(ctx, n) for n = 1, 2, 3, ... until it succeeds. The attempt fails
** allocation n of its operation and cleans up after itself; every failure must be
** AD_ERR_NOMEM with a message, and leave as many allocations live as before.
*/
typedef ad_status (*oom_attempt)(void *ctx, uint64_t n);

static void oom_loop(oom_attempt attempt, void *ctx, const char *what)
{
    uint64_t n = 1;
    for (;; n++) {
        int64_t before = ts_alloc_outstanding();
        ad_status rc = attempt(ctx, n);
        ts_alloc_fail_at(0);
        cr_assert_eq(ts_alloc_outstanding(), before, "%s, failing allocation %llu: "
                     "%lld left live", what, (unsigned long long)n,
                     (long long)(ts_alloc_outstanding() - before));
        if (rc == AD_OK)
            break;
        cr_assert_eq(rc, AD_ERR_NOMEM, "%s, failing allocation %llu: %s", what,
                     (unsigned long long)n, ad_last_error());
        EXPECT_MENTIONS(ad_last_error(), "out of memory");
        cr_assert_lt(n, 50u, "%s never succeeds", what);
    }
    cr_expect_gt(n, 1u, "%s allocated nothing, so no failure was tested", what);
}

static ad_status attempt_tape_new(void *ctx, uint64_t n)
{
    ad_tape *marker = ctx, *t = marker;
    ts_alloc_fail_at(n);
    ad_status rc = ad_tape_new(&t);
    ts_alloc_fail_at(0);
    if (rc == AD_OK)
        ad_tape_free(t);
    else
        cr_expect_eq(t, marker, "a failed ad_tape_new wrote *out");
    return rc;
}

Test(errors, out_of_memory_in_tape_new_is_clean)
{
    ts_alloc_install();
    int marker;
    oom_loop(attempt_tape_new, &marker, "ad_tape_new");
    ts_alloc_uninstall();
}

/* loss = mse(tanh(x W'), y) with W a parameter; the tensors' contents are kept in
** `copy` to show that no failure touches them. */
typedef struct oom_model {
    ad_tensor *x, *w, *y;
    ad_params *ps;
    ad_grads *gs;
    float *copy[3], *want;
    uint64_t version[3];
} oom_model;

static void oom_model_open(oom_model *m, int64_t n, int64_t k)
{
    uint64_t seed = 11;
    m->x = ts_tensor(AD_F32, 2, TS_SHAPE(n, k));
    m->w = ts_tensor(AD_F32, 2, TS_SHAPE(k, k));
    m->y = ts_tensor(AD_F32, 2, TS_SHAPE(n, k));
    ad_tensor *all[3] = {m->x, m->w, m->y};
    for (int j = 0; j < 3; j++) {
        ts_fill_uniform(all[j], &seed, -1.0, 1.0);
        m->copy[j] = malloc((size_t)all[j]->size * sizeof(float));
        cr_assert_not_null(m->copy[j]);
        memcpy(m->copy[j], all[j]->data, (size_t)all[j]->size * sizeof(float));
        m->version[j] = all[j]->version;
    }
    cr_assert_eq(ad_params_new(&m->ps), AD_OK);
    cr_assert_eq(ad_params_add(m->ps, m->w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(m->ps, &m->gs), AD_OK);
    m->want = NULL;
}

static void oom_model_close(oom_model *m)
{
    ad_tensor *all[3] = {m->x, m->w, m->y};
    for (int j = 0; j < 3; j++) {
        cr_expect(memcmp(all[j]->data, m->copy[j], (size_t)all[j]->size * sizeof(float)) == 0,
                  "tensor %d's data changed", j);
        cr_expect_eq(all[j]->version, m->version[j], "tensor %d's version moved", j);
        ad_tensor_free(all[j]);
        free(m->copy[j]);
    }
    free(m->want);
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
}

static ad_var oom_record(ad_tape *t, oom_model *m)
{
    ad_var x = ad_use(t, m->x), w = ad_use(t, m->w);
    return ad_mse(t, ad_tanh(t, ad_matmul(t, x, w, 0, 1)), ad_use(t, m->y));
}

static ad_status attempt_recording(void *ctx, uint64_t n)
{
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ts_alloc_fail_at(n);
    ad_var loss = oom_record(t, ctx);
    ts_alloc_fail_at(0);
    ad_status rc = ad_tape_status(t);
    cr_expect_eq(ad_var_ok(loss), rc == AD_OK, "the loss handle does not match the status");
    if (rc)
        EXPECT_MENTIONS(ad_tape_error(t), "out of memory");
    ad_tape_free(t);
    return rc;
}

Test(errors, out_of_memory_while_recording_poisons_the_tape_cleanly)
{
    ts_alloc_install();
    cr_assert_not_null(ad_rule_find(ad_op_matmul)); /* seeds the built-in rules */
    oom_model m;
    oom_model_open(&m, 4, 3);
    oom_loop(attempt_recording, &m, "recording");
    oom_model_close(&m);
    ts_alloc_uninstall();
}

static ad_status attempt_backward(void *ctx, uint64_t n)
{
    oom_model *m = ctx;
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var loss = oom_record(t, m);
    cr_assert(ad_var_ok(loss), "%s", ad_tape_error(t));
    ts_alloc_fail_at(n);
    ad_status rc = ad_backward(t, loss, m->ps, m->gs);
    ts_alloc_fail_at(0);
    size_t bytes = (size_t)m->w->size * sizeof(float);
    if (rc == AD_OK && !m->want) {
        m->want = malloc(bytes);
        cr_assert_not_null(m->want);
        memcpy(m->want, ad_grads_get(m->gs, m->w)->data, bytes);
    } else if (rc == AD_OK) {
        cr_expect(memcmp(ad_grads_get(m->gs, m->w)->data, m->want, bytes) == 0,
                  "the gradient after %llu failed sweeps differs", (unsigned long long)n - 1);
    }
    ad_tape_free(t);
    return rc;
}

Test(errors, out_of_memory_in_backward_on_a_fresh_tape_is_clean)
{
    ts_alloc_install();
    oom_model m;
    oom_model_open(&m, 64, 64); /* the sweep's cotangents outgrow the first block */
    cr_assert_eq(attempt_backward(&m, 0), AD_OK, "%s", ad_last_error()); /* reference */
    oom_loop(attempt_backward, &m, "ad_backward");
    oom_model_close(&m);
    ts_alloc_uninstall();
}
