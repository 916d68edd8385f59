/*
** test_train_kill.c: adtape-train killed with SIGKILL at random moments, and inside
** checkpoint saves, then resumed each time, ends with the CSV of a run never killed
** (every column but the time). At least 20 kills, at least 5 of them inside a save:
** those runs carry kill_shim.so (LD_PRELOAD), which kills the process at the N-th fsync
** or rename, N drawn at random. A killed save must leave a checkpoint that loads, so
** no resume may fail: each process either finishes (0) or is killed.
**
** Release builds only (tests/meson.build): the timing of the random kills assumes a
** program at full speed, and under valgrind the whole would take far too long.
*/
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

static char dir[64];

static void make_dir(void)
{
    ts_tmpdir_make(dir, sizeof dir, "train-kill");
}

static void remove_dir(void)
{
    ts_tmpdir_remove(dir);
}

TestSuite(train_kill, .init = make_dir, .fini = remove_dir);

/* Two rules whose state is more than weights (FA's B; brSF's magnitude generator),
** short epochs so that checkpoints come often. */
static char *const job[] = {TRAIN_PROGRAM, "--subset", "1000", "--hidden", "32,16",
                            "--batch", "25", "--optimiser", "adam", "--rule", "fa,brsf",
                            "--seeds", "1,2", "--epochs", "4", "--threads", "1",
                            NULL, NULL, NULL, NULL, NULL};
/* Where --out DIR and the checkpoint option go; the last NULL ends argv even when all
** four are set. */
enum { TAIL = 17 };
_Static_assert(sizeof job / sizeof job[0] == TAIL + 5, "job: 4 slots and the argv end");

/* Starts adtape-train with --out out and, when ck_opt is not NULL, "ck_opt run";
** kill_at > 0 preloads the shim. Returns the child's pid. */
static pid_t start(const char *out, const char *ck_opt, long kill_at)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char at[24];
        snprintf(at, sizeof at, "%ld", kill_at);
        if (chdir(dir) != 0 || !freopen("/dev/null", "w", stdout) ||
            !freopen("log", "a", stderr))
            _exit(120);
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        if (kill_at > 0) {
            setenv("LD_PRELOAD", KILL_SHIM, 1);
            setenv("ADTAPE_KILL_AT", at, 1);
        }
        char *argv[sizeof job / sizeof job[0]];
        memcpy(argv, job, sizeof job);
        argv[TAIL] = "--out";
        argv[TAIL + 1] = (char *)out;
        argv[TAIL + 2] = (char *)ck_opt;
        argv[TAIL + 3] = ck_opt ? "run.safetensors" : NULL;
        execv(TRAIN_PROGRAM, argv);
        _exit(121);
    }
    return pid;
}

/* Waits for pid; returns its exit status, or 1000 + the signal that ended it. */
static int finish(pid_t pid)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The CSV at dir/out/epochs.csv with every line cut before its last field (seconds). */
static char *csv_without_time(const char *out)
{
    char path[160], line[1024];
    snprintf(path, sizeof path, "%s/%s/epochs.csv", dir, out);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    size_t cap = 1 << 16, n = 0;
    char *all = calloc(cap, 1);
    cr_assert_not_null(all);
    while (fgets(line, sizeof line, f)) {
        char *comma = strrchr(line, ',');
        if (comma)
            strcpy(comma, "\n");
        size_t k = strlen(line);
        cr_assert_lt(n + k, cap);
        memcpy(all + n, line, k + 1);
        n += k;
    }
    fclose(f);
    return all;
}

Test(train_kill, killed_and_resumed_job_writes_the_uninterrupted_csv)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    cr_assert_eq(finish(start("whole", NULL, 0)), 0, "the uninterrupted run failed");
    clock_gettime(CLOCK_MONOTONIC, &b);
    long whole_ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    /* Uniform over a whole run's time: the first second or so is loading the data (no
    ** progress), the rest training, where the kills that matter land. */
    long window = whole_ms + 1;
    int kills = 0, save_kills = 0, done = 0;
    for (int round = 0; round < 200 && !(done && kills >= 20 && save_kills >= 5); round++) {
        /* A save makes 3 fsync and rename calls (temporary file, rename, folder): N up
        ** to 6 dies in one of the first two saves of the process, at any of its steps.
        ** Those come first, while the job has saves left to make. */
        bool in_save = save_kills < 5 && round % 2 == 0;
        long at = in_save ? 1 + rand() % 6 : 0;
        pid_t pid = start("killed", "--resume", at);
        if (!in_save) {
            sleep_ms(rand() % window);
            kill(pid, SIGKILL);
        }
        int st = finish(pid);
        cr_assert(st == 0 || st == 1000 + SIGKILL, "seed %u, round %d: a resume failed "
                  "with %d (see the log)", seed, round, st);
        if (st != 0) {
            kills++;
            save_kills += in_save;
            done = 0; /* a kill after the end may have cut the CSV: finish once more */
            continue;
        }
        done = 1;
        if (save_kills < 5) { /* finished before enough saves died: begin again */
            char cmd[160];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'/run.* '%s'/killed", dir, dir);
            cr_assert_eq(system(cmd), 0);
            done = 0;
        }
    }
    cr_assert(done, "seed %u: the job never finished", seed);
    cr_assert_geq(kills, 20, "seed %u", seed);
    cr_assert_geq(save_kills, 5, "seed %u", seed);
    cr_log_info("seed %u: %d kills, %d inside saves; a whole run takes %ld ms", seed, kills,
                save_kills, whole_ms);
    char *want = csv_without_time("whole"), *got = csv_without_time("killed");
    cr_assert_str_eq(got, want, "seed %u: %d kills (%d inside saves)", seed, kills,
                     save_kills);
    free(want);
    free(got);
}
