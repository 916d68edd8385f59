/*
** resume.h: adtape-train's checkpoints, one file per run, written after every epoch and
** read back by --resume. A file holds all the run's state, so the resumed run is the
** uninterrupted one bit for bit: the parameters and optimiser, the tensors that do not
** train (FA's and DFA's B, sign feedback's magnitudes, the frozen control's hidden
** layers), the model's generator (brSF's draws) and the data order's, the data
** permutation as it stands (each epoch shuffles the last one further) and the epoch
** history the CSV is written from.
**
** Under mpirun every rank reads the file and rank 0 alone writes it
** (ad_mpi_checkpoint_save); every rank holds the same state, so all may read.
*/
#ifndef TRAIN_RESUME_H
#define TRAIN_RESUME_H

#include <stddef.h>

#include "model.h"
#include "parallel.h"
#include "report.h"

/* FILE with ".<rule>.seed<seed>" inserted before its extension (the last '.' of its
** last component; appended when there is none): run.safetensors ->
** run.fa.seed1.safetensors. AD_ERR_INVALID when out is too small. */
ad_status resume_path(char *out, size_t size, const char *file, const run_log *run);

/* The state a run checkpoints, besides the model: the data order's generator, the
** permutation (n indices), and the history of n_epochs + 1 rows. */
typedef struct resume_run {
    model *m;
    ad_rng *data_rng;
    int64_t *idx;
    int64_t n;
    run_log *run;
    int n_epochs;
} resume_run;

/* Saves the run after epoch `epoch` (rows 0..epoch of the history); does nothing when
** path is "" (no --checkpoint). Collective under MPI; crash-safe as ad_checkpoint_save. */
ad_status resume_save(parallel *p, const char *path, const resume_run *r, int epoch);

/* Restores the run from path into *done (out): the epochs it holds, 0 when it holds
** only the untrained evaluation, -1 when there is no file (nothing is changed). A file
** of another rule, seed or model, with more epochs than n_epochs, or whose permutation
** is not one, fails (AD_ERR_METADATA, AD_ERR_SHAPE, ...), naming the file; the library's
** load changes nothing when it fails, but a bad permutation is found after it, so on
** any failure the run is to be abandoned (adtape-train exits). */
ad_status resume_load(const char *path, const resume_run *r, int *done);

#endif /* TRAIN_RESUME_H */
