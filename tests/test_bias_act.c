/*
** test_bias_act.c: the fused dense-layer tails ad_bias_relu and ad_bias_tanh give
** bitwise the values and gradients of the plain ops they replace
** (ad_relu(ad_bias_add(x, b)) and the tanh twin), with the accumulate path (beta 1)
** and with only the bias differentiated; they pass the finite-difference check in
** float64; a bias of the wrong length is a named shape error.
*/
#include <cblas.h>
#include <criterion/criterion.h>
#include <string.h>

#include "support.h"

typedef ad_var (*fused_fn)(ad_tape *, ad_var, ad_var);
typedef ad_var (*act_fn)(ad_tape *, ad_var);

static const struct {
    const char *name;
    fused_fn fused;
    act_fn act;
} tails[] = {{"relu", ad_bias_relu, ad_relu}, {"tanh", ad_bias_tanh, ad_tanh}};

/* Values spread over both signs, with exact zeros where x + b is 0 (relu's kink), so
** the masks of the two paths are compared at the edge too. */
static void fill(ad_tensor *t, uint64_t *rng)
{
    for (int64_t i = 0; i < t->size; i++)
        ts_set(t, i, i % 7 == 3 ? 0.0 : ts_uniform(rng, -3, 3));
    ad_tensor_touch(t);
}

typedef struct run {
    ad_tape *tape;
    ad_params *ps;
    ad_grads *gs;
    ad_var y;
} run;

/*
** loss = sum(tail(x, b) .* w) (+ sum(x .* w2) when `reuse`, so x's cotangent is written
** by two pullbacks and the second adds with beta 1). x is a parameter unless only_b.
*/
static run record(int fused, int t, ad_tensor *x, ad_tensor *b, ad_tensor *w, ad_tensor *w2,
                  int reuse, int only_b)
{
    run r = {0};
    cr_assert_eq(ad_tape_new(&r.tape), AD_OK);
    cr_assert_eq(ad_params_new(&r.ps), AD_OK);
    if (!only_b)
        cr_assert_eq(ad_params_add(r.ps, x, NULL), AD_OK);
    cr_assert_eq(ad_params_add(r.ps, b, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r.ps, &r.gs), AD_OK);
    ad_var vx = ad_use(r.tape, x), vb = ad_use(r.tape, b);
    r.y = fused ? tails[t].fused(r.tape, vx, vb)
                : tails[t].act(r.tape, ad_bias_add(r.tape, vx, vb));
    ad_var loss = ad_sum(r.tape, ad_mul(r.tape, r.y, ad_use(r.tape, w)));
    if (reuse)
        loss = ad_add(r.tape, loss, ad_sum(r.tape, ad_mul(r.tape, vx, ad_use(r.tape, w2))));
    cr_assert_eq(ad_backward(r.tape, loss, r.ps, r.gs), AD_OK, "%s", ad_last_error());
    return r;
}

static void drop(run *r)
{
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tape_free(r->tape);
}

static void assert_same_bits(const ad_tensor *a, const ad_tensor *b, const char *what,
                             const char *tail, ad_dtype dt)
{
    cr_assert_not_null(a, "%s %s: fused path has no result", tail, what);
    cr_assert_not_null(b, "%s %s: plain path has no result", tail, what);
    cr_assert_eq(a->size, b->size);
    size_t bytes = (size_t)a->size * ad_dtype_size(dt);
    cr_assert(memcmp(a->data, b->data, bytes) == 0,
              "%s (%s): %s differs between the fused and the plain path (max |diff| %g)",
              tail, dt == AD_F32 ? "f32" : "f64", what, ts_max_abs_diff(a, b));
}

static void compare_paths(ad_dtype dt, int64_t n, int64_t m, int reuse, int only_b)
{
    uint64_t rng = 11 + (uint64_t)(n * 31 + m);
    ad_tensor *x = ts_tensor(dt, 2, (int64_t[]){n, m}), *w = ts_tensor(dt, 2, (int64_t[]){n, m});
    ad_tensor *w2 = ts_tensor(dt, 2, (int64_t[]){n, m}), *b = ts_tensor(dt, 1, &m);
    fill(x, &rng);
    fill(w, &rng);
    fill(w2, &rng);
    for (int64_t j = 0; j < m; j++) /* b_j = -x_0j in places: x + b exactly 0 */
        ts_set(b, j, j % 5 == 1 ? -ts_get(x, j) : ts_uniform(&rng, -1, 1));
    ad_tensor_touch(b);
    for (int t = 0; t < 2; t++) {
        run f = record(1, t, x, b, w, w2, reuse, only_b);
        run p = record(0, t, x, b, w, w2, reuse, only_b);
        assert_same_bits(ad_value(f.tape, f.y), ad_value(p.tape, p.y), "value",
                         tails[t].name, dt);
        assert_same_bits(ad_grads_get(f.gs, b), ad_grads_get(p.gs, b), "db", tails[t].name,
                         dt);
        if (!only_b)
            assert_same_bits(ad_grads_get(f.gs, x), ad_grads_get(p.gs, x), "dx",
                             tails[t].name, dt);
        cr_assert_eq(ad_tape_pullback_count(f.tape, ad_op_bias_add), 0);
        cr_assert_eq(ad_tape_pullback_count(p.tape, ad_op_bias_add), 1);
        drop(&f);
        drop(&p);
    }
    ad_tensor_free(x);
    ad_tensor_free(w);
    ad_tensor_free(w2);
    ad_tensor_free(b);
}

Test(bias_act, fused_is_bitwise_the_plain_path_f32_and_f64)
{
    /* 13 and 37 columns leave vector tails; 256 x 1024 is W3's hidden layer. */
    const int64_t sizes[][2] = {{1, 1}, {5, 13}, {9, 37}, {256, 1024}};
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 4; s++)
            compare_paths(d ? AD_F64 : AD_F32, sizes[s][0], sizes[s][1], 0, 0);
}

Test(bias_act, fused_accumulates_with_beta_one_like_the_plain_path)
{
    compare_paths(AD_F32, 7, 19, 1, 0);
    compare_paths(AD_F64, 7, 19, 1, 0);
}

Test(bias_act, only_the_bias_differentiated)
{
    compare_paths(AD_F32, 6, 11, 0, 1);
    compare_paths(AD_F64, 6, 11, 0, 1);
}

Test(bias_act, pass_the_finite_difference_check_in_f64)
{
    uint64_t rng = 5;
    ad_tensor *x = ts_tensor(AD_F64, 2, (int64_t[]){4, 6}), *b = ts_tensor(AD_F64, 1,
                                                                          (int64_t[]){6});
    /* Away from relu's kink: |x + b| >= 0.1 with b in [-0.05, 0.05]. */
    for (int64_t i = 0; i < x->size; i++)
        ts_set(x, i, (ts_next(&rng) & 1 ? -1 : 1) * ts_uniform(&rng, 0.15, 2));
    for (int64_t j = 0; j < 6; j++)
        ts_set(b, j, ts_uniform(&rng, -0.05, 0.05));
    ad_tensor_touch(x);
    ad_tensor_touch(b);
    const ad_primal_fn fns[] = {ad_op_bias_relu, ad_op_bias_tanh};
    for (int t = 0; t < 2; t++) {
        ad_check_options o = ad_check_defaults();
        o.rtol = 1e-6;
        ad_check_report r = {0};
        ad_status rc = ad_rule_check_as(fns[t], tails[t].name,
                                        (const ad_tensor *const[]){x, b}, 2, &o, &r);
        cr_assert_eq(rc, AD_OK, "%s: %s", tails[t].name, ad_last_error());
        cr_assert_eq(r.slots_checked, 2, "%s: %d slots checked", tails[t].name,
                     r.slots_checked);
    }
    ad_tensor_free(x);
    ad_tensor_free(b);
}

Test(bias_act, a_bias_of_the_wrong_length_is_a_shape_error)
{
    ad_tensor *x = ts_tensor(AD_F32, 2, (int64_t[]){3, 4}), *b = ts_tensor(AD_F32, 1,
                                                                          (int64_t[]){5});
    for (int t = 0; t < 2; t++) {
        ad_tape *tape;
        cr_assert_eq(ad_tape_new(&tape), AD_OK);
        ad_var y = tails[t].fused(tape, ad_use(tape, x), ad_use(tape, b));
        ts_assert_tape_failed(tape, y, AD_ERR_SHAPE, tails[t].name, "does not match");
        ad_tape_free(tape);
    }
    ad_tensor_free(x);
    ad_tensor_free(b);
}

/* ---- a training step with the fused tail, and SGD fused into the sweep ---- */

/* x (8 x 6) -> bias_relu(x W1' + b1) (5) -> bias_tanh(. W2' + b2) (4) -> W3 (3) -> CE. */
typedef struct net {
    ad_tensor *x, *labels, *p[5];
    ad_params *ps;
    ad_grads *gs;
    ad_tape *tape;
    double lr;
} net;

static void net_open(net *n)
{
    static const int64_t shapes[5][2] = {{5, 6}, {5, 0}, {4, 5}, {4, 0}, {3, 4}};
    uint64_t rng = 99;
    n->x = ts_tensor(AD_F32, 2, (int64_t[]){8, 6});
    ts_fill_uniform(n->x, &rng, -1, 1);
    n->labels = ts_tensor(AD_I32, 1, (int64_t[]){8});
    for (int i = 0; i < 8; i++)
        ((int32_t *)n->labels->data)[i] = i % 3;
    cr_assert_eq(ad_params_new(&n->ps), AD_OK);
    for (int k = 0; k < 5; k++) {
        n->p[k] = shapes[k][1] ? ts_tensor(AD_F32, 2, shapes[k]) : ts_tensor(AD_F32, 1,
                                                                          shapes[k]);
        ts_fill_uniform(n->p[k], &rng, -0.5, 0.5);
        cr_assert_eq(ad_params_add(n->ps, n->p[k], NULL), AD_OK);
    }
    cr_assert_eq(ad_grads_new(n->ps, &n->gs), AD_OK);
    cr_assert_eq(ad_tape_new(&n->tape), AD_OK);
    n->lr = 0.1;
}

static void net_close(net *n)
{
    ad_tape_free(n->tape);
    ad_grads_free(n->gs);
    ad_params_free(n->ps);
    for (int k = 0; k < 5; k++)
        ad_tensor_free(n->p[k]);
    ad_tensor_free(n->x);
    ad_tensor_free(n->labels);
}

static ad_var net_loss(ad_tape *t, void *user)
{
    net *n = user;
    ad_var v[5];
    for (int k = 0; k < 5; k++)
        v[k] = ad_use(t, n->p[k]);
    ad_var h = ad_bias_relu(t, ad_matmul(t, ad_use(t, n->x), v[0], 0, 1), v[1]);
    h = ad_bias_tanh(t, ad_matmul(t, h, v[2], 0, 1), v[3]);
    return ad_softmax_cross_entropy(t, ad_matmul(t, h, v[4], 0, 1), ad_use(t, n->labels));
}

/* What a fused optimiser does: p -= lr g as soon as g is final, during the sweep, with
** the arithmetic ad_descent_step documents (saxpy with -lr). */
static int descend_now(int index, const ad_tensor *param, const ad_tensor *grad, void *user)
{
    net *n = user;
    ad_tensor *p = ad_params_at(n->ps, index);
    (void)param;
    cblas_saxpy((int)p->size, -(float)n->lr, grad->data, 1, p->data, 1);
    ad_tensor_touch(p);
    return 0;
}

Test(bias_act, sgd_from_the_ready_callback_gives_bitwise_the_parameters_of_descent)
{
    net plain, fused;
    net_open(&plain);
    net_open(&fused);
    ad_grads_on_ready(fused.gs, descend_now, &fused);
    for (int step = 0; step < 5; step++) {
        cr_assert_eq(ad_gradient(plain.tape, plain.ps, net_loss, &plain, plain.gs, NULL),
                     AD_OK, "%s", ad_last_error());
        cr_assert_eq(ad_descent_step(plain.ps, plain.gs, plain.lr), AD_OK);
        cr_assert_eq(ad_gradient(fused.tape, fused.ps, net_loss, &fused, fused.gs, NULL),
                     AD_OK, "step %d: %s", step, ad_last_error());
        for (int k = 0; k < 5; k++)
            cr_assert(memcmp(plain.p[k]->data, fused.p[k]->data,
                             (size_t)plain.p[k]->size * sizeof(float)) == 0,
                      "step %d: parameter %d differs (max |diff| %g)", step, k,
                      ts_max_abs_diff(plain.p[k], fused.p[k]));
    }
    net_close(&plain);
    net_close(&fused);
}

Test(bias_act, steps_with_fused_tails_make_no_heap_allocation_after_the_first)
{
    ts_alloc_install();
    net n;
    net_open(&n);
    double first, last;
    cr_assert_eq(ad_gradient(n.tape, n.ps, net_loss, &n, n.gs, &first), AD_OK);
    cr_assert_eq(ad_descent_step(n.ps, n.gs, n.lr), AD_OK);
    uint64_t before = ts_alloc_count();
    for (int step = 0; step < 50; step++) {
        cr_assert_eq(ad_gradient(n.tape, n.ps, net_loss, &n, n.gs, &last), AD_OK);
        cr_assert_eq(ad_descent_step(n.ps, n.gs, n.lr), AD_OK);
    }
    cr_expect_eq(ts_alloc_count(), before, "%llu allocations in 50 steps",
                 (unsigned long long)(ts_alloc_count() - before));
    cr_expect_lt(last, first, "loss did not fall: %g -> %g", first, last);
    net_close(&n);
    ts_alloc_uninstall();
}
