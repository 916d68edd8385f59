/*
** buckets.c: the data-parallel gradient. Gradients are copied into flat per-dtype
** buckets as the sweep finishes them, each bucket is summed across ranks with one
** collective, and the sums come back into the gradient set scaled by 1/size.
**
** Ordering rule: bucket b is started only after buckets 0..b-1, on every rank, so
** every rank posts the same collectives in the same order however its sweep went.
** Open MPI has no progress thread for shared memory or TCP by default: a started
** MPI_Iallreduce advances only inside MPI calls, so the ready callback also calls
** MPI_Testall on what is outstanding.
**
** Memory: the plan and the buffers are made once, in ad_mpi_new; a step allocates
** nothing through the allocation hooks.
*/
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "../base/base.h"
#include "mpi_internal.h"

/*
** Parameters in reverse index order (the order a sweep usually finishes them in),
** packed greedily: a new bucket starts when the dtype changes or the next parameter
** would take the bucket past bucket_bytes; a parameter larger than that gets a bucket
** of its own. Each bucket is one contiguous run of indices, so zero-filling and
** copying back walk it without a list.
*/
ad_status adi_mpi_plan_buckets(ad_mpi *dp, size_t bucket_bytes)
{
    int n = dp->n_params;
    dp->slot = adi_calloc((size_t)n, sizeof *dp->slot);
    dp->bucket = adi_calloc((size_t)n, sizeof *dp->bucket);
    if (!dp->slot || !dp->bucket)
        return ad_fail(AD_ERR_NOMEM, "ad_mpi_new: out of memory for the bucket plan");
    size_t bytes = 0; /* in the current bucket */
    int nb = 0;
    for (int p = n - 1; p >= 0; p--) {
        const ad_tensor *t = ad_params_at(dp->ps, p);
        size_t esz = ad_dtype_size(t->dtype);
        if (t->size > INT_MAX)
            return ad_fail(AD_ERR_OVERFLOW, "ad_mpi_new: parameter %d has %" PRId64
                           " elements, more than one MPI call can reduce", p, t->size);
        size_t pb = (size_t)t->size * esz;
        mpi_bucket *cur = nb ? &dp->bucket[nb - 1] : NULL;
        if (!cur || cur->dtype != t->dtype || bytes >= bucket_bytes ||
            pb > bucket_bytes - bytes || cur->count > INT_MAX - (int)t->size) {
            cur = &dp->bucket[nb++];
            cur->dtype = t->dtype;
            cur->first = p;
            bytes = 0;
        }
        dp->slot[p] = (mpi_slot){.bucket = nb - 1, .offset = cur->count, .count = (int)t->size};
        cur->count += (int)t->size;
        cur->n_params++;
        bytes += pb;
    }
    dp->n_buckets = nb;
    dp->req = ad_malloc((size_t)nb * sizeof *dp->req);
    if (!dp->req)
        return ad_fail(AD_ERR_NOMEM, "ad_mpi_new: out of memory for the bucket plan");
    for (int b = 0; b < nb; b++) {
        dp->req[b] = MPI_REQUEST_NULL;
        dp->bucket[b].buf = ad_malloc((size_t)dp->bucket[b].count *
                                      ad_dtype_size(dp->bucket[b].dtype));
        if (!dp->bucket[b].buf)
            return ad_fail(AD_ERR_NOMEM, "ad_mpi_new: out of memory for bucket %d (%d "
                           "elements)", b, dp->bucket[b].count);
    }
    return AD_OK;
}

void adi_mpi_free_plan(ad_mpi *dp)
{
    for (int b = 0; dp->bucket && b < dp->n_buckets; b++)
        ad_free(dp->bucket[b].buf);
    ad_free(dp->bucket);
    ad_free(dp->slot);
    ad_free(dp->req);
    dp->bucket = NULL;
    dp->slot = NULL;
    dp->req = NULL;
    dp->n_buckets = 0;
}

/* Keeps the step's first MPI error; later MPI calls of the step are skipped. */
static void note_error(ad_mpi *dp, int err, const char *call)
{
    if (err != MPI_SUCCESS && dp->mpi_err == MPI_SUCCESS) {
        dp->mpi_err = err;
        dp->mpi_err_call = call;
    }
}

/* Starts bucket b's sum: nonblocking with overlap, else blocking. */
static void launch(ad_mpi *dp, int b)
{
    mpi_bucket *k = &dp->bucket[b];
    MPI_Datatype type = k->dtype == AD_F32 ? MPI_FLOAT : MPI_DOUBLE;
    if (dp->overlap)
        note_error(dp, MPI_Iallreduce(MPI_IN_PLACE, k->buf, k->count, type, MPI_SUM,
                                      dp->comm, &dp->req[b]),
                   "ad_mpi_gradient: MPI_Iallreduce");
    else
        note_error(dp, MPI_Allreduce(MPI_IN_PLACE, k->buf, k->count, type, MPI_SUM, dp->comm),
                   "ad_mpi_gradient: MPI_Allreduce");
    dp->next_launch = b + 1;
}

/*
** Called by the sweep when parameter `index`'s gradient is final: copy it into its
** slot; with overlap, start every bucket that is now complete and next in order, and
** let MPI advance the ones in flight. It never fails the sweep: an MPI error is kept
** for ad_mpi_gradient to report, since a nonzero return would replace the sweep's
** message with a generic one.
*/
int adi_mpi_on_ready(int index, const ad_tensor *param, const ad_tensor *grad, void *user)
{
    (void)param;
    ad_mpi *dp = user;
    if (index < 0 || index >= dp->n_params || dp->slot[index].filled)
        return 0; /* added to ps after ad_mpi_new (not covered), or already copied */
    mpi_slot *s = &dp->slot[index];
    mpi_bucket *k = &dp->bucket[s->bucket];
    size_t esz = ad_dtype_size(k->dtype);
    if (s->count > 0)
        memcpy((char *)k->buf + (size_t)s->offset * esz, grad->data, (size_t)s->count * esz);
    s->filled = true;
    k->n_filled++;
    if (!dp->overlap || dp->mpi_err != MPI_SUCCESS)
        return 0;
    double t0 = MPI_Wtime();
    while (dp->next_launch < dp->n_buckets && dp->mpi_err == MPI_SUCCESS &&
           dp->bucket[dp->next_launch].n_filled == dp->bucket[dp->next_launch].n_params)
        launch(dp, dp->next_launch);
    int done;
    if (dp->mpi_err == MPI_SUCCESS && dp->next_launch > 0)
        note_error(dp, MPI_Testall(dp->next_launch, dp->req, &done, MPI_STATUSES_IGNORE),
                   "ad_mpi_gradient: MPI_Testall");
    dp->comm_seconds += MPI_Wtime() - t0;
    return 0;
}

/* Zeros for the slots of bucket b the sweep did not write: a parameter without a
** gradient on this rank, or everything after a failure. */
static void zero_missing(ad_mpi *dp, int b)
{
    mpi_bucket *k = &dp->bucket[b];
    size_t esz = ad_dtype_size(k->dtype);
    for (int i = 0; i < k->n_params; i++) {
        mpi_slot *s = &dp->slot[k->first - i];
        if (!s->filled && s->count > 0)
            memset((char *)k->buf + (size_t)s->offset * esz, 0, (size_t)s->count * esz);
        s->filled = true;
    }
    k->n_filled = k->n_params;
}

/* After the sweep, whatever its outcome: start what was not started, in order, then
** wait for everything. */
static void finish_buckets(ad_mpi *dp)
{
    for (int b = dp->next_launch; b < dp->n_buckets && dp->mpi_err == MPI_SUCCESS; b++) {
        zero_missing(dp, b);
        launch(dp, b);
    }
    if (dp->overlap && dp->mpi_err == MPI_SUCCESS && dp->n_buckets > 0)
        note_error(dp, MPI_Waitall(dp->n_buckets, dp->req, MPI_STATUSES_IGNORE),
                   "ad_mpi_gradient: MPI_Waitall");
}

/* The sums back into the gradients this rank has, times 1/size in the gradient's own
** dtype (an exact scaling for a power-of-two size: with 2 ranks, float32 gets
** (g0 + g1) * 0.5f, bitwise). A parameter without a gradient on this rank stays
** without one. */
static void scatter_back(ad_mpi *dp)
{
    double inv = 1.0 / dp->size;
    for (int p = 0; p < dp->n_params; p++) {
        const ad_tensor *g = ad_grads_at(dp->gs, p);
        if (!g)
            continue;
        const mpi_slot *s = &dp->slot[p];
        const mpi_bucket *k = &dp->bucket[s->bucket];
        if (k->dtype == AD_F32) {
            const float *src = (const float *)k->buf + s->offset;
            float *dst = g->data, a = (float)inv;
            for (int i = 0; i < s->count; i++)
                dst[i] = src[i] * a;
        } else {
            const double *src = (const double *)k->buf + s->offset;
            double *dst = g->data;
            for (int i = 0; i < s->count; i++)
                dst[i] = src[i] * inv;
        }
    }
}

static void step_reset(ad_mpi *dp)
{
    for (int p = 0; p < dp->n_params; p++)
        dp->slot[p].filled = false;
    for (int b = 0; b < dp->n_buckets; b++) {
        dp->bucket[b].n_filled = 0;
        dp->req[b] = MPI_REQUEST_NULL;
    }
    dp->next_launch = 0;
    dp->mpi_err = MPI_SUCCESS;
    dp->mpi_err_call = NULL;
    dp->steps++;
}

/*
** The sweep's outcome never decides whether this rank communicates: it always takes
** part in every bucket and in the status word, so a failing rank and its healthy peers
** leave together. The status word {loss, failure key} is summed and minimised in one
** all-reduce (dp->status_op).
*/
ad_status ad_mpi_gradient(ad_mpi *dp, ad_tape *tape, ad_loss_fn loss_fn, void *user,
                          double *loss_value)
{
    if (!dp)
        return ad_fail(AD_ERR_NULL, "ad_mpi_gradient: dp is NULL");
    step_reset(dp);
    double loss = 0.0;
    ad_status rc = ad_gradient(tape, dp->ps, loss_fn, user, dp->gs, &loss);
    double t0 = MPI_Wtime();
    finish_buckets(dp);
    double word[2] = {rc == AD_OK ? loss : 0.0, adi_mpi_status_key(dp->rank, dp->size, rc)};
    if (dp->mpi_err == MPI_SUCCESS)
        note_error(dp, MPI_Allreduce(MPI_IN_PLACE, word, 1, dp->status_type, dp->status_op,
                                     dp->comm),
                   "ad_mpi_gradient: MPI_Allreduce (status)");
    dp->comm_seconds += MPI_Wtime() - t0;
    if (dp->mpi_err != MPI_SUCCESS)
        return adi_mpi_fail(dp->mpi_err, dp->mpi_err_call);
    char when[48];
    snprintf(when, sizeof when, " at step %" PRIu64, dp->steps);
    ad_status st = adi_mpi_status_from_key(dp->size, rc, (int)word[1], "ad_mpi_gradient", when);
    if (st)
        return st;
    scatter_back(dp);
    if (loss_value)
        *loss_value = word[0] / dp->size;
    return AD_OK;
}
