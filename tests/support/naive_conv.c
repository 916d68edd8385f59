/*
** naive_conv.c: see naive_conv.h.
*/
#include "naive_conv.h"

#include <criterion/criterion.h>
#include <stdlib.h>

#include "support.h"

int64_t ts_conv_grid_h(const ts_conv_geo *g)
{
    return (g->h + 2 * g->at.pad_h - g->at.dilation_h * (g->kh - 1) - 1) / g->at.stride_h + 1;
}

int64_t ts_conv_grid_w(const ts_conv_geo *g)
{
    return (g->w + 2 * g->at.pad_w - g->at.dilation_w * (g->kw - 1) - 1) / g->at.stride_w + 1;
}

void ts_conv_loops(const ts_conv_geo *g, const double *x, const double *w, const double *gy,
                   double *y, double *dx, double *dw)
{
    int64_t ho = ts_conv_grid_h(g), wo = ts_conv_grid_w(g), cg = g->c / g->at.groups;
    int64_t cog = g->co / g->at.groups;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t o = 0; o < g->co; o++)
            for (int64_t p = 0; p < ho; p++)
                for (int64_t q = 0; q < wo; q++) {
                    int64_t yi = ((n * g->co + o) * ho + p) * wo + q;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                int64_t ih = p * g->at.stride_h - g->at.pad_h + i * g->at.dilation_h;
                                int64_t iw = q * g->at.stride_w - g->at.pad_w + j * g->at.dilation_w;
                                if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w)
                                    continue;
                                int64_t ci = (o / cog) * cg + c;
                                int64_t wi = ((o * cg + c) * g->kh + i) * g->kw + j;
                                int64_t xi = ((n * g->c + ci) * g->h + ih) * g->w + iw;
                                if (y)
                                    y[yi] += x[xi] * w[wi];
                                if (dx)
                                    dx[xi] += gy[yi] * w[wi];
                                if (dw)
                                    dw[wi] += gy[yi] * x[xi];
                            }
                }
}

double *ts_naive_dfa_conv_dx(const ts_conv_geo *g, const double *e, const double *b)
{
    int64_t P = ts_conv_grid_h(g) * ts_conv_grid_w(g);
    double *big = calloc((size_t)(g->n * g->co * P) + 1, sizeof *big);
    double *dx = calloc((size_t)(g->n * g->c * g->h * g->w) + 1, sizeof *dx);
    cr_assert(big && dx, "out of memory");
    for (int64_t r = 0; r < g->n * g->co; r++)
        for (int64_t q = 0; q < P; q++)
            big[r * P + q] = e[r];
    ts_conv_loops(g, NULL, b, big, NULL, dx, NULL);
    free(big);
    return dx;
}

double *ts_doubles(const ad_tensor *t)
{
    double *d = calloc((size_t)t->size + 1, sizeof *d);
    cr_assert_not_null(d, "out of memory");
    for (int64_t k = 0; k < t->size; k++)
        d[k] = ts_get(t, k);
    return d;
}
