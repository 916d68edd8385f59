/*
** test_train_resume.c: adtape-train --checkpoint and --resume. Every rule, two seeds:
** a job stopped after epoch 1 and resumed to epoch 3 writes the CSV of the job run to
** epoch 3 in one go, in every column but the time; the history before the stop comes
** from the checkpoints (its times are those of the first process, not recomputed).
** Runs the program itself on Fashion-MNIST (600 training images, 784-16-8-10, Adam).
*/
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
