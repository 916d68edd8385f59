/*
** parallel.h: adtape-train's data parallelism over MPI, kept out of the other files.
**
** Built with -DADTAPE_TRAIN_MPI (meson found MPI), parallel.c runs the program as one
** rank of MPI_COMM_WORLD: every rank trains on its shard of each global batch, the
** gradient comes from ad_mpi_gradient (libadtape-mpi), rank 0's parameters, feedback
** matrices and model generator are broadcast at the start of every run, and only rank 0
** writes. Built without MPI, the functions below are inline stand-ins for one process,
** so main.c needs no #ifdef and the program is exactly the single-process one.
**
** Failures: a status every rank shares (an agreed one, or a collective's) ends every
** rank cleanly through exit(), which finalises MPI (an atexit handler); only the
** failing rank prints, the others get AD_ERR_PEER_FAILED and stay quiet.
*/
#ifndef TRAIN_PARALLEL_H
#define TRAIN_PARALLEL_H

#include "model.h"

struct ad_mpi; /* ad_mpi.h's context; that header needs mpi.h, which this one must not */

typedef struct parallel {
    int rank, size;
    struct ad_mpi *dp;          /* the current run's context; NULL between runs, on one
                                   process, and without MPI */
    ad_status gradient_status;  /* of the last ad_mpi_gradient: shared by every rank */
    int saved_stderr;           /* parallel_mute's saved descriptor, -1 when none */
} parallel;

#ifdef ADTAPE_TRAIN_MPI

/* MPI_Init (a singleton without mpirun), rank and size, the atexit MPI_Finalize; on
** ranks other than 0, stdout goes to /dev/null. Exits with status 1 if MPI fails. */
void parallel_start(parallel *p, int *argc, char ***argv);

/* on = 1: stderr to /dev/null on ranks other than 0; on = 0: back. For errors every
** rank meets alike (the command line), which one rank should report. */
void parallel_mute(parallel *p, int on);

/* Collective: AD_OK when every rank passes AD_OK; else a failing rank keeps its own
** status and the others get AD_ERR_PEER_FAILED naming the lowest failing rank. Before
** parallel_attach only that lowest one keeps its status, so one rank reports. */
ad_status parallel_agree(parallel *p, ad_status local);

/* Collective, once per run after model_init: makes the data-parallel context, sends
** rank 0's W, b, feedback matrices and model generator to every rank and points
** m->gradient at ad_mpi_gradient. Nothing to do on one process. */
ad_status parallel_attach(parallel *p, model *m);

/* Frees the run's context; call before model_free (it unhooks the model's gs). */
void parallel_detach(parallel *p);

/* Seconds the run's gradients spent in MPI so far (0 without a context). */
double parallel_comm_seconds(const parallel *p);

/* Collective: rank 0 writes the checkpoint (ad_mpi_checkpoint_save), every rank gets
** its status; ps's own names. Without a context, ad_checkpoint_save. */
ad_status parallel_checkpoint_save(parallel *p, const char *path, const ad_params *ps,
                                   const ad_checkpoint_extras *x);

/* Ends every rank at once (MPI_Abort), for an error only this rank has while the others
** may already wait in a collective; on one process, exit(status). */
_Noreturn void parallel_abort(parallel *p, int status);

#else /* one process */

#include <stdlib.h>

static inline void parallel_start(parallel *p, int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    *p = (parallel){.rank = 0, .size = 1, .saved_stderr = -1};
}

static inline void parallel_mute(parallel *p, int on)
{
    (void)p;
    (void)on;
}

static inline ad_status parallel_agree(parallel *p, ad_status local)
{
    (void)p;
    return local;
}

static inline ad_status parallel_attach(parallel *p, model *m)
{
    (void)p;
    (void)m;
    return AD_OK;
}

static inline void parallel_detach(parallel *p)
{
    (void)p;
}

static inline double parallel_comm_seconds(const parallel *p)
{
    (void)p;
    return 0.0;
}

static inline ad_status parallel_checkpoint_save(parallel *p, const char *path,
                                                 const ad_params *ps,
                                                 const ad_checkpoint_extras *x)
{
    (void)p;
    return ad_checkpoint_save(path, ps, NULL, x);
}

static inline _Noreturn void parallel_abort(parallel *p, int status)
{
    (void)p;
    exit(status);
}

#endif
#endif /* TRAIN_PARALLEL_H */
