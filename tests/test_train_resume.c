/*
** test_train_resume.c: adtape-train --checkpoint and --resume. Every rule, two seeds:
** a job stopped after epoch 1 and resumed to epoch 3 writes the CSV of the job run to
** epoch 3 in one go, in every column but the time; the history before the stop comes
** from the checkpoints (its times are those of the first process, not recomputed).
** Runs the program itself on Fashion-MNIST (600 training images, 784-16-8-10, Adam).
** BioTorch's recipe (RMSprop, --milestones, --clamp-grad, --constrain-weights) resumed
** halfway leaves checkpoints whose tensors and metadata are the uninterrupted run's
** byte for byte.
*/
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ad_checkpoint.h"
#include "support.h"

static char dir[64];

static void make_dir(void)
{
    ts_tmpdir_make(dir, sizeof dir, "train-resume");
}

static void remove_dir(void)
{
    ts_tmpdir_remove(dir);
}

/* No Criterion timeout: under scripts/valgrind every adtape-train runs under memcheck
** too, and meson's timeout (multiplied there) is the one that fits both. */
TestSuite(train_resume, .init = make_dir, .fini = remove_dir);

#define JOB "--subset 600 --hidden 16,8 --batch 32 --optimiser adam --threads 1"
#define EVERY_RULE "--rule bp,fa,dfa,usf,brsf,frsf,kp,frozen --seeds 1,2"

/* Runs adtape-train with JOB and args (output into dir/log); returns its exit status. */
static int train(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd '%s' && OPENBLAS_NUM_THREADS=1 '%s' " JOB " %s >>log 2>&1",
             dir, TRAIN_PROGRAM, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The lines of dir/name, each cut before its last comma (the seconds column) when
** cut; malloc'd, NUL-joined into one string with '\n'. */
static char *read_csv(const char *name, int cut)
{
    char path[128], line[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    size_t cap = 1 << 16, n = 0;
    char *all = calloc(cap, 1);
    cr_assert_not_null(all);
    while (fgets(line, sizeof line, f)) {
        char *comma = strrchr(line, ',');
        if (cut && comma)
            strcpy(comma, "\n");
        size_t k = strlen(line);
        cr_assert_lt(n + k, cap, "CSV too long for the test");
        memcpy(all + n, line, k + 1);
        n += k;
    }
    fclose(f);
    return all;
}

/* The seconds of row `row` (0 is the header) of a CSV read uncut. */
static void field_of_row(const char *csv, int row, char *out, size_t size)
{
    const char *p = csv;
    for (int r = 0; r < row && p; r++)
        p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL;
    cr_assert_not_null(p);
    const char *end = strchr(p, '\n');
    const char *comma = p;
    for (const char *q = p; q < end; q++)
        if (*q == ',')
            comma = q + 1;
    snprintf(out, size, "%.*s", (int)(end - comma), comma);
}

Test(train_resume, job_resumed_after_epoch_1_writes_the_uninterrupted_csv)
{
    cr_assert_eq(train(EVERY_RULE " --epochs 3 --out whole"), 0);
    cr_assert_eq(train(EVERY_RULE " --epochs 1 --out part --checkpoint run.safetensors"), 0);
    char *first = read_csv("part/epochs.csv", 0);
    cr_assert_eq(train(EVERY_RULE " --epochs 3 --out part --resume run.safetensors"), 0);
    char *whole = read_csv("whole/epochs.csv", 1), *resumed = read_csv("part/epochs.csv", 1);
    cr_assert_str_eq(resumed, whole);
    cr_assert_gt(strlen(whole), 16 * 4 * 20, "one row per rule, seed and epoch");
    /* Row 2 is bp, seed 1, epoch 1: its time was restored, so the first process's. */
    char *after = read_csv("part/epochs.csv", 0);
    char t1[32], t2[32];
    field_of_row(first, 2, t1, sizeof t1);
    field_of_row(after, 2, t2, sizeof t2);
    cr_assert_str_eq(t2, t1, "epoch 1 was not restored from the checkpoint");
    free(first);
    free(whole);
    free(resumed);
    free(after);
}

Test(train_resume, checkpoint_per_run_is_named_by_rule_and_seed)
{
    cr_assert_eq(train("--epochs 1 --out o --rule fa --seeds 1,2 --checkpoint ck.safetensors"),
                 0);
    cr_assert_eq(train("--epochs 1 --out o --rule fa --seeds 1,2 --checkpoint noext"), 0);
    const char *want[] = {"ck.fa.seed1.safetensors", "ck.fa.seed2.safetensors",
                          "noext.fa.seed1", "noext.fa.seed2"};
    for (int i = 0; i < 4; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, want[i]);
        cr_assert_eq(access(path, F_OK), 0, "no %s", want[i]);
    }
}

/* A checkpoint of 3 epochs continued with --epochs 2 cannot give a 2-epoch CSV. */
Test(train_resume, checkpoint_with_more_epochs_than_asked_fails)
{
    cr_assert_eq(train("--epochs 3 --out o --rule fa --checkpoint c.safetensors"), 0);
    cr_assert_eq(train("--epochs 2 --out o --rule fa --resume c.safetensors"), 1);
    char *log = read_csv("log", 0);
    cr_assert(strstr(log, "holds 3 epochs, more than --epochs 2"), "%s", log);
    free(log);
}

/* A run without its checkpoint (killed before the first save) starts afresh. */
Test(train_resume, resume_without_a_checkpoint_starts_from_the_beginning)
{
    cr_assert_eq(train("--epochs 2 --out whole --rule kp"), 0);
    cr_assert_eq(train("--epochs 2 --out fresh --rule kp --resume none.safetensors"), 0);
    char *a = read_csv("whole/epochs.csv", 1), *b = read_csv("fresh/epochs.csv", 1);
    cr_assert_str_eq(b, a);
    free(a);
    free(b);
}

/* BioTorch's recipe, small: RMSprop, a multi-step schedule whose second milestone falls
** after the stop, gradient clamping and the weight constraint. */
#define RECIPE                                                                           \
    "--rule bp,fa,dfa,kp --seeds 3 --optimiser rmsprop --lr 0.002 --milestones 1,3 "   \
    "--gamma 0.5 --clamp-grad --constrain-weights"

/* The whole of dir/path, malloc'd, into *bytes (out). */
static unsigned char *slurp(const char *name, size_t *bytes)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "no %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_gt(n, 8);
    rewind(f);
    unsigned char *all = malloc((size_t)n);
    cr_assert_not_null(all);
    cr_assert_eq(fread(all, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *bytes = (size_t)n;
    return all;
}

/* Every tensor of checkpoints a and b but the history (which holds the times) has the
** same bytes, and every metadata pair is the same: parameters, RMSprop's buffers, the
** feedback, the initial norms, the generators, the optimiser's rate and step counts. */
static void expect_same_state(const char *a, const char *b)
{
    char pa[160], pb[160];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    ad_checkpoint_info *ia, *ib;
    cr_assert_eq(ad_checkpoint_inspect(pa, &ia), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_checkpoint_inspect(pb, &ib), AD_OK, "%s", ad_last_error());
    size_t na, nb;
    unsigned char *fa = slurp(a, &na), *fb = slurp(b, &nb);
    cr_assert_eq(ia->n_tensors, ib->n_tensors, "%s", a);
    int norms = 0, square_avg = 0;
    for (int i = 0; i < ia->n_tensors; i++) {
        const ad_checkpoint_entry *ea = &ia->tensors[i], *eb = &ib->tensors[i];
        cr_assert_str_eq(ea->name, eb->name);
        norms += !strcmp(ea->name, "trainer.weight_norms");
        square_avg += strstr(ea->name, ".square_avg") != NULL;
        if (!strcmp(ea->name, "trainer.history"))
            continue;
        cr_assert_eq(ea->end - ea->begin, eb->end - eb->begin, "%s %s", a, ea->name);
        cr_expect(!memcmp(fa + 8 + ia->header_bytes + ea->begin,
                          fb + 8 + ib->header_bytes + eb->begin, ea->end - ea->begin),
                  "%s: %s differs from the uninterrupted run's", b, ea->name);
    }
    cr_expect_eq(norms, 1, "%s holds no initial norms", a);
    cr_expect_gt(square_avg, 0, "%s holds no RMSprop state", a);
    cr_assert_eq(ia->n_meta, ib->n_meta);
    for (int i = 0; i < ia->n_meta; i++) {
        cr_assert_str_eq(ia->meta[i].key, ib->meta[i].key);
        cr_expect_str_eq(ia->meta[i].value, ib->meta[i].value, "%s: %s", b, ia->meta[i].key);
    }
    free(fa);
    free(fb);
    ad_checkpoint_info_free(ia);
    ad_checkpoint_info_free(ib);
}

Test(train_resume, recipe_run_resumed_halfway_matches_the_uninterrupted_run_bitwise)
{
    cr_assert_eq(train(RECIPE " --epochs 4 --out whole --checkpoint whole.safetensors"), 0);
    cr_assert_eq(train(RECIPE " --epochs 2 --out part --checkpoint part.safetensors"), 0);
    cr_assert_eq(train(RECIPE " --epochs 4 --out part --resume part.safetensors"), 0);
    char *whole = read_csv("whole/epochs.csv", 1), *resumed = read_csv("part/epochs.csv", 1);
    cr_assert_str_eq(resumed, whole);
    const char *rules[] = {"bp", "fa", "dfa", "kp"};
    for (int r = 0; r < 4; r++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "whole.%s.seed3.safetensors", rules[r]);
        snprintf(b, sizeof b, "part.%s.seed3.safetensors", rules[r]);
        expect_same_state(a, b);
    }
    /* The control: without the schedule the same job gives other numbers. */
    cr_assert_eq(train("--rule bp,fa,dfa,kp --seeds 3 --optimiser rmsprop --lr 0.002 "
                       "--clamp-grad --constrain-weights --epochs 4 --out flat"), 0);
    char *flat = read_csv("flat/epochs.csv", 1);
    cr_assert_str_neq(flat, whole, "the milestones changed nothing");
    free(flat);
    free(whole);
    free(resumed);
}

/* A checkpoint of one schedule does not continue under another. */
Test(train_resume, resume_with_another_schedule_fails)
{
    cr_assert_eq(train("--epochs 1 --out o --rule fa --milestones 2 "
                       "--checkpoint s.safetensors"), 0);
    cr_assert_eq(train("--epochs 2 --out o --rule fa --milestones 3 "
                       "--resume s.safetensors"), 1);
    char *log = read_csv("log", 0);
    cr_assert(strstr(log, "train.recipe milestones 2 gamma"), "%s", log);
    free(log);
}

Test(train_resume, help_lists_the_recipe_options)
{
    cr_assert_eq(train("--help"), 0);
    char *help = read_csv("log", 0);
    const char *want[] = {"rmsprop", "--milestones", "--gamma", "--clamp-grad",
                          "--constrain-weights"};
    for (int i = 0; i < 5; i++)
        cr_expect(strstr(help, want[i]), "--help lacks %s", want[i]);
    free(help);
}
