/*
** test_threads.c: one tape per thread; the registry shared by all.
** Runs with OpenBLAS's default thread count (no OPENBLAS_NUM_THREADS in meson.build).
*/
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "seed_model.h"
#include "support.h"

enum { STEPS = 20, THREADS = 2 };

typedef struct run {
    seed_model m;
    double loss;
    ad_status rc;
} run;

static void *train(void *arg)
{
    run *r = arg;
    ad_tape *t;
    r->rc = ad_tape_new(&t);
    for (int s = 0; r->rc == AD_OK && s < STEPS; s++) {
        r->rc = ad_gradient(t, r->m.ps, seed_loss, &r->m, r->m.gs, &r->loss);
        if (r->rc == AD_OK)
            r->rc = ad_descent_step(r->m.ps, r->m.gs, 0.1);
    }
    ad_tape_free(t);
    return NULL;
}

Test(threads, two_tapes_in_two_threads_train_like_one_thread)
{
    cr_assert_eq(ad_rule_register(my_matmul, &my_matmul_rule), AD_OK);
    run alone, pair[THREADS];
    seed_model_make(&alone.m, AD_F32, 23);
    train(&alone);
    cr_assert_eq(alone.rc, AD_OK, "%s", ad_last_error());
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        seed_model_make(&pair[i].m, AD_F32, 23);
        cr_assert_eq(pthread_create(&th[i], NULL, train, &pair[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(pair[i].rc, AD_OK);
        cr_expect_eq(pair[i].loss, alone.loss, "thread %d loss %.9g vs %.9g", i, pair[i].loss,
                     alone.loss);
        for (int l = 0; l < SEED_LAYERS; l++) {
            const ad_tensor *a = ad_grads_get(pair[i].m.gs, pair[i].m.W[l]);
            const ad_tensor *b = ad_grads_get(alone.m.gs, alone.m.W[l]);
            /* Same shapes, same kernels, same order: the results are bitwise equal. */
            cr_expect_eq(memcmp(a->data, b->data, (size_t)a->size * sizeof(float)), 0,
                         "thread %d layer %d gradient differs", i, l);
            cr_expect_eq(memcmp(pair[i].m.W[l]->data, alone.m.W[l]->data,
                                (size_t)a->size * sizeof(float)), 0);
        }
        seed_model_free(&pair[i].m);
    }
    seed_model_free(&alone.m);
}

static ad_status pullback_a(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                            const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    return my_matmul_pullback(cx, dy, in, y, din, beta);
}

static ad_status pullback_b(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                            const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    return ad_dense_backprop_pullback(cx, dy, in, y, din, beta);
}

static const ad_rule rule_a = {.name = "a", .pullback = pullback_a, .n_inputs = 3,
                               .nondiff = AD_INPUT(2)};
static const ad_rule rule_b = {.name = "b", .pullback = pullback_b, .n_inputs = 3,
                               .nondiff = AD_INPUT(2)};

static _Atomic int stop;

static void *replace_forever(void *arg)
{
    (void)arg;
    for (int i = 0; !stop; i++)
        ad_rule_replace(my_matmul, i % 2 ? &rule_a : &rule_b);
    return NULL;
}

Test(threads, lookups_during_replacement_always_see_a_whole_rule)
{
    cr_assert_eq(ad_rule_register(my_matmul, &rule_a), AD_OK);
    pthread_t writer;
    cr_assert_eq(pthread_create(&writer, NULL, replace_forever, NULL), 0);
    int seen_a = 0, seen_b = 0, torn = 0;
    for (int i = 0; i < 200000; i++) {
        const ad_rule *r = ad_rule_find(my_matmul);
        if (r && r->pullback == pullback_a && strcmp(r->name, "a") == 0)
            seen_a++;
        else if (r && r->pullback == pullback_b && strcmp(r->name, "b") == 0)
            seen_b++;
        else
            torn++;
    }
    stop = 1;
    pthread_join(writer, NULL);
    cr_expect_eq(torn, 0);
    cr_expect_gt(seen_a + seen_b, 0);
}
