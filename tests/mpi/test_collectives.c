/*
** test_collectives.c: ad_mpi_new's model check and out-of-memory behaviour, the
** broadcasts, sums, agreement checks and the checkpoint written by rank 0, on 2 ranks.
*/
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "test_collectives.h"

#include <dirent.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ad_mpi.h"
#include "harness.h"
#include "mlp.h"

static ad_tensor *tensor(ad_dtype dtype, int64_t rows, int64_t cols)
{
    ad_tensor *t = NULL;
    REQUIRE(ad_tensor_new(dtype, 2, (const int64_t[]){rows, cols}, &t));
    return t;
}

/* A trained data-parallel BP model for the tests that need one: 3 steps on its shard. */
static ad_mpi *trained(mlp *m, mlp_data *data)
{
    mlp_new(m, MLP_BP, AD_F32, 1000 + (uint64_t)g_rank, 2000);
    mlp_data_new(data, AD_F32, 3000);
    ad_mpi *dp = NULL;
    REQUIRE(ad_mpi_new(MPI_COMM_WORLD, m->ps, m->gs, NULL, &dp));
    mlp_batch mine;
    mlp_batch_init(&mine, m, data, g_rank * MLP_ROWS / 2, MLP_ROWS / 2);
    for (int step = 0; step < 3; step++) {
        REQUIRE(ad_mpi_gradient(dp, m->tape, mlp_loss, &mine, NULL));
        REQUIRE(ad_optim_step(m->opt, m->gs));
    }
    return dp;
}

static void test_arguments(void)
{
    mlp m, other;
    mlp_new(&m, MLP_BP, AD_F32, 1000, 2000);
    mlp_new(&other, MLP_BP, AD_F32, 1000, 2000);
    ad_mpi *dp = (ad_mpi *)&m; /* must stay untouched */
    ad_status rc = ad_mpi_new(MPI_COMM_WORLD, NULL, m.gs, NULL, &dp);
    CHECK(rc == AD_ERR_NULL && dp == (ad_mpi *)&m, "ad_mpi_new with a NULL ps: AD_ERR_NULL "
          "(%s), *out untouched", ad_status_str(rc));
    rc = ad_mpi_new(MPI_COMM_WORLD, m.ps, other.gs, NULL, &dp);
    CHECK(rc == AD_ERR_INVALID && strstr(ad_last_error(), "another parameter set"),
          "ad_mpi_new with gs of another set: AD_ERR_INVALID: %s", ad_last_error());
    rc = ad_mpi_gradient(NULL, m.tape, mlp_loss, NULL, NULL);
    CHECK(rc == AD_ERR_NULL, "ad_mpi_gradient with a NULL context: AD_ERR_NULL");
    ad_mpi_free(NULL);
    CHECK(ad_mpi_rank(NULL) == -1 && ad_mpi_size(NULL) == 0, "rank and size of NULL");

    /* An MPI call that fails comes back as AD_ERR_MPI with MPI's text. MPI reports an
    ** invalid communicator through MPI_COMM_WORLD's handler (MPI_COMM_SELF's in newer
    ** libraries), fatal by default: both return errors for the length of this check. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    dp = (ad_mpi *)&m;
    rc = ad_mpi_new(MPI_COMM_NULL, m.ps, m.gs, NULL, &dp);
    CHECK(rc == AD_ERR_MPI && dp == (ad_mpi *)&m && strstr(ad_last_error(), "MPI_Comm_dup"),
          "ad_mpi_new on MPI_COMM_NULL: AD_ERR_MPI naming the call (%s: %s)",
          ad_status_str(rc), ad_last_error());
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_ARE_FATAL);

    dp = NULL;
    REQUIRE(ad_mpi_new(MPI_COMM_WORLD, m.ps, m.gs, NULL, &dp));
    CHECK(ad_mpi_rank(dp) == g_rank && ad_mpi_size(dp) == 2, "ad_mpi_rank %d, ad_mpi_size %d",
          ad_mpi_rank(dp), ad_mpi_size(dp));
    ad_mpi_free(dp);
    /* The callback is gone with the context: a sweep after free must not reach it. */
    mlp_data data;
    mlp_data_new(&data, AD_F32, 3000);
    mlp_batch all;
    mlp_batch_init(&all, &m, &data, 0, MLP_ROWS);
    rc = ad_gradient(m.tape, m.ps, mlp_loss, &all, m.gs, NULL);
    CHECK(rc == AD_OK, "ad_gradient on gs after ad_mpi_free works (the callback was removed)");
    mlp_data_free(&data);
    mlp_free(&other);
    mlp_free(&m);
}

/* Rank 0 holds {A 3x4 f32, B 3x4 f32}; rank 1 changes B (or adds C) per `variant`. */
static void mismatch(int variant, const char *label, const char *needle)
{
    int64_t before = alloc_outstanding();
    ad_tensor *a = tensor(AD_F32, 3, 4), *b, *c = tensor(AD_F32, 2, 2);
    if (g_rank == 1 && variant == 0)
        b = tensor(AD_F32, 3, 5);
    else if (g_rank == 1 && variant == 2)
        b = tensor(AD_F64, 3, 4);
    else
        b = tensor(AD_F32, 3, 4);
    ad_params *ps = NULL;
    ad_grads *gs = NULL;
    REQUIRE(ad_params_new(&ps));
    REQUIRE(ad_params_add(ps, a, NULL));
    REQUIRE(ad_params_add(ps, b, NULL));
    if (g_rank == 1 && variant == 1)
        REQUIRE(ad_params_add(ps, c, NULL));
    REQUIRE(ad_grads_new(ps, &gs));
    ad_mpi *dp = NULL;
    int64_t made = alloc_outstanding();
    ad_status rc = ad_mpi_new(MPI_COMM_WORLD, ps, gs, NULL, &dp);
    CHECK(rc == AD_ERR_MODEL_MISMATCH && dp == NULL && strstr(ad_last_error(), needle),
          "model mismatch (%s): AD_ERR_MODEL_MISMATCH on every rank (%s), message \"%s\" "
          "names \"%s\"", label, ad_status_str(rc), ad_last_error(), needle);
    CHECK(alloc_outstanding() == made, "model mismatch (%s): nothing left allocated", label);
    if (dp)
        ad_mpi_free(dp);
    ad_grads_free(gs);
    ad_params_free(ps);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(c);
    CHECK(alloc_outstanding() == before, "model mismatch (%s): the test freed everything",
          label);
}

static void test_broadcasts(void)
{
    mlp m;
    mlp_data data;
    ad_mpi *dp = trained(&m, &data);
    /* A generator's state: rank 1 seeds another, and gets rank 0's. */
    ad_rng r, want;
    ad_rng_seed(&r, 77 + (uint64_t)g_rank);
    ad_rng_seed(&want, 77);
    ad_status rc = ad_mpi_broadcast_bytes(dp, &r, sizeof r);
    CHECK(rc == AD_OK && ad_rng_u64(&r) == ad_rng_u64(&want) && !memcmp(&r, &want, sizeof r),
          "ad_mpi_broadcast_bytes: the generator is rank 0's on every rank");
    /* A tensor: rank 0's values everywhere; only the receiving rank's version moves. */
    ad_tensor *b = tensor(AD_F64, 4, 3);
    REQUIRE(ad_tensor_fill(b, g_rank == 0 ? 3.0 : -1.0));
    uint64_t vb = b->version;
    rc = ad_mpi_broadcast(dp, b);
    int all_three = 1;
    for (int64_t i = 0; i < b->size; i++)
        all_three &= ad_tensor_get(b, i) == 3.0;
    CHECK(rc == AD_OK && all_three && b->version == vb + (g_rank != 0),
          "ad_mpi_broadcast: rank 0's values on every rank, version bumped on receivers "
          "only (%llu -> %llu)", (unsigned long long)vb, (unsigned long long)b->version);
    ad_tensor_free(b);
    /* Shapes that differ: both ranks refuse, rank 1's tensor is left alone. */
    ad_tensor *t = g_rank == 0 ? tensor(AD_F32, 3, 2) : tensor(AD_F32, 2, 3);
    REQUIRE(ad_tensor_fill(t, 1.0 + g_rank));
    uint64_t v = t->version;
    rc = ad_mpi_broadcast(dp, t);
    CHECK(rc == AD_ERR_MODEL_MISMATCH &&
          strstr(ad_last_error(), "the tensor is 2x3 f32 on rank 1, 3x2 f32 on rank 0"),
          "ad_mpi_broadcast of different shapes: AD_ERR_MODEL_MISMATCH everywhere (%s): %s",
          ad_status_str(rc), ad_last_error());
    CHECK(t->version == v && ad_tensor_get(t, 0) == 1.0 + g_rank,
          "ad_mpi_broadcast of different shapes: the tensor is unchanged");
    ad_tensor_free(t);
    ad_mpi_free(dp);
    mlp_free(&m);
    mlp_data_free(&data);
}

static void test_sum_and_agreement(void)
{
    mlp m;
    mlp_data data;
    ad_mpi *dp = trained(&m, &data);
    uint64_t local[3] = {ad_tape_pullback_count(m.tape, ad_op_matmul),
                         ad_tape_pullback_count(m.tape, ad_op_tanh), (uint64_t)g_rank + 1};
    CHECK(local[0] == 9 && local[1] == 6, "pullback counts after 3 steps: matmul %llu (9), "
          "tanh %llu (6)", (unsigned long long)local[0], (unsigned long long)local[1]);
    uint64_t all[6], total[3] = {0, 0, 0};
    MPI_Gather(local, 3, MPI_UINT64_T, all, 3, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    ad_status rc = ad_mpi_sum_to_root(dp, local, g_rank == 0 ? total : NULL, 3);
    if (g_rank == 0)
        CHECK(rc == AD_OK && total[0] == all[0] + all[3] && total[1] == all[1] + all[4] &&
              total[2] == 3, "ad_mpi_sum_to_root: {%llu, %llu, %llu} on rank 0",
              (unsigned long long)total[0], (unsigned long long)total[1],
              (unsigned long long)total[2]);
    else
        CHECK(rc == AD_OK, "ad_mpi_sum_to_root on rank 1 with total NULL");
    rc = ad_mpi_sum_to_root(dp, local, local, 3); /* rank 0: in place */
    if (g_rank == 0)
        CHECK(rc == AD_OK && local[2] == 3, "ad_mpi_sum_to_root in place on rank 0");

    int same = -1;
    rc = ad_mpi_params_agree(dp, &same);
    CHECK(rc == AD_OK && same == 1, "ad_mpi_params_agree after training: %d", same);
    float *w = m.W[1]->data, keep = w[5];
    if (g_rank == 1)
        w[5] = keep + 1e-3f;
    rc = ad_mpi_params_agree(dp, &same);
    CHECK(rc == AD_OK && same == 0, "ad_mpi_params_agree after rank 1 changed one "
          "element: %d", same);
    w[5] = keep;
    rc = ad_mpi_params_agree(dp, &same);
    CHECK(rc == AD_OK && same == 1, "ad_mpi_params_agree after restoring it: %d", same);

    rc = ad_mpi_agree(dp, AD_OK);
    CHECK(rc == AD_OK, "ad_mpi_agree with every rank OK");
    rc = ad_mpi_agree(dp, g_rank == 1 ? ad_fail(AD_ERR_IO, "reading shard 1: on purpose")
                                      : AD_OK);
    if (g_rank == 1)
        CHECK(rc == AD_ERR_IO && strstr(ad_last_error(), "on purpose"),
              "ad_mpi_agree: the failing rank keeps its status and message: %s",
              ad_last_error());
    else
        CHECK(rc == AD_ERR_PEER_FAILED && strstr(ad_last_error(), "rank 1 failed"),
              "ad_mpi_agree: the other rank gets AD_ERR_PEER_FAILED: %s", ad_last_error());
    ad_mpi_free(dp);
    mlp_free(&m);
    mlp_data_free(&data);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_checkpoint(void)
{
    static const char *const names[] = {"U", "W0", "b0", "W1", "b1", "W2", "b2"};
    mlp m;
    mlp_data data;
    ad_mpi *dp = trained(&m, &data);
    char dir[128] = "", path[192];
    if (g_rank == 0 && !mkdtemp(strcpy(dir, "/tmp/adtape-mpi-XXXXXX")))
        dir[0] = '\0';
    REQUIRE(ad_mpi_broadcast_bytes(dp, dir, sizeof dir));
    CHECK(dir[0] != '\0', "a temporary folder from rank 0: %s", dir);
    snprintf(path, sizeof path, "%s/run.safetensors", dir);
    ad_checkpoint_extras x = {.step = 3};
    ad_status rc = ad_mpi_checkpoint_save(dp, path, names, &x);
    CHECK(rc == AD_OK, "ad_mpi_checkpoint_save: AD_OK on every rank (%s)",
          rc ? ad_last_error() : "ok");
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK(count_files(dir) == 1, "one file in the folder after the save (%d)",
          count_files(dir));
    mlp loaded;
    mlp_new(&loaded, MLP_BP, AD_F32, 5000, 2000);
    ad_checkpoint_extras y = {0};
    rc = ad_checkpoint_load(path, loaded.ps, names, &y);
    CHECK(rc == AD_OK && y.step == 3 && mlp_params_equal(&loaded, &m),
          "every rank loads rank 0's checkpoint and gets its own parameters (%s)",
          rc ? ad_last_error() : "ok");
    mlp_free(&loaded);
    MPI_Barrier(MPI_COMM_WORLD); /* both have read it */
    if (g_rank == 0) {
        unlink(path);
        rmdir(dir);
    }
    rc = ad_mpi_checkpoint_save(dp, "/nonexistent-adtape-folder/run.safetensors", names, NULL);
    if (g_rank == 0)
        CHECK(rc == AD_ERR_IO, "a save into a missing folder: rank 0 gets AD_ERR_IO (%s)",
              ad_last_error());
    else
        CHECK(rc == AD_ERR_PEER_FAILED && strstr(ad_last_error(), "rank 0 failed") &&
              strstr(ad_last_error(), "nonexistent-adtape-folder"),
              "a save into a missing folder: rank 1 gets AD_ERR_PEER_FAILED with rank 0's "
              "message: %s", ad_last_error());
    ad_mpi_free(dp);
    mlp_free(&m);
    mlp_data_free(&data);
}

/* Fails allocation 1, 2, 3, ... of ad_mpi_new on one rank until it succeeds: every
** failure must reach both ranks (NOMEM there, PEER_FAILED on the other) and leak
** nothing. The loop condition is agreed on, so the ranks never drift apart. */
static void test_new_out_of_memory(void)
{
    mlp m;
    mlp_new(&m, MLP_FA, AD_F32, 1000, 2000);
    for (int victim = 0; victim < 2; victim++) {
        int64_t base = alloc_outstanding();
        int failures = 0, codes = 1, clean = 1, all_ok = 0;
        for (uint64_t k = 1; !all_ok && k < 200; k++) {
            ad_mpi *dp = NULL;
            alloc_fail_at(g_rank == victim ? k : 0);
            ad_status rc = ad_mpi_new(MPI_COMM_WORLD, m.ps, m.gs, NULL, &dp);
            alloc_fail_at(0);
            all_ok = rc == AD_OK;
            MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
            if (rc != AD_OK) {
                failures++;
                codes &= g_rank == victim ? rc == AD_ERR_NOMEM
                                          : rc == AD_ERR_PEER_FAILED &&
                                                strstr(ad_last_error(), "out of memory");
                clean &= dp == NULL && alloc_outstanding() == base;
            }
            ad_mpi_free(dp);
        }
        CHECK(all_ok && failures > 0, "ad_mpi_new with allocation k failing on rank %d: "
              "succeeds after %d failures", victim, failures);
        CHECK(codes, "ad_mpi_new out of memory on rank %d: AD_ERR_NOMEM there, "
              "AD_ERR_PEER_FAILED (\"out of memory\") on the other, every time", victim);
        CHECK(clean, "ad_mpi_new out of memory on rank %d: nothing leaked, *out untouched",
              victim);
    }
    mlp_free(&m);
}

void run_collective_tests(void)
{
    test_arguments();
    mismatch(0, "shape", "parameter 1 is 3x5 f32 on rank 1, 3x4 f32 on rank 0");
    mismatch(1, "count", "rank 1 holds 3 parameters, rank 0 holds 2");
    mismatch(2, "dtype", "parameter 1 is 3x4 f64 on rank 1, 3x4 f32 on rank 0");
    test_broadcasts();
    test_sum_and_agreement();
    test_checkpoint();
    test_new_out_of_memory();
}
