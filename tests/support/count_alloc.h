/*
** count_alloc.h: a counting allocator installed through adtape's hooks, for tests that
** fail allocation N or check that a call leaves no allocation behind. Free of Criterion,
** so the MPI test program (which cannot use Criterion's forks) shares it with the
** Criterion suites (support.h's ts_alloc_* wrap it). Thread-safe counters.
*/
#ifndef TEST_COUNT_ALLOC_H
#define TEST_COUNT_ALLOC_H

#include <stdint.h>

#include "ad.h"

/* Resets the counters and installs the allocator (ad_set_allocator's status). */
ad_status count_alloc_install(void);
void count_alloc_uninstall(void);        /* back to the library's default */
uint64_t count_alloc_calls(void);        /* malloc + realloc calls since install */
int64_t count_alloc_outstanding(void);   /* allocations not yet freed */
/* The n-th allocation from now fails (0: never); restarts the call count. */
void count_alloc_fail_at(uint64_t n);

#endif /* TEST_COUNT_ALLOC_H */
