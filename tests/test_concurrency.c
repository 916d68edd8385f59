/*
** test_concurrency.c: what DESIGN.md states about threads, under load: registration
** from any thread, lookups that never see a torn rule, one tape per thread with
** several tapes at once, atomic per-rule totals and a thread-local last error.
** Threads never call Criterion's asserts: they record what they saw and the main
** thread checks it. scripts/tsan runs this suite under ThreadSanitizer.
*/
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "seed_model.h"
#include "support.h"

enum { THREADS = 4, OWN = 6, FNS = THREADS * OWN, STEPS = 8 };

/* ---- FNS distinct user functions: y = k_n x, each with its own constant, so no
** linker can fold two of them into one address (see ad_rule.h) ---- */

typedef struct scale_attrs {
    double k;
} scale_attrs;

static double k_of(int n)
{
    return 1.0 + (n + 1) / 64.0;
}

/* The constant in the attributes must be the function's own: a call that reached the
** wrong function (a torn or mixed-up table) fails instead of computing quietly. */
static ad_status scale_by(ad_ctx *cx, const ad_tensor *x, double k, ad_tensor **out)
{
    const scale_attrs *a = ad_attrs(cx);
    if (!a || a->k != k)
        return ad_fail(AD_ERR_INVALID, "%s ran with the constant of another function",
                       ad_ctx_op_name(cx));
    ad_status rc = ad_out(cx, x->dtype, x->ndim, x->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < x->size; i++)
        ts_set(*out, i, k * ts_get(x, i));
    return rc;
}

#define SCALE_FN(n)                                                                     \
    static ad_status scale_##n(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out) \
    {                                                                                   \
        return scale_by(cx, in[0], k_of(n), out);                                       \
    }
SCALE_FN(0) SCALE_FN(1) SCALE_FN(2) SCALE_FN(3) SCALE_FN(4) SCALE_FN(5)
SCALE_FN(6) SCALE_FN(7) SCALE_FN(8) SCALE_FN(9) SCALE_FN(10) SCALE_FN(11)
SCALE_FN(12) SCALE_FN(13) SCALE_FN(14) SCALE_FN(15) SCALE_FN(16) SCALE_FN(17)
SCALE_FN(18) SCALE_FN(19) SCALE_FN(20) SCALE_FN(21) SCALE_FN(22) SCALE_FN(23)

static const ad_primal_fn fns[FNS] = {
    scale_0,  scale_1,  scale_2,  scale_3,  scale_4,  scale_5,  scale_6,  scale_7,
    scale_8,  scale_9,  scale_10, scale_11, scale_12, scale_13, scale_14, scale_15,
    scale_16, scale_17, scale_18, scale_19, scale_20, scale_21, scale_22, scale_23};

/* dx = k dy */
static ad_status scale_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                                const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)in, (void)y;
    double k = ((const scale_attrs *)ad_attrs(cx))->k;
    for (int64_t i = 0; din[0] && i < dy->size; i++)
        ts_set(din[0], i, (beta[0] != 0.0f ? ts_get(din[0], i) : 0.0) + k * ts_get(dy, i));
    return AD_OK;
}

static char rule_names[FNS][16];
static ad_rule rules[FNS];

/* Filled before any thread starts; threads only read them. */
static void make_rules(void)
{
    for (int n = 0; n < FNS; n++) {
        snprintf(rule_names[n], sizeof rule_names[n], "scale #%d", n);
        rules[n] = (ad_rule){.name = rule_names[n], .pullback = scale_pullback, .n_inputs = 1,
                             .attrs_size = sizeof(scale_attrs)};
    }
}

/* ---- one worker: registers its functions, looks everything up, trains its tape ---- */

typedef struct worker {
    int id;
    seed_model m;
    double loss;
    ad_status rc;
    char msg[512];
    int registered, torn, own_missing;
    uint64_t own_pullbacks;
} worker;

static pthread_barrier_t start;

/* The seed model (FA layers through my_matmul), then the worker's own functions. */
static ad_var worker_loss(ad_tape *t, void *user)
{
    worker *w = user;
    ad_var h = ad_use(t, w->m.x);
    for (int l = 0; l < SEED_LAYERS; l++)
        h = ad_call(t, my_matmul, ad_use(t, w->m.W[l]), h, ad_use(t, w->m.B[l]));
    for (int j = 0; j < OWN; j++) {
        int n = w->id * OWN + j;
        scale_attrs a = {k_of(n)};
        h = ad_call_as(t, fns[n], rule_names[n], &h, 1, &a, sizeof a);
    }
    return ad_mse(t, h, ad_use(t, w->m.y));
}

/* Every function's rule is absent (its thread has not registered it yet) or whole,
** and the worker's own registered rules are there. */
static void look_up_all(worker *w)
{
    for (int n = 0; n < FNS; n++) {
        const ad_rule *r = ad_rule_find(fns[n]);
        bool own = n / OWN == w->id && n % OWN < w->registered;
        if (!r)
            w->own_missing += own;
        else if (r->pullback != scale_pullback || r->n_inputs != 1 ||
                 strcmp(r->name, rule_names[n]) != 0)
            w->torn++;
    }
}

static void train(worker *w, ad_tape *t)
{
    for (int s = 0; w->rc == AD_OK && s < STEPS; s++) {
        w->rc = ad_gradient(t, w->m.ps, worker_loss, w, w->m.gs, &w->loss);
        if (w->rc == AD_OK)
            w->rc = ad_descent_step(w->m.ps, w->m.gs, 0.05);
    }
    if (w->rc)
        snprintf(w->msg, sizeof w->msg, "%s", ad_last_error());
}

static void *work(void *arg)
{
    worker *w = arg;
    ad_tape *t;
    w->rc = ad_tape_new(&t);
    pthread_barrier_wait(&start);
    for (int j = 0; w->rc == AD_OK && j < OWN; j++) {
        int n = w->id * OWN + j;
        w->rc = ad_rule_register_as(fns[n], rule_names[n], &rules[n], 0);
        w->registered += w->rc == AD_OK;
        look_up_all(w);
    }
    if (w->rc == AD_OK) {
        train(w, t);
        look_up_all(w);
        w->own_pullbacks = ad_tape_pullback_count(t, fns[w->id * OWN]);
    } else {
        snprintf(w->msg, sizeof w->msg, "%s", ad_last_error());
    }
    ad_tape_free(t);
    return NULL;
}

Test(concurrency, threads_register_look_up_and_train_their_own_tapes_at_once)
{
    make_rules();
    cr_assert_eq(ad_rule_register(my_matmul, &my_matmul_rule), AD_OK);
    worker ws[THREADS];
    pthread_t th[THREADS];
    cr_assert_eq(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++) {
        ws[i] = (worker){.id = i};
        seed_model_make(&ws[i].m, AD_F32, 100 + (uint64_t)i);
        cr_assert_eq(pthread_create(&th[i], NULL, work, &ws[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(ws[i].rc, AD_OK, "thread %d: %s", i, ws[i].msg);
        cr_expect_eq(ws[i].torn, 0, "thread %d saw %d torn rules", i, ws[i].torn);
        cr_expect_eq(ws[i].own_missing, 0, "thread %d lost its own rules", i);
        cr_expect_eq(ws[i].own_pullbacks, (uint64_t)STEPS);
    }
    cr_expect_eq(ad_rule_total_pullbacks(my_matmul), (uint64_t)THREADS * STEPS * SEED_LAYERS,
                 "the process total lost counts");
    for (int n = 0; n < FNS; n++)
        cr_expect_eq(ad_rule_total_pullbacks(fns[n]), (uint64_t)STEPS, "function %d", n);

    /* The same training, one worker at a time, gives bitwise the same weights. */
    for (int i = 0; i < THREADS; i++) {
        worker alone = {.id = i};
        ad_tape *t;
        seed_model_make(&alone.m, AD_F32, 100 + (uint64_t)i);
        cr_assert_eq(ad_tape_new(&t), AD_OK);
        train(&alone, t);
        cr_assert_eq(alone.rc, AD_OK, "%s", alone.msg);
        cr_expect_eq(memcmp(&alone.loss, &ws[i].loss, sizeof alone.loss), 0,
                     "thread %d: loss %.9g, alone %.9g", i, ws[i].loss, alone.loss);
        for (int l = 0; l < SEED_LAYERS; l++)
            cr_expect_eq(memcmp(alone.m.W[l]->data, ws[i].m.W[l]->data,
                                (size_t)alone.m.W[l]->size * sizeof(float)), 0,
                         "thread %d, layer %d: weights differ from a lone run", i, l);
        ad_tape_free(t);
        seed_model_free(&alone.m);
        seed_model_free(&ws[i].m);
    }
}

/* ---- churn: one thread registers and unregisters while others record calls ---- */

static _Atomic int churning;

static void *churn(void *arg)
{
    (void)arg;
    for (int i = 0; atomic_load(&churning); i++) {
        if (i % 2 == 0)
            ad_rule_register_as(fns[0], rule_names[0], &rules[0], AD_REPLACE);
        else
            ad_rule_unregister(fns[0]);
    }
    return NULL;
}

typedef struct caller {
    int ok, no_rule, other, swept;
    char msg[512];
} caller;

/* Records scale_0 again and again: each call either finds the rule or fails with
** AD_ERR_NO_RULE; a recorded tape sweeps even if the rule is gone by then. */
static void *call_repeatedly(void *arg)
{
    caller *c = arg;
    ad_tensor *x = ts_tensor(AD_F64, 1, TS_SHAPE(8));
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    if (ad_params_new(&ps) || ad_params_add(ps, x, NULL) || ad_grads_new(ps, &gs) ||
        ad_tape_new(&t)) {
        c->other++;
        return NULL;
    }
    scale_attrs a = {k_of(0)};
    for (int i = 0; i < 2000; i++) {
        ad_tape_reset(t);
        ad_var h = ad_use(t, x);
        ad_var y = ad_sum(t, ad_call_as(t, fns[0], rule_names[0], &h, 1, &a, sizeof a));
        ad_status rc = ad_tape_status(t);
        if (rc == AD_OK && ad_backward(t, y, ps, gs) == AD_OK &&
            ts_get(ad_grads_get(gs, x), 3) == k_of(0))
            c->swept++;
        c->ok += rc == AD_OK;
        c->no_rule += rc == AD_ERR_NO_RULE;
        if (rc != AD_OK && rc != AD_ERR_NO_RULE && c->other++ == 0)
            snprintf(c->msg, sizeof c->msg, "%s", ad_tape_error(t));
    }
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(x);
    return NULL;
}

Test(concurrency, recording_while_a_rule_comes_and_goes_finds_it_whole_or_not_at_all)
{
    make_rules();
    atomic_store(&churning, 1);
    pthread_t writer, th[THREADS - 1];
    caller cs[THREADS - 1] = {{0}};
    cr_assert_eq(pthread_create(&writer, NULL, churn, NULL), 0);
    for (int i = 0; i < THREADS - 1; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, call_repeatedly, &cs[i]), 0);
    for (int i = 0; i < THREADS - 1; i++)
        pthread_join(th[i], NULL);
    atomic_store(&churning, 0);
    pthread_join(writer, NULL);
    for (int i = 0; i < THREADS - 1; i++) {
        cr_expect_eq(cs[i].other, 0, "caller %d: %s", i, cs[i].msg);
        cr_expect_eq(cs[i].ok + cs[i].no_rule, 2000);
        cr_expect_eq(cs[i].swept, cs[i].ok, "caller %d: a recorded tape failed to sweep", i);
    }
}

/* ---- the last error is the calling thread's own ---- */

typedef struct messenger {
    int id, wrong;
} messenger;

static void *fail_and_read_back(void *arg)
{
    messenger *m = arg;
    char want[64];
    pthread_barrier_wait(&start);
    for (int i = 0; i < 500; i++) {
        ad_tensor *out = NULL;
        int64_t extent = -(m->id * 1000 + i) - 1; /* negative: refused, named */
        snprintf(want, sizeof want, "(%lld)", (long long)extent);
        if (ad_tensor_new(AD_F32, 1, &extent, &out) != AD_ERR_INVALID || out ||
            !strstr(ad_last_error(), want))
            m->wrong++;
    }
    return NULL;
}

Test(concurrency, each_thread_reads_its_own_last_error)
{
    messenger ms[THREADS];
    pthread_t th[THREADS];
    cr_assert_eq(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++) {
        ms[i] = (messenger){.id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, fail_and_read_back, &ms[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < THREADS; i++)
        cr_expect_eq(ms[i].wrong, 0, "thread %d read another thread's message", i);
}
