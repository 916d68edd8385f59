/*
** tape_model.c: see tape_model.h.
*/
#include "tape_model.h"

#include <criterion/criterion.h>

#include "support.h"

void model_open(model *m)
{
    uint64_t seed = 7;
    m->features = ts_tensor(AD_F32, 2, TS_SHAPE(N, IN));
    m->weights = ts_tensor(AD_F32, 2, TS_SHAPE(OUT, IN));
    m->bias = ts_tensor(AD_F32, 1, TS_SHAPE(OUT));
    m->target = ts_tensor(AD_F32, 2, TS_SHAPE(N, OUT));
    m->unused = ts_tensor(AD_F32, 1, TS_SHAPE(2));
    ts_fill_uniform(m->features, &seed, -1.0, 1.0);
    ts_fill_uniform(m->weights, &seed, -0.8, 0.8);
    ts_fill_uniform(m->bias, &seed, -0.3, 0.3);
    ts_fill_uniform(m->target, &seed, -0.5, 0.5);
    ts_fill_uniform(m->unused, &seed, -1.0, 1.0);
    cr_assert_eq(ad_params_new(&m->ps), AD_OK);
    cr_assert_eq(ad_params_add(m->ps, m->weights, NULL), AD_OK);
    cr_assert_eq(ad_params_add(m->ps, m->bias, NULL), AD_OK);
    cr_assert_eq(ad_params_add(m->ps, m->unused, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(m->ps, &m->gs), AD_OK);
    cr_assert_eq(ad_tape_new(&m->t), AD_OK);
}

void model_close(model *m)
{
    ad_tape_free(m->t);
    ad_grads_free(m->gs);
    ad_params_free(m->ps);
    ad_tensor *all[5] = {m->features, m->weights, m->bias, m->target, m->unused};
    for (int i = 0; i < 5; i++)
        ad_tensor_free(all[i]);
}

handles model_record(model *m)
{
    handles v;
    v.x = ad_use(m->t, m->features);
    v.w = ad_use(m->t, m->weights);
    v.b = ad_use(m->t, m->bias);
    v.y = ad_use(m->t, m->target);
    v.z = ad_matmul(m->t, v.x, v.w, 0, 1);
    v.zb = ad_bias_add(m->t, v.z, v.b);
    v.h = ad_tanh(m->t, v.zb);
    v.loss = ad_mse(m->t, v.h, v.y);
    return v;
}
