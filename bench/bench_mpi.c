/*
** bench_mpi.c: one epoch of W2 (784-256-256-10, bias, tanh, softmax cross-entropy,
** SGD, global batch 128) on Fashion-MNIST's 60,000 training images in file order, as
** one rank of an MPI job. bench/run-mpi runs it in several shapes and makes the table.
**
**   bench_mpi --threads 2                                  (1 rank: the baseline)
**   mpirun -np 2 bench_mpi --threads 1 [--no-overlap] [--bucket-bytes N]
**
** Each rank trains on its contiguous 128/size rows of every batch; with one rank the
** step is bench_model_step (ad_gradient, ad_descent_step), with more ad_mpi_gradient
** then ad_descent_step, so the two differ only by the data parallelism. Rank 0 prints
** one JSON line: images/s over the slowest rank's epoch, the time inside the
** all-reduces (ad_mpi_comm_seconds; mean and max over ranks), the compute time per step
** (epoch minus that time), and the bytes all-reduced per step, which bench/scaling.py
** models.
*/
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#include "ad_mpi.h"
#include "bench_model.h"

enum { WARMUP_STEPS = 5 };

typedef struct args {
    int threads, no_overlap;
    size_t bucket_bytes;
    const char *data;
} args;

static void usage(void)
{
    fprintf(stderr, "usage: [mpirun -np P] bench_mpi [--threads N] [--no-overlap] "
                    "[--bucket-bytes N] [--data DIR]\n");
    exit(2);
}

static args parse(int argc, char **argv)
{
    args a = {.threads = 1, .data = "/usr/share/datasets/fashion-mnist"};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--no-overlap")) {
            a.no_overlap = 1;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(k, "--threads"))
            a.threads = atoi(v);
        else if (!strcmp(k, "--bucket-bytes"))
            a.bucket_bytes = (size_t)strtoull(v, NULL, 10);
        else if (!strcmp(k, "--data"))
            a.data = v;
        else
            usage();
    }
    if (a.threads < 1)
        usage();
    return a;
}

/* Every rank stops together: a failure here is agreed on before anyone goes on. */
static void check(int failed, const char *what)
{
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (!any)
        return;
    if (failed)
        fprintf(stderr, "bench_mpi: %s: %s\n", what, ad_last_error());
    MPI_Finalize();
    exit(1);
}

/* This rank's rows of global batch s: rows [s*B + rank*b, s*B + (rank+1)*b). */
static void load_shard(bench_model *m, const ad_tensor *images, const ad_tensor *labels,
                       int64_t first)
{
    int64_t b = m->w->batch, dim = images->shape[1];
    memcpy(m->x->data, (const float *)images->data + first * dim,
           (size_t)(b * dim) * sizeof(float));
    memcpy(m->target->data, (const int32_t *)labels->data + first, (size_t)b * sizeof(int32_t));
    ad_tensor_touch(m->x);
    ad_tensor_touch(m->target);
}

static ad_status step(bench_model *m, ad_mpi *dp)
{
    if (!dp)
        return bench_model_step(m);
    double loss;
    ad_status rc = ad_mpi_gradient(dp, m->tape, bench_model_record, m, &loss);
    return rc ? rc : ad_descent_step(m->ps, m->gs, m->lr);
}

static size_t param_bytes(const bench_model *m)
{
    size_t n = 0;
    for (int i = 0; i < ad_params_count(m->ps); i++)
        n += (size_t)ad_params_at(m->ps, i)->size * sizeof(float);
    return n;
}

typedef struct result {
    int64_t steps, global_batch;
    double seconds, comm_mean, comm_max;
    int agree;
} result;

/* Warm-up steps first (the arena's first growth, MPI's first connections), then the
** epoch timed between barriers: its time is the slowest rank's. */
static result run_epoch(bench_model *m, ad_mpi *dp, const ad_tensor *images,
                        const ad_tensor *labels, int rank, int size)
{
    result r = {.global_batch = m->w->batch * size};
    r.steps = images->shape[0] / r.global_batch;
    ad_status rc = AD_OK;
    for (int64_t s = 0; rc == AD_OK && s < WARMUP_STEPS; s++) {
        load_shard(m, images, labels, s * r.global_batch + rank * m->w->batch);
        rc = step(m, dp);
    }
    check(rc != AD_OK, "warm-up step");
    if (dp)
        ad_mpi_reset_comm_seconds(dp);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int64_t s = 0; rc == AD_OK && s < r.steps; s++) {
        load_shard(m, images, labels, s * r.global_batch + rank * m->w->batch);
        rc = step(m, dp);
    }
    double mine = MPI_Wtime() - t0, comm = dp ? ad_mpi_comm_seconds(dp) : 0.0;
    check(rc != AD_OK, "step");
    MPI_Allreduce(&mine, &r.seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&comm, &r.comm_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&comm, &r.comm_mean, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    r.comm_mean /= size;
    r.agree = 1;
    if (dp)
        check(ad_mpi_params_agree(dp, &r.agree) != AD_OK, "parameter check");
    return r;
}

static void print_result(const args *a, const result *r, const bench_model *m, int size)
{
    double compute = (r->seconds - r->comm_mean) / (double)r->steps;
    printf("{\"bench\": \"mpi_epoch\", \"workload\": \"W2\", \"ranks\": %d, \"threads\": %d, "
           "\"overlap\": %s, \"bucket_bytes\": %zu, \"global_batch\": %lld, "
           "\"rank_batch\": %lld, \"steps\": %lld, \"seconds\": %.4f, "
           "\"images_per_s\": %.1f, \"comm_seconds\": %.4f, \"comm_seconds_max\": %.4f, "
           "\"comm_share\": %.4f, \"compute_seconds_per_step\": %.6g, "
           "\"allreduce_bytes_per_step\": %zu, \"params_agree\": %s, \"blas_core\": \"%s\"}\n",
           size, a->threads, size > 1 && !a->no_overlap ? "true" : "false",
           size > 1 ? (a->bucket_bytes ? a->bucket_bytes : AD_MPI_DEFAULT_BUCKET_BYTES) : 0,
           (long long)r->global_batch, (long long)m->w->batch, (long long)r->steps,
           r->seconds, (double)(r->steps * r->global_batch) / r->seconds, r->comm_mean,
           r->comm_max, r->comm_mean / r->seconds, compute, size > 1 ? param_bytes(m) : 0,
           r->agree ? "true" : "false", openblas_get_corename());
}

static ad_status read_train(const char *dir, ad_tensor **images, ad_tensor **labels)
{
    char xi[4096], yi[4096];
    snprintf(xi, sizeof xi, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(yi, sizeof yi, "%s/train-labels-idx1-ubyte.gz", dir);
    return ad_idx_read_pair(xi, yi, 10, images, labels);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    args a = parse(argc, argv);
    openblas_set_num_threads(a.threads);
    /* The global batch stays W2's 128; each rank's model holds its share of it. */
    workload w = bench_workloads[1];
    if (w.batch % size != 0) {
        if (rank == 0)
            fprintf(stderr, "bench_mpi: batch %lld does not split over %d ranks\n",
                    (long long)w.batch, size);
        MPI_Finalize();
        return 2;
    }
    w.batch /= size;
    ad_tensor *images = NULL, *labels = NULL;
    check(read_train(a.data, &images, &labels) != AD_OK, "reading Fashion-MNIST");
    bench_model m;
    check(bench_model_init(&m, &w, 0, 1) != AD_OK, "building W2");
    ad_mpi *dp = NULL;
    if (size > 1) {
        ad_mpi_options o = {.bucket_bytes = a.bucket_bytes, .no_overlap = a.no_overlap};
        check(ad_mpi_new(MPI_COMM_WORLD, m.ps, m.gs, &o, &dp) != AD_OK, "ad_mpi_new");
    }
    result r = run_epoch(&m, dp, images, labels, rank, size);
    if (rank == 0)
        print_result(&a, &r, &m, size);
    ad_mpi_free(dp);
    bench_model_free(&m);
    ad_tensor_free(images);
    ad_tensor_free(labels);
    MPI_Finalize();
    return 0;
}
