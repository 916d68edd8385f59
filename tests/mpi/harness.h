/*
** harness.h: a small check harness for the MPI tests. Criterion forks every test into
** its own process, which MPI forbids (a forked child cannot use the parent's MPI
** state), so these tests are one plain program that mpirun starts on every rank.
**
** Each check makes one line, "rank R ok: what" or "rank R FAIL file:line: what" (rank
** 0's printed at once, the others' by rank 0 at the end); the program ends with rank 0
** printing "mpi: N passed, N failed" summed over all ranks and exits non-zero on every
** rank when any check failed anywhere.
**
** Tests must take the same path on every rank whatever a check found (never return
** early on a failed CHECK), or the ranks would post different collectives and hang.
** REQUIRE is for set-up that the rest cannot do without: it aborts the whole job.
*/
#ifndef MPI_HARNESS_H
#define MPI_HARNESS_H

#include <stdint.h>

#include "ad.h"

void check_at(int ok, const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
#define CHECK(cond, ...) check_at((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)

void require_at(ad_status rc, const char *file, int line, const char *what);
#define REQUIRE(call) require_at((call), __FILE__, __LINE__, #call)

/* This process's rank in MPI_COMM_WORLD, set by main. */
extern int g_rank;

/* The test's own counting allocator (tests/support/support.c needs Criterion), set as
** adtape's hooks before the first adtape call. fail_at = N makes the N-th allocation
** from now fail (0: never). */
void alloc_install(void);
uint64_t alloc_count(void);      /* malloc + realloc calls since install */
int64_t alloc_outstanding(void); /* allocations not yet freed */
void alloc_fail_at(uint64_t n);

/* Collective, at the end: rank 0 prints the other ranks' lines and "mpi: N passed,
** N failed" over all ranks. Returns the exit status for main (1 on any failure). */
int harness_finish(void);

#endif /* MPI_HARNESS_H */
