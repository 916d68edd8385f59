/*
** mpi_internal.h (internal to libadtape-mpi): the context and the helpers its three
** files share. dp.c makes and frees the context and checks the model; buckets.c plans
** the buckets and runs the data-parallel gradient; collectives.c holds the small
** collectives (broadcasts, agreement, sums, the checkpoint).
*/
#ifndef AD_MPI_INTERNAL_H
#define AD_MPI_INTERNAL_H

#include <stdbool.h>

#include "ad_mpi.h"

/* Where parameter p's gradient travels: slot `offset` (elements) of bucket `bucket`. */
typedef struct mpi_slot {
    int bucket;
    int offset;
    int count;   /* the parameter's elements */
    bool filled; /* this step: written by the ready callback (or zero-filled) */
} mpi_slot;

/* One flat buffer of one dtype, reduced with one collective per step. */
typedef struct mpi_bucket {
    ad_dtype dtype;
    int first;    /* its parameters are first, first - 1, ..., first - n_params + 1 */
    int count;    /* elements (an MPI count, so an int) */
    int n_params; /* slots in it */
    int n_filled; /* this step */
    void *buf;    /* count elements, through the allocation hooks */
} mpi_bucket;

struct ad_mpi {
    MPI_Comm comm; /* our duplicate, with MPI_ERRORS_RETURN */
    int rank, size;
    const ad_params *ps;
    ad_grads *gs;
    int n_params; /* parameters covered: ps's count at ad_mpi_new */
    bool overlap;
    mpi_slot *slot;   /* by parameter index */
    mpi_bucket *bucket;
    MPI_Request *req; /* by bucket; MPI_REQUEST_NULL when done or not started */
    int n_buckets;
    int next_launch; /* this step: buckets [0, next_launch) have been started */
    int mpi_err;     /* this step: the first MPI error inside the ready callback */
    const char *mpi_err_call;
    MPI_Datatype status_type; /* the step's status word: {loss sum, failure key} */
    MPI_Op status_op;
    uint64_t steps; /* ad_mpi_gradient calls so far, for messages */
    double comm_seconds;
};

/* AD_ERR_MPI with MPI's text for err, naming the call that returned it. */
ad_status adi_mpi_fail(int err, const char *call);

/* The failure key of a status: rank * AD_STATUS_COUNT + code for a failure, and
** size * AD_STATUS_COUNT (above every failure) for AD_OK, so that the minimum over
** ranks names the lowest failing rank and its code. */
static inline int adi_mpi_status_key(int rank, int size, ad_status st)
{
    return st == AD_OK ? size * (int)AD_STATUS_COUNT : rank * (int)AD_STATUS_COUNT + (int)st;
}

/*
** Turns the minimum key over all ranks into this rank's result: AD_OK when nobody
** failed; the rank's own status (its message untouched) when it failed itself; else
** AD_ERR_PEER_FAILED naming the lowest failing rank and its code: "<what>: rank R
** failed<when>: <code's text>" (when: "" or " at step N").
*/
ad_status adi_mpi_status_from_key(int size, ad_status local, int key,
                                 const char *what, const char *when);

/* Every rank passes its local status; all learn who failed (MPI_MIN of the keys on
** comm). Returns as adi_mpi_status_from_key, or AD_ERR_MPI. For ad_mpi_new, which has
** no context yet, and ad_mpi_agree. */
ad_status adi_mpi_agree_on(MPI_Comm comm, int rank, int size, ad_status local,
                          const char *what);

/*
** The shape check before a broadcast (ad_mpi_new's parameters, ad_mpi_broadcast):
** desc holds n descriptors of AD_MPI_DESC_WORDS words (dtype, ndim, shape[4]); rank 0's
** are sent to every rank and compared. AD_ERR_MODEL_MISMATCH on every rank when a rank
** differs, naming `what`, the first index that differs, a rank holding it and both
** descriptions. The caller has already agreed on n. scratch holds n * AD_MPI_DESC_WORDS
** words.
*/
enum { AD_MPI_DESC_WORDS = 2 + AD_MAX_RANK };
void adi_mpi_describe(const ad_tensor *t, int64_t *desc);
ad_status adi_mpi_check_descs(MPI_Comm comm, int rank, const int64_t *desc, int64_t *scratch,
                             int n, const char *what);

/* Broadcasts n bytes from rank 0 on comm, in pieces an int count can say. */
ad_status adi_mpi_bcast_raw(MPI_Comm comm, void *bytes, size_t n);

/* Buckets (buckets.c): the plan for ps with buckets of at most bucket_bytes (a larger
** parameter gets one of its own), into dp->slot, dp->bucket, dp->req, dp->n_buckets.
** Local. AD_ERR_NOMEM, AD_ERR_OVERFLOW (a parameter beyond an int count); on error
** what was made is left in dp for adi_mpi_free_plan. */
ad_status adi_mpi_plan_buckets(ad_mpi *dp, size_t bucket_bytes);
void adi_mpi_free_plan(ad_mpi *dp);
/* The gradient-ready callback installed on gs. */
int adi_mpi_on_ready(int index, const ad_tensor *param, const ad_tensor *grad, void *user);

#endif /* AD_MPI_INTERNAL_H */
