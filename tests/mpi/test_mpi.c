/*
** test_mpi.c: data-parallel training on 2 ranks (mpirun -np 2), against references
** computed in one process on every rank. The collectives' own tests are in
** test_collectives.c; main is here.
**
** The bitwise reference: one process computes shard 0's gradient, then shard 1's,
** sums them (g0 + g1) in the parameters' dtype and scales by 0.5, then takes the same
** optimiser step. With 2 ranks MPI's sum is that same single addition (IEEE addition
** commutes), and 0.5 is exact, so parameters must agree to the bit after every step.
*/
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "ad_mpi.h"
#include "harness.h"
#include "mlp.h"
#include "test_collectives.h"

enum { STEPS = 5, SHARD = MLP_ROWS / 2 };

/* Grad buffers of the reference for shard 0's gradient, kept while shard 1's runs. */
typedef struct reference {
    mlp m;
    ad_tensor *g0[MLP_PARAMS];
} reference;

static void reference_new(reference *r, int rule, ad_dtype dtype)
{
    mlp_new(&r->m, rule, dtype, 1000, 2000); /* rank 0's seeds */
    for (int p = 0; p < MLP_PARAMS; p++) {
        const ad_tensor *w = ad_params_at(r->m.ps, p);
        REQUIRE(ad_tensor_new(w->dtype, w->ndim, w->shape, &r->g0[p]));
    }
}

static void reference_free(reference *r)
{
    for (int p = 0; p < MLP_PARAMS; p++)
        ad_tensor_free(r->g0[p]);
    mlp_free(&r->m);
}

/* One step of the 2-shard computation in this process; the shard losses to l[0..1]. */
static void reference_step(reference *r, const mlp_data *d, double l[2])
{
    mlp *m = &r->m;
    mlp_batch shard[2];
    mlp_batch_init(&shard[0], m, d, 0, SHARD);
    mlp_batch_init(&shard[1], m, d, SHARD, SHARD);
    REQUIRE(ad_gradient(m->tape, m->ps, mlp_loss, &shard[0], m->gs, &l[0]));
    for (int p = 0; p < MLP_PARAMS; p++) {
        const ad_tensor *g = ad_grads_at(m->gs, p);
        if (g)
            REQUIRE(ad_tensor_copy_from(r->g0[p], g));
    }
    REQUIRE(ad_gradient(m->tape, m->ps, mlp_loss, &shard[1], m->gs, &l[1]));
    for (int p = 0; p < MLP_PARAMS; p++) {
        const ad_tensor *g = ad_grads_at(m->gs, p);
        if (!g)
            continue;
        if (g->dtype == AD_F32) {
            float *g1 = g->data;
            const float *g0 = r->g0[p]->data;
            for (int64_t i = 0; i < g->size; i++)
                g1[i] = (g0[i] + g1[i]) * 0.5f;
        } else {
            double *g1 = g->data;
            const double *g0 = r->g0[p]->data;
            for (int64_t i = 0; i < g->size; i++)
                g1[i] = (g0[i] + g1[i]) * 0.5;
        }
    }
    REQUIRE(ad_optim_step(m->opt, m->gs));
}

/* The data-parallel model: its own weights (rank 1's differ until ad_mpi_new sends
** rank 0's) and feedback matrices (sent with ad_mpi_broadcast). */
static ad_mpi *dp_model(mlp *m, int rule, ad_dtype dtype, const ad_mpi_options *o)
{
    mlp_new(m, rule, dtype, 1000 + (uint64_t)g_rank, 2000 + (uint64_t)g_rank);
    ad_mpi *dp = NULL;
    REQUIRE(ad_mpi_new(MPI_COMM_WORLD, m->ps, m->gs, o, &dp));
    for (int l = 0; l < MLP_LAYERS; l++)
        if (m->B[l])
            REQUIRE(ad_mpi_broadcast(dp, m->B[l]));
    return dp;
}

static void test_bitwise(int rule, ad_dtype dtype, int no_overlap, size_t bucket_bytes)
{
    /* The small-bucket runs sweep with memory saving: reused buffers must not change
    ** what the gradient-ready callback copies into the buckets. */
    int saving = bucket_bytes == 256;
    char name[128];
    snprintf(name, sizeof name, "bitwise %s %s %s, buckets of %zu bytes%s",
             mlp_rule_name(rule), ad_dtype_name(dtype), no_overlap ? "no overlap" : "overlap",
             bucket_bytes ? bucket_bytes : (size_t)AD_MPI_DEFAULT_BUCKET_BYTES,
             saving ? ", memory saving" : "");
    reference ref;
    reference_new(&ref, rule, dtype);
    mlp_data data;
    mlp_data_new(&data, dtype, 3000);
    mlp m;
    ad_mpi_options o = {.bucket_bytes = bucket_bytes, .no_overlap = no_overlap};
    ad_mpi *dp = dp_model(&m, rule, dtype, &o);
    ad_tape_set_memory_saving(m.tape, saving);
    CHECK(mlp_params_equal(&m, &ref.m), "%s: after ad_mpi_new the parameters are rank 0's",
          name);
    int same_b = 1;
    for (int l = 0; l < MLP_LAYERS; l++)
        if (m.B[l])
            same_b &= !memcmp(m.B[l]->data, ref.m.B[l]->data,
                              (size_t)m.B[l]->size * ad_dtype_size(dtype));
    CHECK(same_b, "%s: feedback matrices are rank 0's after ad_mpi_broadcast", name);
    mlp_batch mine;
    mlp_batch_init(&mine, &m, &data, g_rank * SHARD, SHARD);
    for (int step = 1; step <= STEPS; step++) {
        uint64_t before = alloc_count();
        double loss = NAN, l[2];
        ad_status rc = ad_mpi_gradient(dp, m.tape, mlp_loss, &mine, &loss);
        if (rc == AD_OK)
            rc = ad_optim_step(m.opt, m.gs);
        uint64_t allocs = alloc_count() - before;
        reference_step(&ref, &data, l);
        CHECK(rc == AD_OK, "%s, step %d: ad_mpi_gradient and ad_optim_step succeed (%s)", name,
              step, rc ? ad_last_error() : "ok");
        CHECK(loss == (l[0] + l[1]) / 2, "%s, step %d: loss %.17g is the mean of the shard "
              "losses %.17g and %.17g", name, step, loss, l[0], l[1]);
        const ad_tensor *own = ad_value(m.tape, ad_tape_loss(m.tape));
        CHECK(own && ad_tensor_get(own, 0) == l[g_rank], "%s, step %d: ad_tape_loss is "
              "this rank's shard loss", name, step);
        CHECK(mlp_params_equal(&m, &ref.m), "%s, step %d: parameters bitwise equal to the "
              "one-process reference", name, step);
        CHECK(!ad_grads_get(m.gs, m.U), "%s, step %d: the unused parameter has no gradient",
              name, step);
        if (step > 1)
            CHECK(allocs == 0, "%s, step %d: %llu allocations through the hooks in the step "
                  "(want 0)", name, step, (unsigned long long)allocs);
    }
    CHECK(ad_mpi_comm_seconds(dp) > 0.0, "%s: comm_seconds %g > 0", name,
          ad_mpi_comm_seconds(dp));
    ad_mpi_reset_comm_seconds(dp);
    CHECK(ad_mpi_comm_seconds(dp) == 0.0, "%s: comm_seconds 0 after a reset", name);
    ad_mpi_free(dp);
    mlp_free(&m);
    mlp_data_free(&data);
    reference_free(&ref);
}

/*
** Against one process on the whole batch of 16 rows. The sharded computation differs
** only in rounding: each rank sums 8 rows in dW = dY' X and the two halves are added,
** where one process sums 16 at once (the mean's 1/8 * 1/2 and 1/16 are both exact).
** That is a few float32 ulps (~1e-7 relative) per gradient element; over 5 steps of
** lr 0.1 with momentum 0.9 (at most ~14 lr-weighted gradients per parameter) it stays
** far below 1e-5 relative (absolute below 1), while any real error -- a missing or
** doubled 1/size, a lost bucket -- moves parameters by about lr |g|, some 1e-3 or more.
*/
static void test_tolerance(int rule)
{
    const double tol = 1e-5;
    mlp whole, m;
    mlp_new(&whole, rule, AD_F32, 1000, 2000);
    mlp_data data;
    mlp_data_new(&data, AD_F32, 3000);
    ad_mpi *dp = dp_model(&m, rule, AD_F32, NULL);
    mlp_batch all, mine;
    mlp_batch_init(&all, &whole, &data, 0, MLP_ROWS);
    mlp_batch_init(&mine, &m, &data, g_rank * SHARD, SHARD);
    ad_tensor *w0 = NULL;
    REQUIRE(ad_tensor_new(AD_F32, 2, m.W[0]->shape, &w0));
    REQUIRE(ad_tensor_copy_from(w0, m.W[0]));
    ad_status rc = AD_OK;
    for (int step = 1; step <= STEPS; step++) {
        ad_status r1 = ad_mpi_gradient(dp, m.tape, mlp_loss, &mine, NULL);
        rc = rc ? rc : r1 ? r1 : ad_optim_step(m.opt, m.gs);
        REQUIRE(ad_gradient(whole.tape, whole.ps, mlp_loss, &all, whole.gs, NULL));
        REQUIRE(ad_optim_step(whole.opt, whole.gs));
    }
    CHECK(rc == AD_OK, "tolerance %s: 5 data-parallel steps succeed", mlp_rule_name(rule));
    double worst = 0.0, moved = 0.0;
    for (int p = 0; p < MLP_PARAMS; p++) {
        const ad_tensor *a = ad_params_at(m.ps, p), *b = ad_params_at(whole.ps, p);
        for (int64_t i = 0; i < a->size; i++) {
            double x = ad_tensor_get(a, i), y = ad_tensor_get(b, i);
            double d = fabs(x - y) / fmax(1.0, fabs(y));
            worst = d > worst || isnan(d) ? d : worst;
        }
    }
    for (int64_t i = 0; i < w0->size; i++)
        moved = fmax(moved, fabs(ad_tensor_get(w0, i) - ad_tensor_get(m.W[0], i)));
    CHECK(worst <= tol, "tolerance %s: max relative difference from one process on the "
          "whole batch %.3g <= %g", mlp_rule_name(rule), worst, tol);
    CHECK(moved > 1e-3, "tolerance %s: training moved W0 by %.3g (> 1e-3), so the "
          "comparison means something", mlp_rule_name(rule), moved);
    ad_tensor_free(w0);
    ad_mpi_free(dp);
    mlp_free(&m);
    mlp_free(&whole);
    mlp_data_free(&data);
}

/* One failing step: rank `who` (or both, -1) records `how`; checks each rank's result. */
static void failing_step(ad_mpi *dp, mlp *m, mlp_batch *mine, int step, int who, int how,
                         const char *label)
{
    int fails_here = who < 0 || who == g_rank;
    mine->fail = fails_here ? how : MLP_GOOD;
    if (who < 0 && g_rank == 0)
        mine->fail = MLP_FAIL_RECORD; /* both fail, differently */
    ad_status want = mine->fail == MLP_FAIL_RECORD ? AD_ERR_SHAPE : AD_ERR_INVALID;
    ad_status rc = ad_mpi_gradient(dp, m->tape, mlp_loss, mine, NULL);
    const char *msg = ad_last_error();
    mine->fail = MLP_GOOD;
    if (fails_here) {
        CHECK(rc == want, "%s, step %d: the failing rank gets its own status (%s, want %s)",
              label, step, ad_status_str(rc), ad_status_str(want));
        CHECK(want != AD_ERR_INVALID || strstr(msg, "failing on purpose"),
              "%s, step %d: its message is kept: \"%s\"", label, step, msg);
    } else {
        char needle[64];
        snprintf(needle, sizeof needle, "rank %d failed at step %d", who, step);
        CHECK(rc == AD_ERR_PEER_FAILED && strstr(msg, needle),
              "%s, step %d: the healthy rank gets AD_ERR_PEER_FAILED naming the rank: %s: "
              "\"%s\"", label, step, ad_status_str(rc), msg);
    }
}

/* A sweep that fails on one rank: both return at the same step, and good steps after
** it give exactly the reference's parameters (the context and momentum carry nothing
** over from the failed steps, where no optimiser step is taken). */
static void test_failure(int no_overlap)
{
    char label[64];
    snprintf(label, sizeof label, "failure, %s", no_overlap ? "no overlap" : "overlap");
    reference ref;
    reference_new(&ref, MLP_BP, AD_F32);
    mlp_data data;
    mlp_data_new(&data, AD_F32, 3000);
    mlp m;
    ad_mpi_options o = {.bucket_bytes = 256, .no_overlap = no_overlap};
    ad_mpi *dp = dp_model(&m, MLP_BP, AD_F32, &o);
    mlp_batch mine;
    mlp_batch_init(&mine, &m, &data, g_rank * SHARD, SHARD);
    int step = 0;
    for (int phase = 0; phase < 6; phase++) {
        step++;
        if (phase == 1)
            failing_step(dp, &m, &mine, step, 1, MLP_FAIL_PULLBACK, label);
        else if (phase == 2)
            failing_step(dp, &m, &mine, step, 1, MLP_FAIL_RECORD, label);
        else if (phase == 3)
            failing_step(dp, &m, &mine, step, 0, MLP_FAIL_PULLBACK, label);
        else if (phase == 4)
            failing_step(dp, &m, &mine, step, -1, MLP_FAIL_PULLBACK, label);
        else {
            double l[2];
            ad_status rc = ad_mpi_gradient(dp, m.tape, mlp_loss, &mine, NULL);
            if (rc == AD_OK)
                rc = ad_optim_step(m.opt, m.gs);
            reference_step(&ref, &data, l);
            CHECK(rc == AD_OK && mlp_params_equal(&m, &ref.m), "%s, step %d: a good step "
                  "succeeds and matches the reference bitwise (%s)", label, step,
                  rc ? ad_last_error() : "ok");
        }
    }
    ad_mpi_free(dp);
    mlp_free(&m);
    mlp_data_free(&data);
    reference_free(&ref);
}

/* The partial model: loss = mean(x A') (+ sum(E .* E) when `use_e`). */
typedef struct partial {
    ad_tensor *x, *a, *e;
    int use_e;
} partial;

static ad_var partial_loss(ad_tape *t, void *user)
{
    partial *p = user;
    ad_var l = ad_mean(t, ad_matmul(t, ad_use(t, p->x), ad_use(t, p->a), 0, 1));
    if (p->use_e) {
        ad_var e = ad_use(t, p->e);
        l = ad_add(t, l, ad_sum(t, ad_mul(t, e, e)));
    }
    return l;
}

/*
** A parameter only some ranks' losses use: the ranks without its gradient send zeros
** (not what their bucket held from the step before), so rank 0 gets (2E + 0) / 2 = E
** exactly, and rank 1 stays without a gradient for it. Step 1 has both ranks use E,
** so that stale values sit in rank 1's slot when step 2 leaves it out.
*/
static void test_partial(void)
{
    partial p = {0};
    ad_params *ps = NULL;
    ad_grads *gs = NULL;
    ad_tape *tape = NULL;
    REQUIRE(ad_tensor_new(AD_F32, 2, (const int64_t[]){2, 3}, &p.x));
    REQUIRE(ad_tensor_new(AD_F32, 2, (const int64_t[]){4, 3}, &p.a));
    REQUIRE(ad_tensor_new(AD_F32, 1, (const int64_t[]){5}, &p.e));
    ad_rng r;
    ad_rng_seed(&r, 9);
    REQUIRE(ad_init_uniform(p.x, &r, -1.0, 1.0));
    REQUIRE(ad_init_uniform(p.a, &r, -1.0, 1.0));
    REQUIRE(ad_init_uniform(p.e, &r, -1.0, 1.0));
    REQUIRE(ad_params_new(&ps));
    REQUIRE(ad_params_add(ps, p.a, NULL));
    REQUIRE(ad_params_add(ps, p.e, NULL));
    REQUIRE(ad_grads_new(ps, &gs));
    REQUIRE(ad_tape_new(&tape));
    ad_mpi *dp = NULL;
    REQUIRE(ad_mpi_new(MPI_COMM_WORLD, ps, gs, NULL, &dp));
    p.use_e = 1;
    ad_status rc = ad_mpi_gradient(dp, tape, partial_loss, &p, NULL);
    const ad_tensor *ge = ad_grads_get(gs, p.e);
    const float *e = p.e->data;
    int exact = ge != NULL;
    for (int i = 0; exact && i < 5; i++)
        exact = ((const float *)ge->data)[i] == 2.0f * e[i];
    CHECK(rc == AD_OK && exact, "partial, step 1: both ranks use E: its gradient is "
          "(2E + 2E) / 2 = 2E");
    p.use_e = g_rank == 0;
    rc = ad_mpi_gradient(dp, tape, partial_loss, &p, NULL);
    ge = ad_grads_get(gs, p.e);
    exact = ge != NULL;
    for (int i = 0; exact && i < 5; i++)
        exact = ((const float *)ge->data)[i] == e[i];
    if (g_rank == 0)
        CHECK(rc == AD_OK && exact, "partial, step 2: rank 0 gets (2E + 0) / 2 for a "
              "parameter rank 1 does not use (zeros from rank 1, not stale values)");
    else
        CHECK(rc == AD_OK && !ge && ad_grads_get(gs, p.a), "partial, step 2: rank 1 has no "
              "gradient for E and one for A");
    ad_mpi_free(dp);
    ad_tape_free(tape);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(p.x);
    ad_tensor_free(p.a);
    ad_tensor_free(p.e);
}

int main(int argc, char **argv)
{
    alloc_install(); /* before any adtape call: every block goes through the hooks */
    MPI_Init(&argc, &argv);
    int size;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        printf("rank %d: run with mpirun -np 2 (size is %d)\nmpi: 0 passed, 1 failed\n",
               g_rank, size);
        MPI_Finalize();
        return 1;
    }
    mlp_register_failing_rule();
    static const size_t buckets[] = {0, 256};
    for (int rule = MLP_BP; rule <= MLP_DFA; rule++)
        for (int b = 0; b < 2; b++)
            for (int no_overlap = 0; no_overlap < 2; no_overlap++)
                test_bitwise(rule, AD_F32, no_overlap, buckets[b]);
    test_bitwise(MLP_BP, AD_F64, 0, 256);
    test_bitwise(MLP_BP, AD_F64, 1, 0);
    for (int rule = MLP_BP; rule <= MLP_DFA; rule++)
        test_tolerance(rule);
    test_failure(0);
    test_failure(1);
    test_partial();
    run_collective_tests();

    int status = harness_finish();
    MPI_Finalize();
    return status;
}
