/*
** ad_mpi.h: data-parallel training on MPI (libadtape-mpi, an optional part built when
** meson finds MPI; the core library never depends on it).
**
** Each rank records the model on its own shard of the global batch; the gradient sets
** are summed across ranks with MPI all-reduce and scaled by 1/size, so that with equal
** shards, each loss a mean over its shard, the step equals one process's step on the
** global batch. Every rank then runs the same optimiser step on the same sums, so
** parameters and optimiser state stay identical without being sent again.
**
** Example (fragment):
**     MPI_Init(&argc, &argv);                       // the caller's job, as is Finalize
**     ad_mpi *dp;
**     ad_mpi_new(MPI_COMM_WORLD, ps, gs, NULL, &dp); // checks shapes, sends rank 0's W
**     ad_mpi_broadcast(dp, &B);                     // fixed feedback matrices too
**     for (int s = 0; s < 1000; s++) {
**         double loss;                              // the global mean
**         ad_mpi_gradient(dp, tape, model_loss, &data, &loss);  // data: this rank's shard
**         ad_optim_step(opt, gs);
**     }
**     ad_mpi_free(dp);
**
** Gradients travel in buckets of about opts.bucket_bytes, assigned in reverse
** parameter order (the order a sweep usually finishes them in), as PyTorch's DDP does.
** With overlap on, a bucket's MPI_Iallreduce starts from the gradient-ready callback
** (ad_grads_on_ready, which the context installs on gs) as soon as all of its
** gradients are final, while the sweep goes on; with overlap off, every bucket is
** reduced with blocking MPI_Allreduce after the sweep. The results are bitwise the same
** either way.
**
** Determinism: with 2 ranks the sum is g0 + g1 on both ranks, bitwise what one process
** gets by adding the two shards' gradients; the scaling by 1/size is exact for a power
** of two. With more ranks the order of summation is MPI's (Open MPI's tuned algorithms
** are deterministic for a given size and count, and give every rank the same result).
**
** Failure: every step ends with a small all-reduce of a status word. A rank whose sweep
** fails still takes part in the bucket reductions (with zeros), so every rank reaches
** the same collective and returns an error: the failing rank its own status, the
** others AD_ERR_PEER_FAILED naming the lowest failing rank. Nothing hangs; MPI_Abort is
** left to the caller for crashes. MPI errors on the context's own communicator (a
** duplicate of the one given, set to MPI_ERRORS_RETURN) come back as AD_ERR_MPI; the
** communicator may then be unusable, and MPI_Abort is the way out.
**
** Argument errors (AD_ERR_NULL, AD_ERR_INVALID where marked "local") are found before
** any communication and returned by the rank that made them only: a program that
** passes NULL on one rank leaves the others waiting. Every other error is agreed on.
*/
#ifndef AD_MPI_H
#define AD_MPI_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "ad_checkpoint.h"
#include "ad_grad.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ad_mpi ad_mpi;

typedef struct ad_mpi_options {
    size_t bucket_bytes; /* 0: AD_MPI_DEFAULT_BUCKET_BYTES; a parameter larger than a
                            bucket gets a bucket of its own */
    int no_overlap;      /* 1: reduce after the sweep instead of during it */
} ad_mpi_options;

enum { AD_MPI_DEFAULT_BUCKET_BYTES = 1 << 20 };

/*
** Makes the context for ps and gs on a duplicate of comm (collective: every rank of
** comm must call it with the same options). Checks that every rank holds the same
** number of parameters with the same dtypes and shapes (AD_ERR_MODEL_MISMATCH on every
** rank otherwise, naming the first parameter that differs and a rank holding it), then
** broadcasts every parameter's values from rank 0 and installs the gradient-ready
** callback on gs (replacing any other; gs must not get another while the context
** lives). Errors: AD_ERR_NULL, AD_ERR_INVALID (gs not made for ps) (both local),
** AD_ERR_NOMEM, AD_ERR_OVERFLOW (a parameter of more than INT_MAX elements),
** AD_ERR_PEER_FAILED (one of those on another rank), AD_ERR_MODEL_MISMATCH, AD_ERR_MPI.
** On error *out is untouched and nothing is left allocated; the parameters are
** unchanged unless the error came from the broadcast itself (AD_ERR_MPI). Parameters
** added to ps afterwards are not covered.
*/
AD_API ad_status ad_mpi_new(MPI_Comm comm, const ad_params *ps, ad_grads *gs,
                     const ad_mpi_options *opts, ad_mpi **out);
/* Removes the callback from gs and frees the context: call it before freeing gs, and
** before MPI_Finalize. Collective in MPI's terms, since it frees the duplicated
** communicator (MPI_Comm_free): call it on every rank. NULL accepted. */
AD_API void ad_mpi_free(ad_mpi *dp);

/* This rank's number and the number of ranks in the context (-1 and 0 for NULL). */
AD_API int ad_mpi_rank(const ad_mpi *dp);
AD_API int ad_mpi_size(const ad_mpi *dp);

/*
** One data-parallel gradient (collective): ad_gradient(tape, ps, loss_fn, user, gs)
** on this rank's shard, the bucketed all-reduce of gs scaled by 1/size, and the status
** all-reduce. *loss_value (optional out) gets the mean of the ranks' losses, the same
** on every rank. On success gs holds the global gradient on every rank. A parameter
** that gets no gradient on this rank (its loss does not use it) counts as zeros in the
** sum and stays without a gradient here; the ranks that have one get the scaled sum. The
** optimiser then updates it on those ranks only, so the parameters drift apart: record
** the same model on every rank. Errors: AD_ERR_NULL for a NULL dp (local); as
** ad_gradient on the failing rank (a NULL tape or loss_fn included), with its message;
** AD_ERR_PEER_FAILED on the others ("rank R failed at step N: <code>"); AD_ERR_MPI.
** After a failure gs is unspecified on every rank (parameters are untouched), and the
** context can be used for the next step: every rank gets the error at the same step,
** so every rank can retry or stop cleanly.
*/
AD_API ad_status ad_mpi_gradient(ad_mpi *dp, ad_tape *tape, ad_loss_fn loss_fn, void *user,
                          double *loss_value);

/* Broadcasts t's data from rank 0 (collective); a feedback matrix or any other tensor
** every rank must share. Shapes and dtypes must agree (AD_ERR_MODEL_MISMATCH on every
** rank, naming both; t unchanged). Bumps t's version on the ranks that received.
** Errors: AD_ERR_NULL (local), AD_ERR_MODEL_MISMATCH, AD_ERR_MPI. */
AD_API ad_status ad_mpi_broadcast(ad_mpi *dp, ad_tensor *t);
/* Broadcasts n bytes from rank 0 (a generator's state, a seed); n must be the same on
** every rank. Errors: AD_ERR_NULL (local), AD_ERR_MPI. */
AD_API ad_status ad_mpi_broadcast_bytes(ad_mpi *dp, void *bytes, size_t n);

/* Sums n counters over all ranks into total on rank 0 (collective; total is only
** written on rank 0, may be NULL elsewhere; local == total on rank 0 sums in place):
** per-rule pullback counts for a report. Errors: AD_ERR_NULL, AD_ERR_INVALID (n < 0)
** (both local), AD_ERR_MPI. */
AD_API ad_status ad_mpi_sum_to_root(ad_mpi *dp, const uint64_t *local, uint64_t *total, int n);

/* Agreement check (collective): *same = 1 on every rank when every parameter's bytes
** are equal on all ranks (compared by a 64-bit hash of the data), else 0. For tests
** and for a periodic sanity check in long runs. Errors: AD_ERR_NULL (local), AD_ERR_MPI. */
AD_API ad_status ad_mpi_params_agree(ad_mpi *dp, int *same);

/* Status agreement (collective): every rank passes its own status; all get AD_OK when
** all passed AD_OK, else the failing rank its own and the others AD_ERR_PEER_FAILED.
** For steps outside ad_mpi_gradient (data loading, evaluation) that must fail together.
** A local value that is not a status counts as AD_ERR_INVALID. Also AD_ERR_NULL (local),
** AD_ERR_MPI. */
AD_API ad_status ad_mpi_agree(ad_mpi *dp, ad_status local);

/* Crash-safe checkpoint written by rank 0 only (ad_checkpoint_save of the context's
** parameter set), its status shared (collective): rank 0 returns its own, the others
** AD_OK or AD_ERR_PEER_FAILED with the start of rank 0's message. path, names and
** extras are read on rank 0 only. Also AD_ERR_NULL (local), AD_ERR_MPI. */
AD_API ad_status ad_mpi_checkpoint_save(ad_mpi *dp, const char *path, const char *const names[],
                                 const ad_checkpoint_extras *extras);

/* Seconds spent inside MPI calls for gradients since the context was made (or the last
** reset): starting bucket reductions, the progress calls during the sweep, waiting on
** the reductions and the status word. Waiting includes a slower rank's sweep. For
** benchmarks. */
AD_API double ad_mpi_comm_seconds(const ad_mpi *dp);
AD_API void ad_mpi_reset_comm_seconds(ad_mpi *dp);

#ifdef __cplusplus
}
#endif
#endif /* AD_MPI_H */
