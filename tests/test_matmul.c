/*
** test_matmul.c: ad_matmul and the dense backprop pullback: forward values against
** naive loops for every transpose combination in f32 and f64, finite-difference checks
** of the rule, gradients through the tape against hand-derived loops (including a
** value used twice, where the second contribution must be added), every error the
** op can return, and empty extents.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* C = op(A) op(B) is m x n, op(A) m x k, op(B) k x n. */
typedef struct mkn { int64_t m, k, n; } mkn;

/* Tolerances: |got - want| <= tol * (1 + |want|). */
#define TOL_F64 1e-12
#define TOL_F32 1e-5

static double tol_for(ad_dtype dt)
{
    return dt == AD_F32 ? TOL_F32 : TOL_F64;
}

/* A random matrix stored so that op(X) (X' when trans) is rows x cols. */
static ad_tensor *operand(ad_dtype dt, int trans, int64_t rows, int64_t cols, uint64_t *rng)
{
    ad_tensor *t = ts_tensor(dt, 2, trans ? TS_SHAPE(cols, rows) : TS_SHAPE(rows, cols));
    ts_fill_uniform(t, rng, -1.0, 1.0);
    return t;
}

/* Frees n tensors from ad_tensor_new. */
static void free_tensors(int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        ad_tensor_free(va_arg(ap, ad_tensor *));
    va_end(ap);
}

/* Frees n buffers from doubles(). */
static void free_buffers(int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        free(va_arg(ap, double *));
    va_end(ap);
}

static ad_tape *new_tape(void)
{
    ad_tape *t = NULL;
    cr_assert_eq(ad_tape_new(&t), AD_OK, "%s", ad_last_error());
    return t;
}

/* Never NULL, even for 0 elements, so loops and free need no special case. */
static double *doubles(int64_t n)
{
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    cr_assert_not_null(p);
    return p;
}

static double *values_of(const ad_tensor *t)
{
    double *p = doubles(t->size);
    for (int64_t i = 0; i < t->size; i++)
        p[i] = ts_get(t, i);
    return p;
}

static void assert_near(const ad_tensor *got, const double *want, int64_t size, double tol,
                        const char *what)
{
    cr_assert_not_null(got, "%s: no tensor", what);
    cr_assert_eq(got->size, size, "%s: %lld elements, want %lld", what, (long long)got->size,
                 (long long)size);
    for (int64_t i = 0; i < size; i++) {
        double g = ts_get(got, i);
        cr_assert(fabs(g - want[i]) <= tol * (1.0 + fabs(want[i])),
                  "%s: element %lld is %.17g, want %.17g", what, (long long)i, g, want[i]);
    }
}

/* Records op(A) op(B) on t and asserts an m x n output of A's dtype. */
static const ad_tensor *record_matmul(ad_tape *t, const ad_tensor *a, int ta,
                                      const ad_tensor *b, int tb, int64_t m, int64_t n)
{
    const ad_tensor *c = ad_value(t, ad_matmul(t, ad_use(t, a), ad_use(t, b), ta, tb));
    char d[64];
    cr_assert_not_null(c, "%s", ad_tape_error(t));
    cr_assert(c->dtype == a->dtype && c->ndim == 2 && c->shape[0] == m && c->shape[1] == n,
              "output %s, want %lldx%lld", ad_tensor_describe(c, d, sizeof d), (long long)m,
              (long long)n);
    return c;
}

/* Element (r, c) of op(X). */
static double op_at(const ad_tensor *x, int trans, int64_t r, int64_t c)
{
    return trans ? ts_get(x, c * x->shape[1] + r) : ts_get(x, r * x->shape[1] + c);
}

/*
** For L = sum_ij G_ij (op(A) op(B))_ij, by hand: d op(A) = G op(B)', d op(B) = op(A)' G.
** Adds them into da and db, stored in A's and B's own layouts (transposed back when the
** operand was transposed), so two calls accumulate two uses.
*/
static void add_expected_grads(const ad_tensor *a, int ta, const ad_tensor *b, int tb,
                               const double *g, double *da, double *db)
{
    int64_t m = ta ? a->shape[1] : a->shape[0], k = ta ? a->shape[0] : a->shape[1];
    int64_t n = tb ? b->shape[0] : b->shape[1];
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < n; j++) {
                double gij = g ? g[i * n + j] : 1.0;
                if (da)
                    da[ta ? p * m + i : i * k + p] += gij * op_at(b, tb, p, j);
                if (db)
                    db[tb ? j * k + p : p * n + j] += op_at(a, ta, i, p) * gij;
            }
}

/* ---- forward values ---- */

static const mkn forward_shapes[] = {{5, 7, 3}, {1, 6, 4}, {13, 2, 9}, {33, 17, 8},
                                     {4, 1, 6}, {1, 1, 1}};
#define N_FORWARD ((int)(sizeof forward_shapes / sizeof forward_shapes[0]))

static void forward_matches_naive(ad_dtype dt, uint64_t seed)
{
    uint64_t rng = seed;
    for (int s = 0; s < N_FORWARD; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                mkn d = forward_shapes[s];
                ad_tensor *a = operand(dt, ta, d.m, d.k, &rng);
                ad_tensor *b = operand(dt, tb, d.k, d.n, &rng);
                ad_tape *t = new_tape();
                const ad_tensor *ct = record_matmul(t, a, ta, b, tb, d.m, d.n);
                double *want = doubles(d.m * d.n);
                ts_naive_matmul(a, ta, b, tb, want);
                char what[96];
                snprintf(what, sizeof what, "%s %lldx%lldx%lld trans_a=%d trans_b=%d",
                         ad_dtype_name(dt), (long long)d.m, (long long)d.k, (long long)d.n,
                         ta, tb);
                assert_near(ct, want, d.m * d.n, tol_for(dt), what);
                free(want);
                ad_tape_free(t);
                free_tensors(2, a, b);
            }
}

Test(matmul, forward_matches_naive_loops_for_every_transpose_combination_f64)
{
    forward_matches_naive(AD_F64, 101);
}

Test(matmul, forward_matches_naive_loops_for_every_transpose_combination_f32)
{
    forward_matches_naive(AD_F32, 102);
}

/* ---- finite-difference checks of the rule ---- */

static void rule_check_passes(const mkn *shapes, int count, uint64_t seed)
{
    uint64_t rng = seed;
    for (int s = 0; s < count; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                mkn d = shapes[s];
                ad_tensor *a = operand(AD_F64, ta, d.m, d.k, &rng);
                ad_tensor *b = operand(AD_F64, tb, d.k, d.n, &rng);
                const ad_tensor *in[] = {a, b};
                ad_matmul_attrs at = {ta, tb};
                ad_check_options o = ad_check_defaults();
                o.rtol = 1e-6, o.attrs = &at, o.attrs_size = sizeof at;
                ad_check_report rep = {0};
                ad_status rc = ad_rule_check(ad_op_matmul, in, 2, &o, &rep);
                cr_assert_eq(rc, AD_OK, "%lldx%lldx%lld trans_a=%d trans_b=%d: %s",
                             (long long)d.m, (long long)d.k, (long long)d.n, ta, tb,
                             ad_last_error());
                cr_assert_eq(rep.slots_checked, 2);
                free_tensors(2, a, b);
            }
}

Test(matmul, rule_passes_finite_difference_check_on_small_shapes_at_rtol_1e_6)
{
    /* Every operand here has at most 256 elements: every coordinate is probed. */
    static const mkn shapes[] = {{3, 4, 5}, {1, 6, 4}, {6, 2, 1}, {4, 4, 4}, {7, 1, 3}};
    rule_check_passes(shapes, (int)(sizeof shapes / sizeof shapes[0]), 201);
}

Test(matmul, rule_passes_finite_difference_check_along_random_directions_on_large_shapes)
{
    /* Operands above the checker's full_limit of 256 elements: A is 600, 300 and 320,
    ** B is 450, 600 and 24 (the last one probed coordinate by coordinate). */
    static const mkn shapes[] = {{20, 30, 15}, {1, 300, 2}, {40, 8, 3}};
    rule_check_passes(shapes, (int)(sizeof shapes / sizeof shapes[0]), 202);
}

/* ---- gradients through the tape ---- */

typedef struct grad_setup {
    ad_params *ps;
    ad_grads *gs;
    ad_tape *tape;
} grad_setup;

static grad_setup grad_setup_new(ad_tensor *const params[], int n)
{
    grad_setup g = {0};
    cr_assert_eq(ad_params_new(&g.ps), AD_OK);
    for (int i = 0; i < n; i++)
        cr_assert_eq(ad_params_add(g.ps, params[i], NULL), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_grads_new(g.ps, &g.gs), AD_OK);
    g.tape = new_tape();
    return g;
}

static void grad_setup_free(grad_setup *g)
{
    ad_tape_free(g->tape);
    ad_grads_free(g->gs);
    ad_params_free(g->ps);
}

static void backward_ok(grad_setup *g, ad_var loss)
{
    cr_assert(ad_var_ok(loss), "recording failed: %s", ad_tape_error(g->tape));
    ad_status rc = ad_backward(g->tape, loss, g->ps, g->gs);
    cr_assert_eq(rc, AD_OK, "ad_backward: %s", ad_last_error());
}

/* loss = sum(op(A) op(B)), or sum(G .* op(A) op(B)) for a constant random G when
** weighted; both parameters' gradients against add_expected_grads. */
static void tape_grads_match(ad_dtype dt, int ta, int tb, mkn d, int weighted, uint64_t *rng)
{
    ad_tensor *a = operand(dt, ta, d.m, d.k, rng), *b = operand(dt, tb, d.k, d.n, rng);
    ad_tensor *g = operand(dt, 0, d.m, d.n, rng);
    grad_setup s = grad_setup_new((ad_tensor *const[]){a, b}, 2);
    ad_var c = ad_matmul(s.tape, ad_use(s.tape, a), ad_use(s.tape, b), ta, tb);
    backward_ok(&s, ad_sum(s.tape, weighted ? ad_mul(s.tape, c, ad_use(s.tape, g)) : c));
    double *gw = values_of(g), *da = doubles(a->size), *db = doubles(b->size);
    add_expected_grads(a, ta, b, tb, weighted ? gw : NULL, da, db);
    char what[96];
    for (int i = 0; i < 2; i++) {
        snprintf(what, sizeof what, "%s %s %lldx%lldx%lld trans_a=%d trans_b=%d d%c",
                 ad_dtype_name(dt), weighted ? "weighted" : "sum", (long long)d.m,
                 (long long)d.k, (long long)d.n, ta, tb, i ? 'B' : 'A');
        assert_near(ad_grads_get(s.gs, i ? b : a), i ? db : da, i ? b->size : a->size,
                    tol_for(dt), what);
    }
    free_buffers(3, gw, da, db);
    grad_setup_free(&s);
    free_tensors(3, a, b, g);
}

Test(matmul, gradient_of_sum_of_product_is_ones_times_other_operand_transposed)
{
    /* dA = ones(m x n) op(B)', dB = op(A)' ones(m x n), transposed back as stored. */
    uint64_t rng = 301;
    const mkn shapes[] = {{5, 3, 4}, {1, 6, 2}};
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 2; s++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    tape_grads_match(d ? AD_F64 : AD_F32, ta, tb, shapes[s], 0, &rng);
}

Test(matmul, gradient_with_a_dense_cotangent_matches_hand_derived_loops)
{
    /* dA = G op(B)', dB = op(A)' G for a random G: transposition errors cannot hide
    ** behind a cotangent of ones. */
    uint64_t rng = 302;
    const mkn shapes[] = {{5, 3, 4}, {1, 6, 2}, {3, 7, 1}};
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 3; s++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    tape_grads_match(d ? AD_F64 : AD_F32, ta, tb, shapes[s], 1, &rng);
}

Test(matmul, value_used_twice_in_the_same_slot_gets_both_contributions)
{
    /* loss = sum(A B) + sum(A C):  dA = ones B' + ones C'. The second pullback to reach
    ** dA runs with beta = 1 and must add, not overwrite. */
    uint64_t rng = 303;
    ad_tensor *a = operand(AD_F64, 0, 4, 3, &rng), *b = operand(AD_F64, 0, 3, 5, &rng);
    ad_tensor *c = operand(AD_F64, 0, 3, 2, &rng);
    grad_setup s = grad_setup_new((ad_tensor *const[]){a, b, c}, 3);
    ad_var va = ad_use(s.tape, a);
    ad_var loss = ad_add(s.tape, ad_sum(s.tape, ad_matmul(s.tape, va, ad_use(s.tape, b), 0, 0)),
                         ad_sum(s.tape, ad_matmul(s.tape, va, ad_use(s.tape, c), 0, 0)));
    backward_ok(&s, loss);
    double *da = doubles(a->size), *db = doubles(b->size), *dc = doubles(c->size);
    add_expected_grads(a, 0, b, 0, NULL, da, db);
    add_expected_grads(a, 0, c, 0, NULL, da, dc);
    assert_near(ad_grads_get(s.gs, a), da, a->size, TOL_F64, "dA (both uses)");
    assert_near(ad_grads_get(s.gs, b), db, b->size, TOL_F64, "dB");
    assert_near(ad_grads_get(s.gs, c), dc, c->size, TOL_F64, "dC");
    free_buffers(3, da, db, dc);
    grad_setup_free(&s);
    free_tensors(3, a, b, c);
}

Test(matmul, value_used_in_both_slots_and_transposed_gets_every_contribution)
{
    /* loss = sum(G .* A B) + sum(D A'): A reaches the sweep through slot 0 and, as a
    ** transposed slot 1, through the other matmul: dA = G B' + ones' D. */
    uint64_t rng = 304;
    ad_tensor *a = operand(AD_F64, 0, 4, 3, &rng), *b = operand(AD_F64, 0, 3, 5, &rng);
    ad_tensor *g = operand(AD_F64, 0, 4, 5, &rng), *d = operand(AD_F64, 0, 6, 3, &rng);
    grad_setup s = grad_setup_new((ad_tensor *const[]){a, b, d}, 3);
    ad_var va = ad_use(s.tape, a);
    ad_var first = ad_sum(s.tape, ad_mul(s.tape, ad_matmul(s.tape, va, ad_use(s.tape, b), 0, 0),
                                         ad_use(s.tape, g)));
    ad_var second = ad_sum(s.tape, ad_matmul(s.tape, ad_use(s.tape, d), va, 0, 1));
    backward_ok(&s, ad_add(s.tape, first, second));
    double *gw = values_of(g), *da = doubles(a->size), *db = doubles(b->size);
    double *dd = doubles(d->size);
    add_expected_grads(a, 0, b, 0, gw, da, db);
    add_expected_grads(d, 0, a, 1, NULL, dd, da);
    assert_near(ad_grads_get(s.gs, a), da, a->size, TOL_F64, "dA (both uses)");
    assert_near(ad_grads_get(s.gs, b), db, b->size, TOL_F64, "dB");
    assert_near(ad_grads_get(s.gs, d), dd, d->size, TOL_F64, "dD");
    free_buffers(4, gw, da, db, dd);
    grad_setup_free(&s);
    free_tensors(4, a, b, g, d);
}

Test(matmul, value_passed_as_both_operands_gets_both_contributions)
{
    /* loss = sum(A A'):  dA = ones A + ones' A, so dA[i][p] = 2 sum_r A[r][p]. */
    uint64_t rng = 305;
    ad_tensor *a = operand(AD_F64, 0, 4, 3, &rng);
    grad_setup s = grad_setup_new((ad_tensor *const[]){a}, 1);
    ad_var va = ad_use(s.tape, a);
    backward_ok(&s, ad_sum(s.tape, ad_matmul(s.tape, va, va, 0, 1)));
    double *da = doubles(a->size);
    for (int64_t i = 0; i < 4; i++)
        for (int64_t p = 0; p < 3; p++)
            for (int64_t r = 0; r < 4; r++)
                da[i * 3 + p] += 2.0 * ts_get(a, r * 3 + p);
    assert_near(ad_grads_get(s.gs, a), da, a->size, TOL_F64, "dA");
    free(da);
    grad_setup_free(&s);
    ad_tensor_free(a);
}

/* ---- the dense backprop pullback ---- */

/* Y = X W' (W: out x in, X: batch x in) by naive loops, with backprop's pullback as its
** rule, so ad_rule_check compares ad_dense_backprop_pullback with finite differences. */
static ad_status test_dense(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    const ad_tensor *w = in[0], *x = in[1];
    if (w->shape[1] != x->shape[1])
        return ad_fail(AD_ERR_SHAPE, "test_dense: W and X do not fit");
    int64_t batch = x->shape[0], n_out = w->shape[0], n_in = w->shape[1];
    ad_status rc = ad_out(cx, w->dtype, 2, (int64_t[]){batch, n_out}, out);
    for (int64_t i = 0; rc == AD_OK && i < batch; i++)
        for (int64_t o = 0; o < n_out; o++) {
            double s = 0.0;
            for (int64_t p = 0; p < n_in; p++)
                s += ts_get(x, i * n_in + p) * ts_get(w, o * n_in + p);
            ts_set(*out, i * n_out + o, s);
        }
    return rc;
}

static const ad_rule test_dense_rule = {
    .name = "test dense (backprop pullback)",
    .pullback = ad_dense_backprop_pullback,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(2)}, {0, AD_RANK(2)}},
};

Test(matmul, dense_backprop_pullback_passes_finite_difference_check)
{
    if (!ad_rule_find(test_dense))
        cr_assert_eq(ad_rule_register(test_dense, &test_dense_rule), AD_OK, "%s",
                     ad_last_error());
    /* {out, in, batch}; the last has W of 300 and X of 360 elements (random directions). */
    static const int64_t dims[][3] = {{4, 3, 5}, {3, 6, 1}, {2, 7, 9}, {1, 1, 1}, {20, 15, 24}};
    uint64_t rng = 401;
    for (int s = 0; s < 5; s++) {
        ad_tensor *w = operand(AD_F64, 0, dims[s][0], dims[s][1], &rng);
        ad_tensor *x = operand(AD_F64, 0, dims[s][2], dims[s][1], &rng);
        const ad_tensor *in[] = {w, x};
        ad_check_options o = ad_check_defaults();
        o.rtol = 1e-6;
        ad_check_report rep = {0};
        ad_status rc = ad_rule_check(test_dense, in, 2, &o, &rep);
        cr_assert_eq(rc, AD_OK, "out %lld, in %lld, batch %lld: %s", (long long)dims[s][0],
                     (long long)dims[s][1], (long long)dims[s][2], ad_last_error());
        cr_assert_eq(rep.slots_checked, 2);
        free_tensors(2, w, x);
    }
}

/* ---- errors ---- */

typedef struct snapshot {
    const ad_tensor *t;
    void *bytes;
    uint64_t version;
} snapshot;

static snapshot snapshot_of(const ad_tensor *t)
{
    size_t n = (size_t)t->size * ad_dtype_size(t->dtype);
    snapshot s = {t, malloc(n ? n : 1), t->version};
    cr_assert_not_null(s.bytes);
    if (n)
        memcpy(s.bytes, t->data, n);
    return s;
}

static void assert_unchanged(snapshot *s, const char *what)
{
    size_t n = (size_t)s->t->size * ad_dtype_size(s->t->dtype);
    cr_assert_eq(s->t->version, s->version, "%s: version moved", what);
    cr_assert(n == 0 || memcmp(s->bytes, s->t->data, n) == 0, "%s: data changed", what);
    free(s->bytes);
}

#define ASSERT_HAS(msg, needle)                                                         \
    cr_assert(strstr((msg), (needle)) != NULL, "\"%s\" not in: %s", (needle), (msg))

/* Records op(A) op(B) expecting failure with `code`; checks the poisoned handle, both
** messages, that no node was recorded and that the inputs are untouched. */
static void matmul_fails(const ad_tensor *a, const ad_tensor *b, int ta, int tb,
                         ad_status code, const char *needle1, const char *needle2)
{
    snapshot sa = snapshot_of(a), sb = snapshot_of(b);
    ad_tape *t = new_tape();
    ad_var c = ad_matmul(t, ad_use(t, a), ad_use(t, b), ta, tb);
    cr_assert_not(ad_var_ok(c), "the call succeeded");
    cr_assert_null(ad_value(t, c));
    cr_assert_eq(ad_tape_status(t), code, "status %s, want %s: %s",
                 ad_status_str(ad_tape_status(t)), ad_status_str(code), ad_tape_error(t));
    const char *msgs[] = {ad_tape_error(t), ad_last_error()};
    for (int i = 0; i < 2; i++) {
        ASSERT_HAS(msgs[i], "matmul");
        ASSERT_HAS(msgs[i], needle1);
        ASSERT_HAS(msgs[i], needle2);
    }
    cr_assert_eq(ad_tape_get_stats(t).nodes, 0u);
    ad_tape_free(t);
    assert_unchanged(&sa, "A");
    assert_unchanged(&sb, "B");
}

Test(matmul, inner_extent_mismatch_fails_with_shape_error_naming_both_shapes)
{
    uint64_t rng = 501;
    ad_tensor *x = operand(AD_F64, 0, 64, 40, &rng), *w = operand(AD_F64, 0, 60, 50, &rng);
    /* Every transpose combination of these two mismatches: 40|50, 40|64, 64|60, 64|50. */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            matmul_fails(x, w, ta, tb, AD_ERR_SHAPE, "64x40", "60x50");
    matmul_fails(w, x, 0, 1, AD_ERR_SHAPE, "60x50", "64x40");
    free_tensors(2, x, w);
}

Test(matmul, rank_3_input_fails_with_rank_error)
{
    uint64_t rng = 502;
    ad_tensor *a = ts_tensor(AD_F64, 3, TS_SHAPE(2, 3, 4));
    ts_fill_uniform(a, &rng, -1.0, 1.0);
    ad_tensor *b = operand(AD_F64, 0, 4, 5, &rng);
    matmul_fails(a, b, 0, 0, AD_ERR_RANK, "rank 3", "2x3x4");
    matmul_fails(b, a, 0, 0, AD_ERR_RANK, "rank 3", "2x3x4");
    free_tensors(2, a, b);
}

Test(matmul, mixed_f32_and_f64_inputs_fail_with_dtype_error)
{
    uint64_t rng = 503;
    ad_tensor *a = operand(AD_F32, 0, 3, 4, &rng), *b = operand(AD_F64, 0, 4, 5, &rng);
    matmul_fails(a, b, 0, 0, AD_ERR_DTYPE, "f32", "f64");
    matmul_fails(b, a, 1, 1, AD_ERR_DTYPE, "f32", "f64");
    free_tensors(2, a, b);
}

/* ---- empty extents ---- */

/* Leaves the tape's arena full of nonzero bytes and rewinds it, so a kernel that
** forgets to write its output shows garbage instead of a lucky fresh zero page. */
static void dirty_arena(ad_tape *t, ad_dtype dt, uint64_t *rng)
{
    ad_tensor *a = operand(dt, 0, 40, 40, rng);
    ad_var va = ad_use(t, a);
    for (int i = 0; i < 8; i++)
        cr_assert(ad_var_ok(ad_matmul(t, va, va, 0, 0)), "%s", ad_tape_error(t));
    ad_tape_reset(t);
    ad_tensor_free(a);
}

Test(matmul, zero_inner_extent_gives_zeros_of_the_right_shape)
{
    uint64_t rng = 601;
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F64 : AD_F32;
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                ad_tensor *a = operand(dt, ta, 5, 0, &rng), *b = operand(dt, tb, 0, 3, &rng);
                ad_tape *t = new_tape();
                dirty_arena(t, dt, &rng);
                double zeros[15] = {0};
                assert_near(record_matmul(t, a, ta, b, tb, 5, 3), zeros, 15, 0.0, "k == 0");
                ad_tape_free(t);
                free_tensors(2, a, b);
            }
    }
}

Test(matmul, zero_inner_extent_backward_gives_empty_gradients)
{
    uint64_t rng = 602;
    ad_tensor *a = operand(AD_F64, 0, 5, 0, &rng), *b = operand(AD_F64, 0, 0, 3, &rng);
    grad_setup s = grad_setup_new((ad_tensor *const[]){a, b}, 2);
    ad_var loss = ad_sum(s.tape, ad_matmul(s.tape, ad_use(s.tape, a), ad_use(s.tape, b), 0, 0));
    backward_ok(&s, loss);
    cr_assert_eq(ad_tensor_get(ad_value(s.tape, loss), 0), 0.0);
    const ad_tensor *da = ad_grads_get(s.gs, a), *db = ad_grads_get(s.gs, b);
    cr_assert(da == NULL || (da->size == 0 && da->shape[0] == 5 && da->shape[1] == 0));
    cr_assert(db == NULL || (db->size == 0 && db->shape[0] == 0 && db->shape[1] == 3));
    grad_setup_free(&s);
    free_tensors(2, a, b);
}

Test(matmul, empty_rows_or_columns_give_an_empty_output_of_the_right_shape)
{
    uint64_t rng = 603;
    const mkn shapes[] = {{0, 4, 3}, {3, 4, 0}, {0, 0, 0}};
    for (int s = 0; s < 3; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                mkn d = shapes[s];
                ad_tensor *a = operand(AD_F64, ta, d.m, d.k, &rng);
                ad_tensor *b = operand(AD_F64, tb, d.k, d.n, &rng);
                ad_tape *t = new_tape();
                cr_assert_eq(record_matmul(t, a, ta, b, tb, d.m, d.n)->size, 0);
                ad_tape_free(t);
                free_tensors(2, a, b);
            }
}

Test(matmul, empty_rows_backward_writes_zeros_over_an_old_gradient)
{
    /* First a step with 2 rows leaves a nonzero dB; then with 0 rows dB = A' dC is an
    ** empty sum and must come back as zeros, not as the previous step's values. */
    uint64_t rng = 604;
    ad_tensor *a2 = operand(AD_F64, 0, 2, 4, &rng), *a0 = operand(AD_F64, 0, 0, 4, &rng);
    ad_tensor *b = operand(AD_F64, 0, 4, 3, &rng);
    grad_setup s = grad_setup_new((ad_tensor *const[]){b}, 1);
    backward_ok(&s, ad_sum(s.tape, ad_matmul(s.tape, ad_use(s.tape, a2), ad_use(s.tape, b),
                                             0, 0)));
    double *db = doubles(b->size);
    add_expected_grads(a2, 0, b, 0, NULL, NULL, db);
    assert_near(ad_grads_get(s.gs, b), db, b->size, TOL_F64, "dB with 2 rows");
    ad_tape_reset(s.tape);
    ad_var c = ad_matmul(s.tape, ad_use(s.tape, a0), ad_use(s.tape, b), 0, 0);
    const ad_tensor *ct = ad_value(s.tape, c);
    cr_assert_not_null(ct, "%s", ad_tape_error(s.tape));
    cr_assert_eq(ct->shape[0], 0);
    cr_assert_eq(ct->shape[1], 3);
    backward_ok(&s, ad_sum(s.tape, c));
    memset(db, 0, (size_t)b->size * sizeof *db);
    assert_near(ad_grads_get(s.gs, b), db, b->size, 0.0, "dB with 0 rows");
    free(db);
    grad_setup_free(&s);
    free_tensors(3, a2, a0, b);
}
