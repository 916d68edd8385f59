/*
** parallel.h (internal): adtape's own loops (im2col, col2im, pooling) over threads.
*/
#ifndef AD_PARALLEL_H
#define AD_PARALLEL_H

#include <stdint.h>

/* Runs fn(ctx, lo, hi) over contiguous parts of [0, n) that together cover it, one per
** thread, the caller taking the first, and returns when all are done. Each part must
** write what no other part writes, so the result is the same whatever the split. With
** one thread, fewer than 2 * grain items, or the pool busy with another caller's
** region, it is fn(ctx, 0, n) on the calling thread. */
typedef void (*adi_part_fn)(void *ctx, int64_t lo, int64_t hi);
void adi_parallel_for(int64_t n, int64_t grain, adi_part_fn fn, void *ctx);

/* fn(ctx, k, k + 1) for every k in [0, parts), on up to `parts` threads whatever
** ad_set_num_threads says: for a caller that takes over the threads OpenBLAS would
** have used (conv_blocks.c). Serial as above when the pool is busy. */
void adi_parallel_parts(int parts, adi_part_fn fn, void *ctx);

#endif /* AD_PARALLEL_H */
