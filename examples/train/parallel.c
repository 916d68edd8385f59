/*
** parallel.c: adtape-train as one rank of an MPI job (built only with MPI; see
** parallel.h for what it promises).
*/
#define _POSIX_C_SOURCE 200809L /* dup, fileno */

#include "parallel.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ad_mpi.h"

/*
** Every way out of the program goes through exit(): on the command line's errors and
** the ones parallel_agree made common, every rank exits at the same point, so each can
** finalise here without waiting on a rank that is stuck elsewhere. Errors only one
** rank has go through parallel_abort instead and never reach this.
*/
static void finalise_at_exit(void)
{
    int done = 0;
    MPI_Finalized(&done);
    if (!done)
        MPI_Finalize();
}

/*
** Started without mpirun, MPI_Init makes a singleton (size 1; Open MPI 4.1 does this
** as root too, in about 0.3 s here), so the same binary serves both ways and a 1-rank
** run takes the single-process path exactly: no context, plain ad_gradient.
*/
void parallel_start(parallel *p, int *argc, char ***argv)
{
    *p = (parallel){.size = 1, .saved_stderr = -1};
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fputs("adtape-train: MPI_Init failed\n", stderr);
        exit(1);
    }
    atexit(finalise_at_exit);
    MPI_Comm_rank(MPI_COMM_WORLD, &p->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p->size);
    if (p->rank != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "adtape-train: rank %d: cannot silence stdout\n", p->rank);
        parallel_abort(p, 1);
    }
}

void parallel_mute(parallel *p, int on)
{
    if (p->rank == 0)
        return;
    fflush(stderr);
    if (on && p->saved_stderr < 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null < 0)
            return; /* then every rank reports the error: noisy, not wrong */
        p->saved_stderr = dup(STDERR_FILENO);
        dup2(null, STDERR_FILENO);
        close(null);
    } else if (!on && p->saved_stderr >= 0) {
        dup2(p->saved_stderr, STDERR_FILENO);
        close(p->saved_stderr);
        p->saved_stderr = -1;
    }
}

/*
** Before a run's context exists (data loading, the output folder, model_init) there is
** no ad_mpi to call ad_mpi_agree on, so the agreement is made here on MPI_COMM_WORLD:
** the minimum over ranks of (failed ? rank : size). Only that lowest failing rank keeps
** its status: when every rank fails alike (a missing data folder), one says why.
*/
static ad_status agree_world(parallel *p, ad_status local)
{
    int mine = local == AD_OK ? p->size : p->rank, first;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS)
        return ad_fail(AD_ERR_MPI, "adtape-train: status all-reduce failed");
    if (first == p->size)
        return AD_OK;
    if (first == p->rank)
        return local; /* its message is already this thread's last error */
    return ad_fail(AD_ERR_PEER_FAILED, "adtape-train: rank %d failed", first);
}

ad_status parallel_agree(parallel *p, ad_status local)
{
    if (p->size == 1)
        return local;
    return p->dp ? ad_mpi_agree(p->dp, local) : agree_world(p, local);
}

/* The model's gradient hook: ps and gs are the context's own, given at attach time. */
static ad_status mpi_gradient(void *ctx, ad_tape *tape, const ad_params *ps,
                              ad_loss_fn loss_fn, void *user, ad_grads *gs, double *loss)
{
    parallel *p = ctx;
    (void)ps;
    (void)gs;
    p->gradient_status = ad_mpi_gradient(p->dp, tape, loss_fn, user, loss);
    return p->gradient_status;
}

/*
** Every rank built the same model from the same seed, so the broadcasts change nothing
** today; they make rank 0's model the model by construction, whatever a rank's
** initialisation did. KP's B is a parameter and comes with ad_mpi_new; the other rules'
** B are fixed tensors outside the parameter set. BRSF redraws its magnitudes every
** batch from the model's generator, so that generator's state is sent too.
*/
ad_status parallel_attach(parallel *p, model *m)
{
    if (p->size == 1)
        return AD_OK;
    p->gradient_status = AD_OK;
    p->dp = NULL;
    ad_status rc = ad_mpi_new(MPI_COMM_WORLD, m->ps, m->gs, NULL, &p->dp);
    for (int l = 0; rc == AD_OK && l < m->cfg.n_layers; l++)
        if (m->B[l] && m->cfg.rule != RULE_KP)
            rc = ad_mpi_broadcast(p->dp, m->B[l]);
    if (rc == AD_OK)
        rc = ad_mpi_broadcast_bytes(p->dp, &m->rng, sizeof m->rng);
    /* On MPI_COMM_WORLD whether or not this rank got a context: all must take one path. */
    rc = agree_world(p, rc);
    if (rc == AD_OK) {
        m->gradient = mpi_gradient;
        m->gradient_ctx = p;
    }
    return rc;
}

void parallel_detach(parallel *p)
{
    ad_mpi_free(p->dp);
    p->dp = NULL;
}

double parallel_comm_seconds(const parallel *p)
{
    return p->dp ? ad_mpi_comm_seconds(p->dp) : 0.0;
}

ad_status parallel_checkpoint_save(parallel *p, const char *path, const ad_params *ps,
                                   const ad_checkpoint_extras *x)
{
    return p->dp ? ad_mpi_checkpoint_save(p->dp, path, NULL, x)
                 : ad_checkpoint_save(path, ps, NULL, x);
}

_Noreturn void parallel_abort(parallel *p, int status)
{
    fflush(NULL);
    if (p->size > 1)
        MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}
