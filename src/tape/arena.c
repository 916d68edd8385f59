/*
** arena.c: chained bump blocks with a high-water-sized block kept across resets.
*/
#include "arena.h"

#include "../base/base.h"

struct arena_block {
    arena_block *next;
    size_t capacity; /* usable bytes after the aligned start */
    size_t used;
    /* the block's storage follows the header */
};

enum { MIN_BLOCK = 64 * 1024 };

/* The first aligned byte of a block's storage. */
static unsigned char *block_base(arena_block *b)
{
    uintptr_t p = (uintptr_t)(b + 1);
    p = (p + AD_ARENA_ALIGN - 1) & ~(uintptr_t)(AD_ARENA_ALIGN - 1);
    return (unsigned char *)p;
}

static arena_block *block_new(adi_arena *a, size_t capacity)
{
    size_t total;
    if (!adi_size_add(capacity, sizeof(arena_block) + AD_ARENA_ALIGN, &total))
        return NULL;
    arena_block *b = ad_malloc(total);
    if (!b)
        return NULL;
    b->next = NULL;
    b->capacity = capacity;
    b->used = 0;
    a->heap_allocs++;
    return b;
}

void adi_arena_init(adi_arena *a)
{
    a->first = a->current = NULL;
    a->used = a->high_water = 0;
    a->heap_allocs = 0;
}

void *adi_arena_alloc(adi_arena *a, size_t bytes)
{
    size_t padded;
    if (!adi_size_add(bytes, AD_ARENA_ALIGN - 1, &padded))
        return NULL;
    padded &= ~(size_t)(AD_ARENA_ALIGN - 1);
    arena_block *b = a->current;
    while (b && b->capacity - b->used < padded)
        b = b->next; /* blocks after current exist only when a reset kept them */
    if (!b) {
        size_t cap = a->current ? a->current->capacity * 2 : MIN_BLOCK;
        if (cap < padded)
            cap = padded;
        b = block_new(a, cap);
        if (!b)
            return NULL;
        if (a->current) {
            b->next = a->current->next;
            a->current->next = b;
        } else {
            a->first = b;
        }
    }
    a->current = b;
    void *p = block_base(b) + b->used;
    b->used += padded;
    a->used += padded;
    if (a->used > a->high_water)
        a->high_water = a->used;
    return p;
}

/*
** One block of the high-water size replaces a chain, so the next identical recording
** is a single bump sequence with no allocation. If that block cannot be had, the old
** chain is kept as it is: still correct, only not consolidated.
*/
void adi_arena_reset(adi_arena *a)
{
    if (a->first && a->first->next && a->first->capacity < a->high_water) {
        arena_block *big = block_new(a, a->high_water);
        if (big) {
            for (arena_block *b = a->first, *next; b; b = next) {
                next = b->next;
                ad_free(b);
            }
            a->first = big;
        }
    }
    for (arena_block *b = a->first; b; b = b->next)
        b->used = 0;
    a->current = a->first;
    a->used = 0;
}

void adi_arena_release(adi_arena *a)
{
    for (arena_block *b = a->first, *next; b; b = next) {
        next = b->next;
        ad_free(b);
    }
    adi_arena_init(a);
}
