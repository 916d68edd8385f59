/*
** arena.h (internal): the tape's bump arena.
**
** Memory is carved from chained blocks, so pointers never move while a recording is
** alive. On reset the arena keeps one block large enough for the most it has ever
** held, so a model that records the same shapes every step allocates nothing after
** its first step.
*/
#ifndef AD_ARENA_H
#define AD_ARENA_H

#include <stddef.h>
#include <stdint.h>

/* Every allocation starts on a 64-byte boundary: a cache line, and AVX-512 width. */
#define AD_ARENA_ALIGN 64

typedef struct arena_block arena_block;

typedef struct adi_arena {
    arena_block *first;   /* the block kept across resets */
    arena_block *current; /* the block being carved */
    size_t used;          /* bytes handed out since the last reset (with padding) */
    size_t high_water;    /* the largest `used` ever */
    uint64_t heap_allocs; /* blocks ever allocated */
} adi_arena;

/* An empty arena; the first allocation makes the first block. */
void adi_arena_init(adi_arena *a);

/* `bytes` aligned to AD_ARENA_ALIGN, or NULL when out of memory or on overflow. */
void *adi_arena_alloc(adi_arena *a, size_t bytes);

/* Forgets every allocation; keeps (or makes) one block of high-water size. */
void adi_arena_reset(adi_arena *a);

/* Frees every block. */
void adi_arena_release(adi_arena *a);

#endif /* AD_ARENA_H */
