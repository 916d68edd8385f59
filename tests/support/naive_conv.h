/*
** naive_conv.h: conv2d written as its definition reads, one loop over every index
** tuple, for the DFA conv suites (test_dfa_conv.c, test_dfa_conv_net.c): independent
** of conv.c's im2col and BLAS, so a shared mistake cannot hide.
*/
#ifndef TEST_NAIVE_CONV_H
#define TEST_NAIVE_CONV_H

#include <stdint.h>

#include "ad.h"

/* A conv of x (n x c x h x w) with a kernel co x c/groups x kh x kw under at. */
typedef struct ts_conv_geo {
    int64_t n, c, h, w, co, kh, kw;
    ad_conv2d_attrs at;
} ts_conv_geo;

/* The output grid's extents: (in + 2 pad - dil (k - 1) - 1) / stride + 1. */
int64_t ts_conv_grid_h(const ts_conv_geo *g);
int64_t ts_conv_grid_w(const ts_conv_geo *g);

/* Over every (n, o, p, q, c, i, j): y += x w (forward), dx += gy w (the transposed
** convolution of gy), dw += gy x. NULL outputs are skipped (x may then be NULL too
** when only dx is wanted). Arrays are NCHW in double, accumulated into. */
void ts_conv_loops(const ts_conv_geo *g, const double *x, const double *w, const double *gy,
                   double *y, double *dx, double *dw);

/* DFA's conv signal: dx (n x c x h x w, calloc'ed; the caller frees) =
** conv_transpose(E, B), E[n,k,p,q] = e[n,k] (e n x co) over every point of g's grid. */
double *ts_naive_dfa_conv_dx(const ts_conv_geo *g, const double *e, const double *b);

/* The tensor's elements as doubles (calloc'ed; the caller frees). */
double *ts_doubles(const ad_tensor *t);

#endif /* TEST_NAIVE_CONV_H */
