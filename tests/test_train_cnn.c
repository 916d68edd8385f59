/*
** test_train_cnn.c: adtape-train --model cnn (BioTorch's CIFAR-10 network) end to end
** on CIFAR-10 files written here (CIFAR-10 is not packaged): six binary batches of 96
** records each (labels 0..9 in turn, random pixels), read with --data. Every rule
** (uSF scaled) trains one epoch to finite losses with a CSV row per epoch; and a job stopped after
** epoch 1 and resumed to epoch 2 writes the uninterrupted job's CSV, every column but
** the time.
*/
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "support.h"

enum { RECORDS = 96, RECORD_BYTES = 3073 };

static char dir[64];

static void write_batch(const char *name, uint64_t *rng)
{
    char path[128];
    snprintf(path, sizeof path, "%s/cifar/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    unsigned char rec[RECORD_BYTES];
    for (int r = 0; r < RECORDS; r++) {
        rec[0] = (unsigned char)(r % 10);
        for (int i = 1; i < RECORD_BYTES; i++)
            rec[i] = (unsigned char)(ts_next(rng) >> 56);
        cr_assert_eq(fwrite(rec, 1, sizeof rec, f), sizeof rec);
    }
    cr_assert_eq(fclose(f), 0);
}

static void make_dir(void)
{
    ts_tmpdir_make(dir, sizeof dir, "train-cnn");
    char sub[96];
    snprintf(sub, sizeof sub, "mkdir -p '%s/cifar'", dir);
    cr_assert_eq(system(sub), 0);
    uint64_t rng = 77;
    const char *names[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
    for (int i = 0; i < 6; i++)
        write_batch(names[i], &rng);
}

static void remove_dir(void)
{
    ts_tmpdir_remove(dir);
}

/* No Criterion timeout: meson's (scaled under valgrind) is the one that fits. */
TestSuite(train_cnn, .init = make_dir, .fini = remove_dir);

#define JOB "--model cnn --data cifar --batch 32 --threads 1"

static int train(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd '%s' && OPENBLAS_NUM_THREADS=1 '%s' " JOB " %s >>log 2>&1",
             dir, TRAIN_PROGRAM, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* dir/name's lines, each cut before its last comma (the time) when cut; malloc'd. */
static char *read_file(const char *name, int cut)
{
    char path[128], line[2048];
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
        cr_assert_lt(n + k, cap);
        memcpy(all + n, line, k + 1);
        n += k;
    }
    fclose(f);
    return all;
}

Test(train_cnn, every_rule_trains_an_epoch_on_generated_cifar_files)
{
    /* At a small rate, and uSF scaled: at the rules' MLP defaults dfa and usf diverge on
    ** this network, and unscaled uSF at any rate (sign(W) is about 50x conv3's W). */
    int rc = train("--rule all --usf-scaling --epochs 1 --lr 0.001 --out all");
    char *log = read_file("log", 0);
    cr_assert_eq(rc, 0, "%s", log);
    char *csv = read_file("all/epochs.csv", 0);
    const char *rules[] = {"bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "frozen"};
    for (int r = 0; r < 8; r++) {
        char row[16];
        snprintf(row, sizeof row, "\n%s,1,1,", rules[r]);
        const char *p = strstr(csv, row);
        cr_assert_not_null(p, "no epoch-1 row for %s in\n%s", rules[r], csv);
        double loss = strtod(p + strlen(row), NULL);
        cr_expect(isfinite(loss) && loss > 0 && loss < 10, "%s: loss %g", rules[r], loss);
    }
    free(csv);
    free(log);
}

Test(train_cnn, job_resumed_after_epoch_1_writes_the_uninterrupted_csv)
{
    cr_assert_eq(train("--rule bp,fa,kp --epochs 2 --out whole"), 0);
    cr_assert_eq(train("--rule bp,fa,kp --epochs 1 --out part --checkpoint c.safetensors"), 0);
    cr_assert_eq(train("--rule bp,fa,kp --epochs 2 --out part --resume c.safetensors"), 0);
    char *whole = read_file("whole/epochs.csv", 1), *resumed = read_file("part/epochs.csv", 1);
    cr_assert_str_eq(resumed, whole);
    cr_assert_gt(strlen(whole), 3 * 3 * 40, "a row per rule and epoch");
    free(whole);
    free(resumed);
}
