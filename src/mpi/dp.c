/*
** dp.c: the data-parallel context: making it (model check, rank 0's weights sent to
** every rank), freeing it, and the status agreement every collective failure path
** shares.
**
** Every collective here is written so that all ranks post the same calls in the same
** order whatever happened locally: a rank whose allocation failed still takes part in
** the agreement that tells the others, and nobody goes on to a collective the others
** skip. That is what makes "every rank returns an error, nothing hangs" hold.
*/
#include <stdio.h>
#include <string.h>

#include "../base/base.h"
#include "mpi_internal.h"

ad_status adi_mpi_fail(int err, const char *call)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", err);
    return ad_fail(AD_ERR_MPI, "%s: %s", call, text);
}

ad_status adi_mpi_status_from_key(int size, ad_status local, int key,
                                 const char *what, const char *when)
{
    int n = (int)AD_STATUS_COUNT;
    if (key >= size * n)
        return AD_OK;
    if (local != AD_OK)
        return local; /* our own failure: its message is the one to keep */
    int peer = key / n;
    ad_status code = (ad_status)(key % n);
    return ad_fail(AD_ERR_PEER_FAILED, "%s: rank %d failed%s: %s", what, peer, when,
                   ad_status_str(code));
}

ad_status adi_mpi_agree_on(MPI_Comm comm, int rank, int size, ad_status local,
                          const char *what)
{
    int key = adi_mpi_status_key(rank, size, local);
    int err = MPI_Allreduce(MPI_IN_PLACE, &key, 1, MPI_INT, MPI_MIN, comm);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, what);
    return adi_mpi_status_from_key(size, local, key, what, "");
}

/* The step's status word: the losses are summed, the failure keys (exact integers in a
** double) take their minimum, so one all-reduce carries both. */
static void status_combine(void *in, void *inout, int *len, MPI_Datatype *type)
{
    (void)type;
    const double *a = in;
    double *b = inout;
    for (int i = 0; i < *len; i++, a += 2, b += 2) {
        b[0] += a[0];
        if (a[1] < b[1])
            b[1] = a[1];
    }
}

/* Frees what dp_make made (also half-made contexts) but not the communicator. */
static void dp_release(ad_mpi *dp)
{
    if (!dp)
        return;
    adi_mpi_free_plan(dp);
    if (dp->status_op != MPI_OP_NULL)
        MPI_Op_free(&dp->status_op);
    if (dp->status_type != MPI_DATATYPE_NULL)
        MPI_Type_free(&dp->status_type);
    ad_free(dp);
}

/* The local part of ad_mpi_new: no communication, so a failure here is agreed on
** before anyone goes further. */
static ad_status dp_make(MPI_Comm comm, const ad_params *ps, ad_grads *gs,
                         const ad_mpi_options *opts, ad_mpi **out)
{
    ad_mpi *dp = adi_calloc(1, sizeof *dp);
    if (!dp)
        return ad_fail(AD_ERR_NOMEM, "ad_mpi_new: out of memory for the context");
    dp->comm = comm;
    dp->status_type = MPI_DATATYPE_NULL;
    dp->status_op = MPI_OP_NULL;
    dp->ps = ps;
    dp->gs = gs;
    dp->n_params = ad_params_count(ps);
    dp->overlap = !(opts && opts->no_overlap);
    *out = dp;
    int err = MPI_Comm_rank(comm, &dp->rank);
    if (err == MPI_SUCCESS)
        err = MPI_Comm_size(comm, &dp->size);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, "ad_mpi_new: MPI_Comm_rank/size");
    size_t bucket_bytes = opts && opts->bucket_bytes ? opts->bucket_bytes
                                                     : (size_t)AD_MPI_DEFAULT_BUCKET_BYTES;
    ad_status rc = adi_mpi_plan_buckets(dp, bucket_bytes);
    if (rc)
        return rc;
    err = MPI_Type_contiguous(2, MPI_DOUBLE, &dp->status_type);
    if (err == MPI_SUCCESS)
        err = MPI_Type_commit(&dp->status_type);
    if (err == MPI_SUCCESS)
        err = MPI_Op_create(status_combine, 1, &dp->status_op);
    return err == MPI_SUCCESS ? AD_OK : adi_mpi_fail(err, "ad_mpi_new: status type");
}

/*
** Every rank must hold the same number of parameters before their descriptions can be
** compared (the comparison sends rank 0's array of that length). The count goes first:
** MINLOC over {this rank if its count differs else size, its count} names the lowest
** differing rank and its count on every rank.
*/
static ad_status check_count(const ad_mpi *dp)
{
    int n0 = dp->n_params;
    int err = MPI_Bcast(&n0, 1, MPI_INT, 0, dp->comm);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, "ad_mpi_new: MPI_Bcast");
    struct {
        int val, idx;
    } who = {dp->n_params != n0 ? dp->rank : dp->size, dp->n_params};
    err = MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_2INT, MPI_MINLOC, dp->comm);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, "ad_mpi_new: MPI_Allreduce");
    if (who.val < dp->size)
        return ad_fail(AD_ERR_MODEL_MISMATCH, "ad_mpi_new: rank %d holds %d parameters, "
                       "rank 0 holds %d", who.val, who.idx, n0);
    return AD_OK;
}

/* Count, then dtypes and shapes, then rank 0's values into every rank's parameters. */
static ad_status check_and_send_model(ad_mpi *dp, int64_t *desc)
{
    ad_status rc = check_count(dp);
    if (rc)
        return rc;
    int n = dp->n_params;
    for (int p = 0; p < n; p++)
        adi_mpi_describe(ad_params_at(dp->ps, p), desc + (size_t)p * AD_MPI_DESC_WORDS);
    rc = adi_mpi_check_descs(dp->comm, dp->rank, desc, desc + (size_t)n * AD_MPI_DESC_WORDS, n,
                            "ad_mpi_new");
    for (int p = 0; rc == AD_OK && p < n; p++) {
        ad_tensor *t = ad_params_at(dp->ps, p);
        rc = adi_mpi_bcast_raw(dp->comm, t->data, (size_t)t->size * ad_dtype_size(t->dtype));
        if (rc == AD_OK && dp->rank != 0)
            ad_tensor_touch(t);
    }
    return rc;
}

ad_status ad_mpi_new(MPI_Comm comm, const ad_params *ps, ad_grads *gs,
                     const ad_mpi_options *opts, ad_mpi **out)
{
    if (!ps || !gs || !out)
        return ad_fail(AD_ERR_NULL, "ad_mpi_new: %s is NULL", !ps ? "ps" : !gs ? "gs" : "out");
    if (ad_grads_params(gs) != ps)
        return ad_fail(AD_ERR_INVALID, "ad_mpi_new: the gradient set was made for another "
                       "parameter set");
    MPI_Comm dup = MPI_COMM_NULL;
    int err = MPI_Comm_dup(comm, &dup);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, "ad_mpi_new: MPI_Comm_dup");
    err = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    if (err != MPI_SUCCESS) {
        MPI_Comm_free(&dup);
        return adi_mpi_fail(err, "ad_mpi_new: MPI_Comm_set_errhandler");
    }
    ad_mpi *dp = NULL;
    ad_status rc = dp_make(dup, ps, gs, opts, &dp);
    /* Two descriptions per parameter: ours, then rank 0's as received. */
    size_t words;
    int64_t *desc = NULL;
    if (rc == AD_OK) {
        if (!adi_size_mul((size_t)dp->n_params, 2 * AD_MPI_DESC_WORDS, &words))
            rc = ad_fail(AD_ERR_OVERFLOW, "ad_mpi_new: too many parameters");
        else if (!(desc = adi_calloc(words, sizeof *desc)))
            rc = ad_fail(AD_ERR_NOMEM, "ad_mpi_new: out of memory for shape descriptions");
    }
    int rank = 0, size = 1;
    MPI_Comm_rank(dup, &rank);
    MPI_Comm_size(dup, &size);
    rc = adi_mpi_agree_on(dup, rank, size, rc, "ad_mpi_new");
    if (rc == AD_OK)
        rc = check_and_send_model(dp, desc);
    ad_free(desc);
    if (rc) {
        dp_release(dp);
        MPI_Comm_free(&dup);
        return rc;
    }
    ad_grads_on_ready(gs, adi_mpi_on_ready, dp);
    *out = dp;
    return AD_OK;
}

void ad_mpi_free(ad_mpi *dp)
{
    if (!dp)
        return;
    ad_grads_on_ready(dp->gs, NULL, NULL);
    /* Requests are all complete between calls (ad_mpi_gradient waits for them). */
    MPI_Comm_free(&dp->comm);
    dp_release(dp);
}

int ad_mpi_rank(const ad_mpi *dp)
{
    return dp ? dp->rank : -1;
}

int ad_mpi_size(const ad_mpi *dp)
{
    return dp ? dp->size : 0;
}

double ad_mpi_comm_seconds(const ad_mpi *dp)
{
    return dp ? dp->comm_seconds : 0.0;
}

void ad_mpi_reset_comm_seconds(ad_mpi *dp)
{
    if (dp)
        dp->comm_seconds = 0.0;
}
