/*
** saving_nets.c: see saving_nets.h.
*/
#include "saving_nets.h"

#include <criterion/criterion.h>
#include <string.h>

#include "support.h"

ad_tensor *bag_add(bag *g, ad_dtype dt, int64_t rows, int64_t cols, double r, int param)
{
    if (!g->ps)
        cr_assert_eq(ad_params_new(&g->ps), AD_OK);
    ad_tensor *t = g->all[g->n++] = ts_tensor(r ? dt : AD_I32, cols && r ? 2 : 1,
                                              TS_SHAPE(rows, cols));
    for (int64_t i = 0; i < t->size; i++)
        ts_set(t, i, r ? ts_uniform(&g->seed, -r, r) : (double)(ts_next(&g->seed) % cols));
    if (param)
        cr_assert_eq(ad_params_add(g->ps, t, NULL), AD_OK);
    return t;
}

void bag_close(bag *g)
{
    while (g->n)
        ad_tensor_free(g->all[--g->n]);
    ad_params_free(g->ps);
}

void net_open(net *s, ad_dtype dt, uint64_t seed)
{
    *s = (net){.g.seed = seed};
    s->x = bag_add(&s->g, dt, BATCH, K, 1, 0);
    s->w1 = bag_add(&s->g, dt, M, K, 0.6, 1);
    s->w1b = bag_add(&s->g, dt, M, K, 0.6, 1);
    s->w2 = bag_add(&s->g, dt, M, M, 0.6, 1);
    s->w3 = bag_add(&s->g, dt, M, M, 0.6, 1);
    s->b = bag_add(&s->g, dt, M, 0, 0.6, 1);
    s->fbp = bag_add(&s->g, dt, M, M, 0.6, 1); /* KP's B, trained */
    s->fb = bag_add(&s->g, dt, M, M, 0.6, 0);
    s->target = bag_add(&s->g, dt, BATCH, M, 1, 0);
    s->labels = bag_add(&s->g, dt, BATCH, M, 0, 0);
}

ad_var net_tail(ad_tape *t, net *s, ad_var z)
{
    return ad_mse(t, ad_tanh(t, ad_matmul(t, z, U(w2), 0, 1)), U(target));
}

run run_open(const ad_params *ps, int saving)
{
    run r = {0};
    cr_assert_eq(ad_tape_new(&r.t), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &r.gs), AD_OK);
    ad_tape_set_memory_saving(r.t, saving);
    ad_tape_set_anomaly_mode(r.t, saving);
    return r;
}

run net_sweep(const ad_params *ps, ad_loss_fn record, void *user, int saving, const char *what)
{
    run r = run_open(ps, saving);
    r.loss = record(r.t, user);
    cr_assert_eq(ad_backward(r.t, r.loss, ps, r.gs), AD_OK, "%s (saving %d): %s", what,
                 saving, ad_last_error());
    return r;
}

void run_drop(run *r)
{
    ad_grads_free(r->gs);
    ad_tape_free(r->t);
}

void same_grads(const ad_params *ps, const run *a, const run *b, const char *what)
{
    for (int p = 0; p < ad_params_count(ps); p++) {
        const ad_tensor *ga = ad_grads_at(a->gs, p), *gb = ad_grads_at(b->gs, p);
        cr_assert((ga == NULL) == (gb == NULL), "%s: parameter %d has a gradient in one "
                  "sweep only", what, p);
        if (ga)
            cr_assert(memcmp(ga->data, gb->data, (size_t)ga->size * ad_dtype_size(ga->dtype))
                          == 0, "%s: parameter %d's gradient differs (max |diff| %g)", what,
                      p, ts_max_abs_diff(ga, gb));
    }
}
