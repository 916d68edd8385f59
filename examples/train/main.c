/*
** adtape-train: trains the MLP of model.h on Fashion-MNIST with each learning rule
** asked for, once per seed, and reports accuracy and alignment with backprop per epoch.
** This file orchestrates; options.c parses, report.c prints and writes, parallel.c
** makes it one rank of an MPI job (under mpirun, when built with MPI).
**
** Under MPI the global batch is --batch: every rank shuffles the same way (same seed)
** and takes its contiguous share of each batch, so the shards together are exactly
** the single-process batch and ad_mpi_gradient's step is the single-process step.
*/
#define _GNU_SOURCE /* clock_gettime, isatty, fileno */

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "model.h"
#include "options.h"
#include "parallel.h"
#include "report.h"
#include "resume.h"

enum { PATH_BYTES = 4096 };

/* KP's B only converges to W when both decay (Akrout et al., 2019); others need none. */
static double default_decay(rule_kind r)
{
    return r == RULE_KP ? 1e-4 : 0.0;
}

/* Everything a run needs besides its model: options, data, the log it fills, and
** the job-wide step count the progress bar's ETA comes from. */
typedef struct trainer {
    const options *o;
    dataset d;
    job_log job;
    FILE *log, *bar;                         /* bar NULL: log is not a terminal */
    int64_t steps_total, steps_done;
    double last_draw;
} trainer;

/* The process's place in the MPI job (rank 0 of 1 without MPI); fail() needs it. */
static parallel par;

static void say_error(ad_status rc)
{
    char who[32] = "";
    if (par.size > 1)
        snprintf(who, sizeof who, "rank %d: ", par.rank);
    fprintf(stderr, "adtape-train: %s%s: %s\n", who, ad_status_str(rc), ad_last_error());
}

/* An error every rank got at this point (agreed, or from a collective): every rank
** exits, and only the one that failed says why (the others got AD_ERR_PEER_FAILED). */
static _Noreturn void fail(ad_status rc)
{
    if (rc != AD_ERR_PEER_FAILED)
        say_error(rc);
    exit(1);
}

/* An error only this rank has, while the others may wait in a collective: abort all. */
static _Noreturn void fail_alone(ad_status rc)
{
    say_error(rc);
    parallel_abort(&par, 1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* mkdir -p: every missing parent too; an existing directory is fine. */
static int make_dirs(const char *path)
{
    char buf[PATH_BYTES];
    struct stat st;
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return errno = ENAMETOOLONG, -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    if (stat(buf, &st) != 0)
        return -1;
    return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
}

/* Only rank 0 writes, after the last collective: it may simply stop. */
static void join(char *out, const char *dir, const char *file)
{
    if (snprintf(out, PATH_BYTES, "%s/%s", dir, file) >= PATH_BYTES) {
        fprintf(stderr, "adtape-train: path too long: %s/%s\n", dir, file);
        exit(1);
    }
}

/* Every rank reads the files (no scatter: 200 MB of floats is cheap beside training)
** and they agree before going on; a short training set is alike on every rank. */
static void load_data(const options *o, dataset *d)
{
    int64_t n_fit = 0;
    ad_status rc = parallel_agree(&par, data_read(o->data_dir, o->arch, d));
    rc = rc ? rc : data_split(d, o->subset, o->holdout, &n_fit);
    if (rc)
        fail(rc);
    if (n_fit < o->batch) {
        if (par.rank == 0)
            fprintf(stderr, "adtape-train: %lld training images (after --holdout %lld) are "
                            "fewer than one batch of %lld\n",
                    (long long)n_fit, (long long)o->holdout, (long long)o->batch);
        exit(2);
    }
}

/* Fisher-Yates with the run's own generator, so the order depends on the seed only.
** The modulo's bias is below n / 2^64: negligible. */
static void shuffle(int64_t *idx, int64_t n, ad_rng *rng)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(ad_rng_u64(rng) % (uint64_t)(i + 1));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* Accuracy on the evaluation rows; angles on the fixed alignment batch, the same rows
** every epoch so the curve shows the model changing, not the batch. On rank 0 only
** (every rank holds its model): the figures are those of one process, model.c needs no
** reductions, and it is cheap beside an epoch; the others wait at the agreement. */
static void evaluate(model *m, const dataset *d, epoch_stats *st)
{
    ad_status rc = AD_OK;
    if (par.rank == 0) {
        rc = model_accuracy(m, &d->eval_x, &d->eval_y, &st->accuracy);
        rc = rc ? rc : model_alignment(m, d->test_x, d->test_y, d->n_align,
                                       st->grad_angle, st->weight_angle);
        model_weight_metrics(m, st->weight_angle, st->norm_ratio);
    }
    if ((rc = parallel_agree(&par, rc)))
        fail(rc);
}

/* At most ten redraws a second: a terminal that scrolls slowly would slow training. */
static void draw_bar(trainer *t, const run_log *run, int e, double frac, double rate)
{
    double tn = now();
    if (!t->bar || tn - t->last_draw < 0.1)
        return;
    t->last_draw = tn;
    double left = (double)(t->steps_total - t->steps_done) * (double)t->o->batch;
    progress p = {rule_name(run->rule), run->seed, e, t->o->epochs, frac, rate,
                  rate > 0 ? left / rate : NAN};
    report_bar(t->bar, &p);
}

/* One pass over floor(n / batch) shuffled batches, this rank's shard of each; returns
** the mean batch loss (of the global batches). */
static double train_epoch(trainer *t, model *m, int64_t *idx, ad_rng *rng,
                          const run_log *run, int e)
{
    int64_t n = t->d.fit_x.shape[0], batch = t->o->batch, steps = n / batch;
    int64_t shard = par.rank * (batch / par.size);
    double loss_sum = 0.0, t0 = now();
    shuffle(idx, n, rng);
    for (int64_t s = 0; s < steps; s++) {
        double loss;
        ad_status rc = model_step(m, &t->d.fit_x, &t->d.fit_y, idx + s * batch + shard,
                                  &loss);
        /* The gradient's errors reach every rank at this step; the optimiser's only
        ** this one, while the others already wait in the next step's reduction. */
        if (rc && par.size > 1 && rc != par.gradient_status)
            fail_alone(rc);
        if (rc)
            fail(rc);
        loss_sum += loss;
        t->steps_done++;
        double rate = (double)((s + 1) * batch) / (now() - t0);
        draw_bar(t, run, e, (double)(s + 1) / (double)steps, rate);
    }
    return loss_sum / (double)steps;
}

static model_config make_config(const options *o, const run_log *run)
{
    model_config cfg = {.arch = o->arch, .rule = run->rule, .n_layers = o->n_hidden + 1,
                        .relu = o->relu, .seed = run->seed, .batch = o->batch / par.size,
                        .usf_scaled = o->usf_scaling, .bias_init = o->bias_init};
    cfg.widths[0] = 784;
    for (int l = 0; l < o->n_hidden; l++)
        cfg.widths[l + 1] = o->hidden[l];
    cfg.widths[o->n_hidden + 1] = 10;
    options_recipe(o, &cfg);
    cfg.optim.lr = run->lr;
    cfg.optim.weight_decay = run->weight_decay;
    return cfg;
}

static void train_run(trainer *t, run_log *run)
{
    model m;
    model_config cfg = make_config(t->o, run);
    ad_status rc = model_init(&m, &cfg);
    int64_t n = t->d.fit_x.shape[0];
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    if (rc == AD_OK && !idx)
        rc = ad_fail(AD_ERR_NOMEM, "adtape-train: %lld batch indices", (long long)n);
    rc = parallel_agree(&par, rc);
    rc = rc ? rc : parallel_attach(&par, &m);
    if (rc)
        fail(rc);
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    /* Apart from the model's generator and seeded alike for every rule: for a seed,
    ** every rule sees the batches in the same order. */
    ad_rng rng;
    ad_rng_seed(&rng, run->seed ^ 0x53485546464c45ULL);
    /* Augmentation draws from the same generator (so checkpoints carry it), for the
    ** whole global batch on every rank, so the shuffles stay the same everywhere. */
    int64_t local = t->o->batch / par.size;
    m.augment = &rng;
    m.augment_skip[0] = par.rank * local;
    m.augment_skip[1] = t->o->batch - (par.rank + 1) * local;
    resume_run saved = {&m, &rng, idx, n, run, t->o->epochs};
    char path[PATH_BYTES] = "";
    int done = -1;
    rc = t->o->checkpoint ? resume_path(path, sizeof path, t->o->checkpoint, run) : AD_OK;
    rc = rc || !t->o->resume ? rc : parallel_agree(&par, resume_load(path, &saved, &done));
    if (rc)
        fail(rc);
    for (int e = 0; e <= done; e++) /* the restored history, as it was first shown */
        report_epoch(t->log, &t->job, run, e);
    if (done < 0) {
        run->epochs[0].train_loss = NAN;
        evaluate(&m, &t->d, &run->epochs[0]);
        report_epoch(t->log, &t->job, run, 0);
        if ((rc = resume_save(&par, path, &saved, done = 0)))
            fail(rc);
    }
    t->steps_done += done * (n / t->o->batch);
    for (int e = done + 1; e <= t->o->epochs; e++) {
        epoch_stats *st = &run->epochs[e];
        double t0 = now(), comm0 = parallel_comm_seconds(&par);
        if ((rc = model_set_epoch(&m, e - 1)))
            fail(rc);
        st->train_loss = train_epoch(t, &m, idx, &rng, run, e);
        st->seconds = now() - t0;
        st->comm_seconds = parallel_comm_seconds(&par) - comm0;
        evaluate(&m, &t->d, st);
        if (t->bar)
            report_clear_bar(t->bar);
        report_epoch(t->log, &t->job, run, e);
        if ((rc = resume_save(&par, path, &saved, e))) /* a later kill resumes here */
            fail(rc);
    }
    free(idx);
    parallel_detach(&par);
    model_free(&m);
}

/* One run_log per (rule, seed), rule-major, with lr and decay resolved per rule. */
static ad_status plan_job(trainer *t)
{
    const options *o = t->o;
    job_log *j = &t->job;
    run_log first = {.rule = o->rules[0]};
    model shape = {.cfg = make_config(o, &first)}; /* only its layer table is filled */
    ad_status rc = model_layout(&shape);
    if (rc)
        return rc;
    *j = (job_log){.n_rules = o->n_rules, .n_seeds = o->n_seeds, .n_epochs = o->epochs,
                   .n_hidden = shape.cfg.n_layers - 1, .model = arch_name(o->arch),
                   .activation = o->arch != ARCH_MLP ? "relu" : o->relu ? "relu" : "tanh",
                   .optimiser = options_optim_name(o->optim), .batch = o->batch,
                   .n_train = t->d.fit_x.shape[0], .n_eval = t->d.eval_x.shape[0],
                   .eval_name = o->holdout ? "val" : "test", .out_dir = o->out_dir,
                   .ranks = par.size, .usf_scaling = o->usf_scaling, .bias_init = o->bias_init, .milestones = o->milestones,
                   .n_milestones = o->n_milestones, .gamma = o->gamma,
                   .clamp_grad = o->clamp_grad, .constrain_weights = o->constrain_weights,
                   .augment = options_augments(o)};
    for (int l = 0; l < j->n_hidden; l++)
        j->hidden[l] = shape.layers[l].out;
    size_t n_runs = (size_t)o->n_rules * (size_t)o->n_seeds;
    j->runs = calloc(n_runs, sizeof *j->runs);
    if (!j->runs)
        return ad_fail(AD_ERR_NOMEM, "adtape-train: run log");
    for (size_t i = 0; i < n_runs; i++) {
        run_log *run = &j->runs[i];
        run->rule = o->rules[i / (size_t)o->n_seeds];
        run->seed = o->seeds[i % (size_t)o->n_seeds];
        run->lr = !isnan(o->lr)           ? o->lr
                  : o->arch == ARCH_MLP ? train_default_lr[run->rule]
                                        : train_default_lr_conv[run->rule];
        run->weight_decay = isnan(o->weight_decay) ? default_decay(run->rule)
                                                   : o->weight_decay;
        run->epochs = calloc((size_t)o->epochs + 1, sizeof *run->epochs);
        if (!run->epochs)
            return ad_fail(AD_ERR_NOMEM, "adtape-train: epoch log");
    }
    t->steps_total = (int64_t)n_runs * o->epochs * (j->n_train / o->batch);
    return AD_OK;
}

/* CSV, plot, then the table or the JSON (which names the plot). Returns the status. */
static int finish(trainer *t)
{
    char csv[PATH_BYTES], png[PATH_BYTES];
    int status = 0;
    join(csv, t->o->out_dir, "epochs.csv");
    join(png, t->o->out_dir, "accuracy_alignment.png");
    if (report_csv(&t->job, csv) != 0) {
        fprintf(stderr, "adtape-train: cannot write %s: %s\n", csv, strerror(errno));
        status = 1;
    }
    int drawn = report_plot(&t->job, png, t->log) == 0;
    if (t->o->json) {
        report_json(stdout, &t->job, csv, drawn ? png : NULL);
        return status;
    }
    report_table(stdout, &t->job);
    printf("\nper-epoch numbers: %s\n", csv);
    if (drawn)
        printf("plot: %s\n", png);
    return status;
}

static void free_job(trainer *t)
{
    for (int i = 0; t->job.runs && i < t->job.n_rules * t->job.n_seeds; i++)
        free(t->job.runs[i].epochs);
    free(t->job.runs);
    data_free(&t->d);
}

/* Every rank meets the same command line: rank 0 alone reports what is wrong with it. */
static void parse_command_line(int argc, char **argv, options *o)
{
    parallel_mute(&par, 1);
    options_parse(argc, argv, o);
    parallel_mute(&par, 0);
    if (o->batch % par.size != 0) {
        if (par.rank == 0)
            fprintf(stderr, "adtape-train: --batch %lld does not split into %d equal "
                            "shards: use a multiple of the number of ranks\n",
                    (long long)o->batch, par.size);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    options o;
    parallel_start(&par, &argc, &argv);
    parse_command_line(argc, argv, &o);
    openblas_set_num_threads(o.threads);
    /* Ranks other than 0 log to stdout, which parallel_start pointed at /dev/null. */
    trainer t = {.o = &o, .log = o.json && par.rank == 0 ? stderr : stdout};
    /* The bar shares the per-epoch lines' stream, so --json keeps stdout clean. Not
    ** under mpirun: it hands rank 0 a pseudo-terminal even when its own output goes
    ** to a file, so isatty cannot tell, and a log would fill with redraws. */
    t.bar = par.size == 1 && isatty(fileno(t.log)) ? t.log : NULL;
    load_data(&o, &t.d);
    /* Before training, so an unwritable --out fails in seconds, not after hours. */
    int bad_dir = par.rank == 0 && make_dirs(o.out_dir) != 0;
    if (bad_dir)
        fprintf(stderr, "adtape-train: cannot create %s: %s\n", o.out_dir, strerror(errno));
    if (parallel_agree(&par, bad_dir ? AD_ERR_IO : AD_OK) != AD_OK)
        return 1;
    ad_status rc = parallel_agree(&par, plan_job(&t));
    if (rc)
        fail(rc);
    report_plan(t.log, &t.job, t.o->threads);
    for (int i = 0; i < o.n_rules * o.n_seeds; i++)
        train_run(&t, &t.job.runs[i]);
    int status = par.rank == 0 ? finish(&t) : 0;
    free_job(&t);
    return status;
}
