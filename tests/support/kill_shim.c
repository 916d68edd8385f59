/*
** kill_shim.c: an LD_PRELOAD library for the kill test (test_train_kill.c). With
** ADTAPE_KILL_AT=N in the environment, the N-th call of fsync or rename (counted
** together) kills the process with SIGKILL before the call happens, so a test can
** end a program inside a checkpoint save at the moments that matter most: with the
** temporary file written but not synced, synced but not renamed, or renamed but its
** folder not synced. Without the variable the calls go straight through.
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long calls;

static void maybe_die(void)
{
    const char *at = getenv("ADTAPE_KILL_AT");
    if (at && ++calls == atol(at))
        kill(getpid(), SIGKILL);
}

/* ISO C has no cast from dlsym's object pointer to a function pointer; POSIX
** guarantees the representation is the same, so the bytes are copied. */
static void *next(const char *name, size_t size, void *fn)
{
    void *sym = dlsym(RTLD_NEXT, name);
    memcpy(fn, &sym, size);
    return sym;
}

int fsync(int fd)
{
    int (*real)(int);
    void *ok = next("fsync", sizeof real, &real);
    maybe_die();
    return ok ? real(fd) : -1;
}

int rename(const char *from, const char *to)
{
    int (*real)(const char *, const char *);
    void *ok = next("rename", sizeof real, &real);
    maybe_die();
    return ok ? real(from, to) : -1;
}
