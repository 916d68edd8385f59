/*
** test_pool_errors.c: what the pooling rules declare (required attributes, x and y
** unread) and refuse: every error of max_pool2d, avg_pool2d and global_avg_pool2d with
** its code and a message naming the op and what is wrong, x unchanged; and max pool
** recorded in forward-only mode (no argmax saved) gives the same values. Values and
** gradients are in test_pool.c.
*/
#include <criterion/criterion.h>

#include "support.h"

static ad_pool2d_attrs pa(int kh, int kw, int sh, int sw, int ph, int pw)
{
    return (ad_pool2d_attrs){kh, kw, sh, sw, ph, pw};
}

Test(pool_errors, rules_require_attributes_and_read_neither_x_nor_y)
{
    ad_primal_fn fns[2] = {ad_op_max_pool2d, ad_op_avg_pool2d};
    for (int f = 0; f < 2; f++) {
        const ad_rule *r = ad_rule_find(fns[f]);
        cr_assert_not_null(r);
        cr_expect_eq(r->attrs_size, sizeof(ad_pool2d_attrs));
        cr_expect_null(r->attrs_default);
        cr_expect_eq(r->unread, AD_INPUT(0) | AD_OUTPUT);
    }
    const ad_rule *g = ad_rule_find(ad_op_global_avg_pool2d);
    cr_assert_not_null(g);
    cr_expect_eq(g->attrs_size, 0u);
    cr_expect_eq(g->unread, AD_INPUT(0) | AD_OUTPUT);
    ad_pool2d_attrs d = AD_POOL2D_ATTRS(3, 2);
    cr_expect(d.kernel_h == 3 && d.kernel_w == 2 && d.stride_h == 3 && d.stride_w == 2 &&
              d.pad_h == 0 && d.pad_w == 0);
}

/* Records `op` on a fresh x of the given shape with attributes `at` (NULL: none) and
** expects the tape to fail with code and a message holding the op and needle; x is
** unchanged. op: 0 max, 1 avg, 2 global. */
static void expect_fails(int op, int xnd, const int64_t *xs, const ad_pool2d_attrs *at,
                         ad_status code, const char *needle)
{
    static const char *const names[] = {"max_pool2d", "avg_pool2d", "global_avg_pool2d"};
    uint64_t rng = 1;
    ad_tensor *x = ts_tensor(AD_F64, xnd, xs);
    ts_fill_uniform(x, &rng, -1, 1);
    ad_tensor *before = ts_clone(x);
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var u = ad_use(t, x), y;
    if (op == 0)
        y = ad_max_pool2d(t, u, at);
    else if (op == 1)
        y = ad_avg_pool2d(t, u, at);
    else if (at)
        y = ad_call_attrs(t, ad_op_global_avg_pool2d, at, u);
    else
        y = ad_global_avg_pool2d(t, u);
    ts_assert_tape_failed(t, y, code, names[op], needle);
    cr_expect_eq(ts_max_abs_diff(x, before), 0.0, "x changed");
    ad_tape_free(t);
    ad_tensor_free(before);
    ad_tensor_free(x);
}

Test(pool_errors, bad_attributes_are_invalid_and_name_the_field)
{
    const char *names[] = {"kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w"};
    for (int op = 0; op < 2; op++) {
        for (int f = 0; f < 6; f++) {
            ad_pool2d_attrs at = pa(3, 3, 1, 1, 1, 1);
            int *fields = &at.kernel_h;
            fields[f] = f >= 4 ? -1 : 0;
            expect_fails(op, 4, TS_SHAPE(1, 2, 5, 5), &at, AD_ERR_INVALID, names[f]);
            fields[f] = f >= 4 ? 2 : -3; /* a pad above half of 3; a negative extent */
            expect_fails(op, 4, TS_SHAPE(1, 2, 5, 5), &at, AD_ERR_INVALID, names[f]);
        }
        ad_pool2d_attrs half = pa(4, 5, 1, 1, 2, 3);
        expect_fails(op, 4, TS_SHAPE(1, 2, 5, 5), &half, AD_ERR_INVALID, "pad_w is 3");
        expect_fails(op, 4, TS_SHAPE(1, 2, 5, 5), &(ad_pool2d_attrs){0}, AD_ERR_INVALID,
                     "kernel_h is 0");
    }
}

Test(pool_errors, missing_attributes_are_refused_at_record_time)
{
    expect_fails(0, 4, TS_SHAPE(1, 1, 4, 4), NULL, AD_ERR_ATTRS, "no attributes");
    expect_fails(1, 4, TS_SHAPE(1, 1, 4, 4), NULL, AD_ERR_ATTRS, "no attributes");
    ad_pool2d_attrs at = AD_POOL2D_ATTRS(2, 2);
    expect_fails(2, 4, TS_SHAPE(1, 1, 4, 4), &at, AD_ERR_ATTRS, NULL);
}

Test(pool_errors, bad_shapes_fail_with_a_named_error_naming_the_shapes)
{
    ad_pool2d_attrs k3 = AD_POOL2D_ATTRS(3, 3), p1 = pa(3, 3, 1, 1, 1, 1);
    for (int op = 0; op < 3; op++) {
        const ad_pool2d_attrs *at = op < 2 ? &k3 : NULL;
        expect_fails(op, 3, TS_SHAPE(2, 5, 5), at, AD_ERR_RANK, "rank 3");
        expect_fails(op, 4, TS_SHAPE(1, 2, 0, 5), at, AD_ERR_SHAPE, "empty plane");
        expect_fails(op, 4, TS_SHAPE(1, 2, 5, 0), at, AD_ERR_SHAPE, "1x2x5x0");
    }
    for (int op = 0; op < 2; op++) {
        expect_fails(op, 4, TS_SHAPE(1, 2, 2, 5), &k3, AD_ERR_SHAPE,
                     "kernel height 3 does not fit x 1x2x2x5 f64 padded by 0");
        expect_fails(op, 4, TS_SHAPE(1, 2, 5, 2), &k3, AD_ERR_SHAPE, "kernel width 3");
        /* Padded, the same kernel fits: 2 + 2 - 3 >= 0. */
        ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(1, 2, 2, 5));
        ad_tape *t;
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        const ad_tensor *y = ad_value(t, op ? ad_avg_pool2d(t, ad_use(t, x), &p1)
                                            : ad_max_pool2d(t, ad_use(t, x), &p1));
        cr_assert_not_null(y, "%s", ad_tape_error(t));
        cr_expect(y->shape[2] == 2 && y->shape[3] == 5);
        ad_tape_free(t);
        ad_tensor_free(x);
    }
}

Test(pool_errors, overflowing_sizes_fail_with_overflow_before_any_work)
{
    ad_pool2d_attrs p1 = pa(2, 2, 1, 1, 1, 1);
    for (int op = 0; op < 2; op++)
        expect_fails(op, 4, TS_SHAPE(0, 1, INT64_MAX, 1), &p1, AD_ERR_OVERFLOW,
                     "overflows");
    /* A plane of 2^32 positions: beyond max pool's int32 argmax; avg does not care. */
    ad_pool2d_attrs k2 = AD_POOL2D_ATTRS(2, 2);
    expect_fails(0, 4, TS_SHAPE(0, 1, (int64_t)1 << 16, (int64_t)1 << 16), &k2,
                 AD_ERR_OVERFLOW, "int32 argmax");
    ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(0, 1, (int64_t)1 << 16, (int64_t)1 << 16));
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_expect(ad_var_ok(ad_avg_pool2d(t, ad_use(t, x), &k2)), "%s", ad_tape_error(t));
    ad_tape_free(t);
    ad_tensor_free(x);
}

Test(pool_errors, forward_only_max_pool_saves_nothing_and_gives_the_same_values)
{
    uint64_t rng = 23;
    ad_tensor *x = ts_tensor(AD_F32, 4, TS_SHAPE(2, 3, 8, 8));
    ts_fill_uniform(x, &rng, -1, 1);
    ad_tape *a, *b;
    cr_assert_eq(ad_tape_new(&a), AD_OK);
    cr_assert_eq(ad_tape_new(&b), AD_OK);
    ad_tape_set_grad_enabled(b, 0);
    ad_pool2d_attrs at = AD_POOL2D_ATTRS(2, 2);
    const ad_tensor *ya = ad_value(a, ad_max_pool2d(a, ad_use(a, x), &at));
    const ad_tensor *yb = ad_value(b, ad_max_pool2d(b, ad_use(b, x), &at));
    cr_assert(ya && yb);
    cr_expect_eq(ts_max_abs_diff(ya, yb), 0.0);
    ad_tape_free(a);
    ad_tape_free(b);
    ad_tensor_free(x);
}
