/*
** report.h: what adtape-train shows and writes: the progress bar, one line per epoch,
** the table comparing rules, OUT/epochs.csv, the JSON summary and the gnuplot figure.
**
** main.c fills a job_log while training; everything here only reads it, so the output
** formats can change without touching the training loop.
*/
#ifndef TRAIN_REPORT_H
#define TRAIN_REPORT_H

#include <stdio.h>

#include "model.h"

/* One row per epoch; row 0 is the untrained model (no training loss, no time). */
typedef struct epoch_stats {
    double train_loss;                       /* mean batch loss; NaN in row 0 */
    double accuracy;                         /* in [0, 1], on the evaluation set */
    double grad_angle[MODEL_MAX_LAYERS];     /* degrees, per hidden layer */
    double weight_angle[MODEL_MAX_LAYERS];   /* per weight layer: degrees between the
                                             ** feedback and W, NaN where the rule has
                                             ** none (model_weight_metrics) */
    double norm_ratio[MODEL_MAX_LAYERS];     /* per weight layer: |feedback| / |W| */
    double seconds;                          /* training only, evaluation excluded */
    double comm_seconds;                     /* of those, inside MPI for gradients */
} epoch_stats;

typedef struct run_log {
    rule_kind rule;
    uint64_t seed;
    double lr, weight_decay;                 /* as used, after the per-rule defaults */
    epoch_stats *epochs;                     /* n_epochs + 1 rows, owned by the job */
} run_log;

/* The whole job: runs are rule-major, runs[r * n_seeds + s]. */
typedef struct job_log {
    run_log *runs;
    int n_rules, n_seeds, n_epochs, n_hidden;
    int64_t hidden[MODEL_MAX_LAYERS];
    const char *model, *activation, *optimiser; /* model: "mlp", "lenet", "cnn" */
    int64_t batch, n_train, n_eval;
    const char *eval_name;                   /* "test" or "val" (the holdout) */
    const char *out_dir;
    int ranks;                               /* MPI processes sharing each batch */
    int usf_scaling;                         /* --usf-scaling */
    double bias_init;                        /* --bias-init */
    int augment;                             /* training crops and flips */
    const int *milestones;                   /* the schedule (n_milestones of them) */
    int n_milestones;
    double gamma;
    int clamp_grad, constrain_weights;
} job_log;

/* What the progress bar shows; the caller computes the rates. */
typedef struct progress {
    const char *rule;
    uint64_t seed;
    int epoch, n_epochs;
    double fraction;                         /* of this epoch, in [0, 1] */
    double images_per_s;
    double eta_s;                            /* whole job, training time only */
} progress;

/* The job's one-line summary before training: data, model, recipe, ranks, threads. */
void report_plan(FILE *f, const job_log *job, int threads);

/* Redraws the one-line bar on f with '\r'; report_clear_bar wipes it before a line. */
void report_bar(FILE *f, const progress *p);
void report_clear_bar(FILE *f);

/* "bp  seed 1  epoch  3/20  loss ...": run's row e, on f. */
void report_epoch(FILE *f, const job_log *job, const run_log *run, int e);

/* One row per rule: mean +- sample standard deviation over seeds of the final
** accuracy and top-hidden-layer angle, and the mean seconds per epoch. */
void report_table(FILE *f, const job_log *job);

/* Writes path as CSV (rule,seed,epoch,...). Returns 0, or -1 with errno set. */
int report_csv(const job_log *job, const char *path);

/* The JSON summary on f; plot_path may be NULL (no figure was drawn). */
void report_json(FILE *f, const job_log *job, const char *csv_path,
                 const char *plot_path);

/* Draws png_path with gnuplot (plot.c): accuracy per epoch on an axis fitted to the
** final accuracies, and the angle to backprop's gradient at each hidden layer, one
** line per rule (mean over seeds). Returns 0 when drawn, 1 when gnuplot is not
** installed, -1 when gnuplot failed; messages go to log. */
int report_plot(const job_log *job, const char *png_path, FILE *log);

#endif /* TRAIN_REPORT_H */
