/*
** test_own_threads.c: adtape's own loops (conv2d's im2col and col2im, 2x2 max pooling)
** split over ad_set_num_threads' threads give bitwise the same loss and gradients at
** 1, 2 and 3 threads, also while two tapes in two threads use them at once (one region
** at a time holds the pool; the other runs alone). The shapes are chosen so every one
** of those loops is split (each part at least the library's grain of 32768 elements).
** conv2d's im2col blocks are shared over OpenBLAS's thread count (conv_blocks.c), so a
** conv layer alone is also run at 1, 2 and 3 OpenBLAS threads (the whole network's
** single-block GEMMs are OpenBLAS's, whose bits depend on its count).
** ThreadSanitizer runs this suite (scripts/tsan).
*/
#include <cblas.h>
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

enum { N_PARAMS = 6, STEPS = 3 };

typedef struct net {
    ad_tensor *x, *labels, *p[N_PARAMS], *fb; /* p: w1 b1 w2 b2 w3 b3; fb: conv2's B */
    ad_params *ps;
} net;

static ad_var record(ad_tape *t, void *user)
{
    net *n = user;
    const ad_pool2d_attrs pool = AD_POOL2D_ATTRS(2, 2);
    ad_var u[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++)
        u[i] = ad_use(t, n->p[i]);
    ad_var x = ad_use(t, n->x), fb = ad_use(t, n->fb);
    ad_var h = ad_relu(t, ad_conv2d_bias(t, x, u[0], u[1], NULL)); /* 8x24x22x22 */
    h = ad_max_pool2d(t, h, &pool);                                  /* 8x24x11x11 */
    h = ad_conv2d_bias_fa(t, h, u[2], u[3], fb, NULL);               /* 8x16x9x9 */
    h = ad_bias_add(t, ad_matmul(t, ad_flatten(t, h), u[4], 0, 1), u[5]);
    return ad_softmax_cross_entropy(t, h, ad_use(t, n->labels));
}

static void net_make(net *n, uint64_t seed)
{
    const int64_t shapes[N_PARAMS][4] = {{24, 6, 3, 3}, {24}, {16, 24, 3, 3}, {16},
                                         {10, 16 * 9 * 9}, {10}};
    const int ndims[N_PARAMS] = {4, 1, 4, 1, 2, 1};
    uint64_t rng = seed;
    cr_assert_eq(ad_params_new(&n->ps), AD_OK);
    for (int i = 0; i < N_PARAMS; i++) {
        n->p[i] = ts_tensor(AD_F32, ndims[i], shapes[i]);
        ts_fill_uniform(n->p[i], &rng, -0.2, 0.2);
        cr_assert_eq(ad_params_add(n->ps, n->p[i], NULL), AD_OK);
    }
    n->fb = ts_tensor(AD_F32, 4, shapes[2]);
    ts_fill_uniform(n->fb, &rng, -0.2, 0.2);
    n->x = ts_tensor(AD_F32, 4, TS_SHAPE(8, 6, 24, 24));
    ts_fill_uniform(n->x, &rng, -1, 1);
    n->labels = ts_tensor(AD_I32, 1, TS_SHAPE(8));
    for (int i = 0; i < 8; i++)
        ((int32_t *)n->labels->data)[i] = (int32_t)(ts_next(&rng) % 10);
}

static void net_free(net *n)
{
    for (int i = 0; i < N_PARAMS; i++)
        ad_tensor_free(n->p[i]);
    ad_tensor_free(n->fb), ad_tensor_free(n->x), ad_tensor_free(n->labels);
    ad_params_free(n->ps);
}

/* STEPS steps of SGD; the loss of each and the final gradients and parameters. */
typedef struct result {
    double loss[STEPS];
    float *values; /* gradients then parameters, concatenated */
    size_t count;
    ad_status rc;
} result;

static result train(net *n)
{
    result r = {.rc = AD_OK};
    ad_tape *t;
    ad_grads *gs;
    r.rc = ad_tape_new(&t);
    if (r.rc == AD_OK)
        r.rc = ad_grads_new(n->ps, &gs);
    for (int s = 0; r.rc == AD_OK && s < STEPS; s++) {
        r.rc = ad_gradient(t, n->ps, record, n, gs, &r.loss[s]);
        if (r.rc == AD_OK)
            r.rc = ad_descent_step(n->ps, gs, 0.05);
    }
    for (int i = 0; r.rc == AD_OK && i < N_PARAMS; i++)
        r.count += 2 * (size_t)n->p[i]->size;
    r.values = r.rc == AD_OK ? malloc(r.count * sizeof(float)) : NULL;
    for (int i = 0, at = 0; r.values && i < N_PARAMS; i++) {
        size_t k = (size_t)n->p[i]->size;
        memcpy(r.values + at, ad_grads_get(gs, n->p[i])->data, k * sizeof(float));
        memcpy(r.values + at + k, n->p[i]->data, k * sizeof(float));
        at += (int)(2 * k);
    }
    if (t)
        ad_tape_free(t);
    if (r.rc == AD_OK)
        ad_grads_free(gs);
    return r;
}

static void expect_same(const result *a, const result *b, const char *what)
{
    cr_assert_eq(a->rc, AD_OK);
    cr_assert_eq(b->rc, AD_OK, "%s: %s", what, ad_last_error());
    cr_expect(memcmp(a->loss, b->loss, sizeof a->loss) == 0, "%s: losses differ", what);
    cr_assert_eq(a->count, b->count);
    cr_expect(memcmp(a->values, b->values, a->count * sizeof(float)) == 0,
              "%s: gradients or parameters differ", what);
}

static result run_fresh(uint64_t seed)
{
    net n;
    net_make(&n, seed);
    result r = train(&n);
    net_free(&n);
    return r;
}

Test(own_threads, one_two_and_three_threads_give_bitwise_the_same_training)
{
    cr_expect_eq(ad_get_num_threads(), 1, "one thread until set");
    cr_expect_eq(ad_get_num_threads(), 1);
    result one = run_fresh(5);
    for (int threads = 2; threads <= 3; threads++) {
        ad_set_num_threads(threads);
        cr_expect_eq(ad_get_num_threads(), threads);
        result r = run_fresh(5);
        expect_same(&one, &r, threads == 2 ? "2 threads" : "3 threads");
        free(r.values);
    }
    ad_set_num_threads(0); /* OpenBLAS's count */
    cr_expect(ad_get_num_threads() >= 1);
    ad_set_num_threads(99);
    cr_expect_eq(ad_get_num_threads(), 16, "capped at 16");
    ad_set_num_threads(1);
    free(one.values);
}

/* One conv layer on the im2col path with 3 blocks of 3, 3 and 2 images: y, dX and dW at
** the given OpenBLAS count, concatenated into out (8*24*22*22 + 8*6*24*24 + 24*6*3*3). */
enum { Y_N = 8 * 24 * 22 * 22, X_N = 8 * 6 * 24 * 24, W_N = 24 * 6 * 3 * 3 };

static void conv_at(int blas_threads, float *out)
{
    openblas_set_num_threads(blas_threads);
    uint64_t rng = 11;
    ad_tensor *x = ts_tensor(AD_F32, 4, TS_SHAPE(8, 6, 24, 24));
    ad_tensor *w = ts_tensor(AD_F32, 4, TS_SHAPE(24, 6, 3, 3));
    ad_tensor *r = ts_tensor(AD_F32, 4, TS_SHAPE(8, 24, 22, 22));
    ts_fill_uniform(x, &rng, -1, 1), ts_fill_uniform(w, &rng, -1, 1);
    ts_fill_uniform(r, &rng, -1, 1);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, x, NULL), AD_OK);
    cr_assert_eq(ad_params_add(ps, w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_conv2d(t, ad_use(t, x), ad_use(t, w), NULL);
    ad_var loss = ad_sum(t, ad_mul(t, y, ad_use(t, r)));
    cr_assert_eq(ad_backward(t, loss, ps, gs), AD_OK, "%s", ad_last_error());
    memcpy(out, ad_value(t, y)->data, Y_N * sizeof(float));
    memcpy(out + Y_N, ad_grads_at(gs, 0)->data, X_N * sizeof(float));
    memcpy(out + Y_N + X_N, ad_grads_at(gs, 1)->data, W_N * sizeof(float));
    cr_expect_eq(openblas_get_num_threads(), blas_threads, "conv2d put the count back");
    ad_tape_free(t), ad_grads_free(gs), ad_params_free(ps);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(r);
}

/* The blocks are shared over OpenBLAS's count (1, 2, 3 parts), dW summed in the same
** groups, so y, dX and dW are the same bits. */
Test(own_threads, conv_blocks_over_one_two_and_three_blas_threads_give_the_same_bits)
{
    int was = openblas_get_num_threads();
    float *one = malloc((Y_N + X_N + W_N) * sizeof(float));
    float *other = malloc((Y_N + X_N + W_N) * sizeof(float));
    cr_assert(one && other);
    conv_at(1, one);
    for (int threads = 2; threads <= 3; threads++) {
        conv_at(threads, other);
        cr_expect(memcmp(one, other, Y_N * sizeof(float)) == 0, "y differs at %d", threads);
        cr_expect(memcmp(one + Y_N, other + Y_N, X_N * sizeof(float)) == 0,
                  "dX differs at %d", threads);
        cr_expect(memcmp(one + Y_N + X_N, other + Y_N + X_N, W_N * sizeof(float)) == 0,
                  "dW differs at %d", threads);
    }
    openblas_set_num_threads(was);
    free(one), free(other);
}

static void *train_thread(void *arg)
{
    result *r = arg;
    *r = run_fresh(5);
    return NULL;
}

Test(own_threads, two_tapes_sharing_the_pool_at_once_train_as_one_alone)
{
    ad_set_num_threads(2);
    result alone = run_fresh(5), pair[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, train_thread, &pair[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        expect_same(&alone, &pair[i], i ? "second thread" : "first thread");
        free(pair[i].values);
    }
    free(alone.values);
    ad_set_num_threads(1);
}
