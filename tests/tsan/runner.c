/*
** tests/tsan/runner.c: main for the suites built against the Criterion stand-in
** (tests/tsan/criterion/criterion.h; see there why). Runs every registered test in a
** fork of its own, in name order, one at a time, and prints one line per test and a
** Criterion-style synthesis. Exits 1 if any test failed or crashed. Usage:
**     tsan_<suite> [substring]   (only tests whose suite::name contains it)
*/
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "criterion/criterion.h"

enum { MAX_TESTS = 256, TIMEOUT_SECONDS = 300 };

typedef struct crs_test {
    const char *suite, *name;
    crs_test_fn fn;
} crs_test;

static crs_test tests[MAX_TESTS];
static int n_tests;
static int failed; /* in a test's process: a cr_expect_* failed */

void crs_register(const char *suite, const char *name, crs_test_fn fn)
{
    if (n_tests == MAX_TESTS) {
        fprintf(stderr, "tsan runner: more than %d tests\n", MAX_TESTS);
        exit(2);
    }
    tests[n_tests++] = (crs_test){suite, name, fn};
}

void crs_fail(int fatal, const char *file, int line, const char *text, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "  %s:%d: %s failed: %s\n  ", file, line, fatal ? "assert" : "expect",
            text);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    failed = 1;
    if (fatal)
        exit(1);
}

static int by_name(const void *a, const void *b)
{
    const crs_test *x = a, *y = b;
    int c = strcmp(x->suite, y->suite);
    return c ? c : strcmp(x->name, y->name);
}

/* 0 passed, 1 failed, 2 crashed (a signal, a timeout, or a sanitizer's exit code). */
static int run_one(const crs_test *t)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("tsan runner: fork");
        return 2;
    }
    if (pid == 0) {
        alarm(TIMEOUT_SECONDS);
        t->fn();
        exit(failed);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return 2;
    if (WIFEXITED(status))
        return WEXITSTATUS(status) == 0 ? 0 : WEXITSTATUS(status) == 1 ? 1 : 2;
    return 2;
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : "";
    int counts[3] = {0, 0, 0};
    static const char *const verdict[3] = {"PASS", "FAIL", "CRASH"};
    qsort(tests, (size_t)n_tests, sizeof tests[0], by_name);
    for (int i = 0; i < n_tests; i++) {
        char full[256];
        snprintf(full, sizeof full, "%s::%s", tests[i].suite, tests[i].name);
        if (!strstr(full, filter))
            continue;
        int v = run_one(&tests[i]);
        counts[v]++;
        printf("[%s] %s\n", verdict[v], full);
    }
    printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d\n",
           counts[0] + counts[1] + counts[2], counts[0], counts[1], counts[2]);
    return counts[1] + counts[2] || !counts[0] ? 1 : 0; /* running nothing is a failure */
}
