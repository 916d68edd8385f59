/*
** resume.c: adtape-train's per-run checkpoints (resume.h). The tensors that do not
** train and the trainer's own arrays go in as checkpoint buffers: the permutation as
** F64 (indices below 2^53 are exact) and the history as an F64 matrix, one row per
** epoch, which is how the history's length travels with the file.
*/
#define _POSIX_C_SOURCE 200809L
#include "resume.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HISTORY "trainer.history"
#define PERMUTATION "trainer.permutation"
#define WEIGHT_NORMS "trainer.weight_norms"

/* Columns of a history row: loss, accuracy, the angles of every possible layer, times. */
enum { COLS = 4 + 3 * MODEL_MAX_LAYERS, MAX_BUFFERS = 3 * MODEL_MAX_LAYERS + 3 };

ad_status resume_path(char *out, size_t size, const char *file, const run_log *run)
{
    const char *slash = strrchr(file, '/'), *dot = strrchr(file, '.');
    if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : file))
        dot = file + strlen(file); /* no extension (a leading dot names a hidden file) */
    int n = snprintf(out, size, "%.*s.%s.seed%" PRIu64 "%s", (int)(dot - file), file,
                     rule_name(run->rule), run->seed, dot);
    if (n < 0 || (size_t)n >= size)
        return ad_fail(AD_ERR_INVALID, "adtape-train: the checkpoint name for %s is too "
                       "long", file);
    return AD_OK;
}

/* The model's tensors outside its parameter set: every feedback tensor but KP's (a
** parameter), and the frozen control's hidden layers, fixed at their initial values. */
typedef struct state {
    ad_checkpoint_buffer buf[MAX_BUFFERS];
    char names[MAX_BUFFERS][32];
    int n;
    ad_checkpoint_rng rngs[2];
    ad_tensor *perm, *history;
    char rule[16], seed[24], recipe[160];
    ad_checkpoint_meta meta[3];
} state;

static void add_buffer(state *s, const model *m, ad_tensor *t, int layer, const char *what)
{
    if (layer >= 0)
        model_tensor_name(m, s->names[s->n], sizeof s->names[s->n], layer, what);
    else
        snprintf(s->names[s->n], sizeof s->names[s->n], "%s", what);
    s->buf[s->n] = (ad_checkpoint_buffer){s->names[s->n], t};
    s->n++;
}

/* The schedule, clamping and constraint, which a resumed run must share: "milestones
** 50,75 gamma 0x1.999999999999ap-4 clamp 1 constrain 1" (gamma exact, in hex). */
static void recipe_text(char *out, size_t size, const model_config *c)
{
    int n = snprintf(out, size, "milestones");
    for (int i = 0; i < c->n_milestones; i++)
        n += snprintf(out + n, size - (size_t)n, "%c%d", i ? ',' : ' ', c->milestones[i]);
    snprintf(out + n, size - (size_t)n, " gamma %a clamp %d constrain %d",
             c->n_milestones ? c->gamma : 0.0, c->clamp_grad, c->constrain_weights);
}

/* Fills s for r with a history of `rows` rows; the tensors are made, not filled. */
static ad_status make_state(state *s, const resume_run *r, int64_t rows)
{
    model *m = r->m;
    *s = (state){0};
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (m->B[l] && m->cfg.rule != RULE_KP)
            add_buffer(s, m, m->B[l], l, "feedback");
        if (m->cfg.rule == RULE_FROZEN && l < m->cfg.n_layers - 1) {
            add_buffer(s, m, m->W[l], l, "weight");
            add_buffer(s, m, m->b[l], l, "bias");
        }
    }
    const int64_t hs[2] = {rows, COLS};
    ad_status rc = ad_tensor_new(AD_F64, 1, &r->n, &s->perm);
    rc = rc ? rc : ad_tensor_new(AD_F64, 2, hs, &s->history);
    if (rc)
        return rc;
    add_buffer(s, NULL, s->perm, -1, PERMUTATION);
    add_buffer(s, NULL, s->history, -1, HISTORY);
    if (m->norms)
        add_buffer(s, NULL, m->norms, -1, WEIGHT_NORMS);
    s->rngs[0] = (ad_checkpoint_rng){"model", &m->rng};
    s->rngs[1] = (ad_checkpoint_rng){"data", r->data_rng};
    snprintf(s->rule, sizeof s->rule, "%s", rule_name(r->run->rule));
    snprintf(s->seed, sizeof s->seed, "%" PRIu64, r->run->seed);
    s->meta[0] = (ad_checkpoint_meta){"train.rule", s->rule};
    s->meta[1] = (ad_checkpoint_meta){"train.seed", s->seed};
    s->meta[2] = (ad_checkpoint_meta){"train.recipe", s->recipe};
    recipe_text(s->recipe, sizeof s->recipe, &m->cfg);
    return AD_OK;
}

static void free_state(state *s)
{
    ad_tensor_free(s->perm);
    ad_tensor_free(s->history);
}

static void row_out(double *row, const epoch_stats *st)
{
    row[0] = st->train_loss;
    row[1] = st->accuracy;
    memcpy(row + 2, st->grad_angle, sizeof st->grad_angle);
    memcpy(row + 2 + MODEL_MAX_LAYERS, st->weight_angle, sizeof st->weight_angle);
    row[2 + 2 * MODEL_MAX_LAYERS] = st->seconds;
    row[3 + 2 * MODEL_MAX_LAYERS] = st->comm_seconds;
    memcpy(row + 4 + 2 * MODEL_MAX_LAYERS, st->norm_ratio, sizeof st->norm_ratio);
}

static void row_in(epoch_stats *st, const double *row)
{
    st->train_loss = row[0];
    st->accuracy = row[1];
    memcpy(st->grad_angle, row + 2, sizeof st->grad_angle);
    memcpy(st->weight_angle, row + 2 + MODEL_MAX_LAYERS, sizeof st->weight_angle);
    st->seconds = row[2 + 2 * MODEL_MAX_LAYERS];
    st->comm_seconds = row[3 + 2 * MODEL_MAX_LAYERS];
    memcpy(st->norm_ratio, row + 4 + 2 * MODEL_MAX_LAYERS, sizeof st->norm_ratio);
}

ad_status resume_save(parallel *p, const char *path, const resume_run *r, int epoch)
{
    if (!*path)
        return AD_OK;
    state s;
    ad_status rc = make_state(&s, r, epoch + 1);
    if (rc == AD_OK) {
        for (int64_t i = 0; i < r->n; i++)
            ((double *)s.perm->data)[i] = (double)r->idx[i];
        for (int e = 0; e <= epoch; e++)
            row_out((double *)s.history->data + e * COLS, &r->run->epochs[e]);
        ad_checkpoint_extras x = {.optim = r->m->opt, .step = (uint64_t)epoch,
                                  .meta = s.meta, .n_meta = 3, .buffers = s.buf,
                                  .n_buffers = s.n, .rngs = s.rngs, .n_rngs = 2};
        rc = parallel_checkpoint_save(p, path, r->m->ps, &x);
    }
    free_state(&s);
    return rc;
}

/* A file of another run must not be continued as this one. */
static ad_status same_run(const char *key, const char *value, void *user)
{
    const state *s = user;
    const char *want = !strcmp(key, "train.rule")     ? s->rule
                       : !strcmp(key, "train.seed")   ? s->seed
                       : !strcmp(key, "train.recipe") ? s->recipe
                                                      : NULL;
    if (want && strcmp(value, want))
        return ad_fail(AD_ERR_METADATA, "adtape-train: the checkpoint is of %s %s, not %s",
                       key, value, want);
    return AD_OK;
}

/* The history's rows, from the file's header: its length is the epochs it holds. */
static ad_status history_rows(const char *path, int n_epochs, int64_t *rows)
{
    ad_checkpoint_info *info;
    ad_status rc = ad_checkpoint_inspect(path, &info);
    if (rc)
        return rc;
    *rows = -1;
    for (int i = 0; i < info->n_tensors; i++) {
        const ad_checkpoint_entry *e = &info->tensors[i];
        if (!strcmp(e->name, HISTORY) && e->ndim == 2 && e->shape[1] == COLS)
            *rows = e->shape[0];
    }
    ad_checkpoint_info_free(info);
    if (*rows < 1)
        return ad_fail(AD_ERR_MISSING_TENSOR, "adtape-train: %s has no %s of %d columns",
                       path, HISTORY, COLS);
    if (*rows > (int64_t)n_epochs + 1)
        return ad_fail(AD_ERR_SHAPE, "adtape-train: %s holds %lld epochs, more than "
                       "--epochs %d", path, (long long)(*rows - 1), n_epochs);
    return AD_OK;
}

/* Indices in [0, n), each once: a permutation, checked before it reaches the batches. */
static ad_status take_permutation(const char *path, const double *v, int64_t *idx, int64_t n)
{
    unsigned char *seen = calloc((size_t)n + 1, 1);
    if (!seen)
        return ad_fail(AD_ERR_NOMEM, "adtape-train: %lld indices", (long long)n);
    ad_status rc = AD_OK;
    for (int64_t i = 0; i < n && !rc; i++) {
        bool ok = v[i] >= 0 && v[i] < (double)n && v[i] == floor(v[i]) &&
                  !seen[(int64_t)v[i]];
        if (ok)
            seen[(int64_t)v[i]] = 1;
        else
            rc = ad_fail(AD_ERR_INVALID, "adtape-train: %s: %s is not a permutation of "
                         "0..%lld (entry %lld)", path, PERMUTATION, (long long)(n - 1),
                         (long long)i);
    }
    for (int64_t i = 0; i < n && !rc; i++)
        idx[i] = (int64_t)v[i];
    free(seen);
    return rc;
}

ad_status resume_load(const char *path, const resume_run *r, int *done)
{
    struct stat sb;
    *done = -1;
    if (stat(path, &sb) != 0 && errno == ENOENT)
        return AD_OK;
    int64_t rows;
    ad_status rc = history_rows(path, r->n_epochs, &rows);
    if (rc)
        return rc;
    state s;
    rc = make_state(&s, r, rows);
    ad_checkpoint_extras x = {.optim = r->m->opt, .on_meta = same_run, .user = &s,
                              .buffers = s.buf, .n_buffers = s.n, .rngs = s.rngs,
                              .n_rngs = 2};
    rc = rc ? rc : ad_checkpoint_load(path, r->m->ps, NULL, &x);
    rc = rc ? rc : take_permutation(path, s.perm->data, r->idx, r->n);
    if (rc == AD_OK) {
        for (int64_t e = 0; e < rows; e++)
            row_in(&r->run->epochs[e], (const double *)s.history->data + e * COLS);
        *done = (int)rows - 1;
    }
    free_state(&s);
    return rc;
}
