/*
** malloc_count.c: an LD_PRELOAD interposer that counts every heap allocation made
** in the process, by any library, so benchmarks can report allocations per step
** for adtape and PyTorch alike.
**
** Usage: LD_PRELOAD=build/bench/libmalloc_count.so ./program
** Read the counter with malloc_count_get(), found through dlsym(RTLD_DEFAULT, ...)
** from C or ctypes.CDLL(None).malloc_count_get from Python; when the symbol is
** absent, the process was not started with the interposer.
**
** Every entry point forwards to glibc's own allocator through the __libc_* names
** that glibc exports for exactly this purpose, so there is no dlsym() call (which
** itself allocates and would recurse) and no bootstrap buffer. free() is not
** interposed: every block still comes from glibc's allocator, so glibc's free()
** releases it. glibc's own reallocarray, strdup and the like reach these through
** the PLT, so they are counted too. The counter is a relaxed atomic: a tally, not
** a synchronisation point; relaxed increments are still exact under threads.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* glibc's real allocator (exported, GLIBC_2.2.5; declared in no header). */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

static _Atomic uint64_t allocations;

static void count_one(void)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}

uint64_t malloc_count_get(void);

/*
** The number of allocation calls since the process started. A realloc counts
** as one allocation (it may move the block), except realloc(p, 0) with p not
** NULL, which glibc treats as free(p).
*/
uint64_t malloc_count_get(void)
{
    return atomic_load_explicit(&allocations, memory_order_relaxed);
}

void *malloc(size_t size)
{
    count_one();
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size)
{
    count_one();
    return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size)
{
    if (ptr == NULL || size != 0)
        count_one();
    return __libc_realloc(ptr, size);
}

/* POSIX: alignment must be a power of two and a multiple of sizeof(void *). */
int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (alignment == 0 || (alignment & (alignment - 1)) != 0
        || alignment % sizeof(void *) != 0)
        return EINVAL;
    count_one();
    void *p = __libc_memalign(alignment, size);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size)
{
    count_one();
    return __libc_memalign(alignment, size);
}

void *memalign(size_t alignment, size_t size)
{
    count_one();
    return __libc_memalign(alignment, size);
}

void *valloc(size_t size)
{
    count_one();
    return __libc_valloc(size);
}

void *pvalloc(size_t size)
{
    count_one();
    return __libc_pvalloc(size);
}
