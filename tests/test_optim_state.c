/*
** test_optim_state.c: reading and restoring optimiser state (ad_optim_state,
** ad_optim_get_steps, ad_optim_set_steps, ad_optim_get_config, ad_optim_params), the
** accessors checkpoints are built on. The test of sufficiency: state and step counts
** copied through them into a second optimiser make its next step bit-identical.
*/
#include <criterion/criterion.h>
#include <string.h>

#include "support.h"
#include "tape_model.h"

static void step(model *m, ad_optim *o)
{
    ad_tape_reset(m->t);
    handles h = model_record(m);
    cr_assert_eq(ad_backward(m->t, h.loss, m->ps, m->gs), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_optim_step(o, m->gs), AD_OK, "%s", ad_last_error());
}

/* Model b takes a's parameters and, when `with_steps`, a's Adam state and counts. */
static void transplant(model *a, ad_optim *oa, model *b, ad_optim *ob, int with_steps)
{
    for (int i = 0; i < ad_params_count(a->ps); i++) {
        cr_assert_eq(ad_tensor_copy_from(ad_params_at(b->ps, i), ad_params_at(a->ps, i)),
                     AD_OK);
        for (int k = 0; k < ad_optim_state_count(oa); k++) {
            ad_tensor va, vb;
            cr_assert_eq(ad_optim_state(oa, i, k, &va), AD_OK);
            cr_assert_eq(ad_optim_state(ob, i, k, &vb), AD_OK);
            memcpy(vb.data, va.data, (size_t)va.size * ad_dtype_size(va.dtype));
        }
        int64_t steps;
        cr_assert_eq(ad_optim_get_steps(oa, i, &steps), AD_OK);
        if (with_steps)
            cr_assert_eq(ad_optim_set_steps(ob, i, steps), AD_OK);
    }
}

static int same_weights(const model *a, const model *b)
{
    return !memcmp(a->weights->data, b->weights->data, OUT * IN * sizeof(float));
}

Test(optim_state, copied_state_and_step_counts_make_the_next_step_bit_identical)
{
    model a, b;
    model_open(&a);
    model_open(&b);
    ad_optim *oa, *ob;
    ad_optim_config c = ad_optim_defaults(AD_OPT_ADAM);
    c.lr = 0.05;
    cr_assert_eq(ad_optim_new(a.ps, &c, &oa), AD_OK);
    cr_assert_eq(ad_optim_new(b.ps, &c, &ob), AD_OK);
    for (int s = 0; s < 3; s++)
        step(&a, oa);
    transplant(&a, oa, &b, ob, 1);
    step(&a, oa);
    step(&b, ob);
    cr_assert(same_weights(&a, &b), "the transplanted optimiser stepped differently");
    /* the control: without the step counts Adam's bias correction differs */
    transplant(&a, oa, &b, ob, 0);
    cr_assert_eq(ad_optim_set_steps(ob, 0, 0), AD_OK);
    step(&a, oa);
    step(&b, ob);
    cr_assert(!same_weights(&a, &b), "the step count made no difference");
    ad_optim_free(oa);
    ad_optim_free(ob);
    model_close(&a);
    model_close(&b);
}

Test(optim_state, views_have_the_parameters_shape_and_counts_follow_the_kind)
{
    model m;
    model_open(&m);
    static const int buffers[] = {0, 1, 1, 2, 2, 1};
    for (int kind = AD_OPT_DESCENT; kind <= AD_OPT_RMSPROP; kind++) {
        ad_optim *o;
        ad_optim_config c = ad_optim_defaults((ad_optim_kind)kind);
        cr_assert_eq(ad_optim_new(m.ps, &c, &o), AD_OK);
        cr_assert_eq(ad_optim_state_count(o), buffers[kind], "kind %d", kind);
        cr_assert_eq(ad_optim_params(o), m.ps);
        ad_optim_config got;
        cr_assert_eq(ad_optim_get_config(o, &got), AD_OK);
        cr_assert_eq(got.kind, (ad_optim_kind)kind);
        cr_assert_eq(got.lr, 0.01, "the default is kept");
        for (int k = 0; k < buffers[kind]; k++) {
            ad_tensor v;
            cr_assert_eq(ad_optim_state(o, 0, k, &v), AD_OK);
            cr_assert_eq(v.dtype, AD_F32);
            cr_assert_eq(v.ndim, 2);
            cr_assert(v.shape[0] == OUT && v.shape[1] == IN && v.size == OUT * IN);
            for (int i = 0; i < OUT * IN; i++)
                cr_assert_eq(((float *)v.data)[i], 0.0f, "fresh state is zero");
        }
        ad_optim_free(o);
    }
    cr_assert_eq(ad_optim_state_count(NULL), -1);
    cr_assert_null(ad_optim_params(NULL));
    model_close(&m);
}

/* RMSprop keeps the square average, then the momentum buffer if momentum > 0, then the
** gradient average if centered: three distinct zeroed buffers at most. */
Test(optim_state, rmsprop_buffers_follow_momentum_and_centered)
{
    model m;
    model_open(&m);
    for (int mu = 0; mu < 2; mu++)
        for (int centered = 0; centered < 2; centered++) {
            ad_optim *o;
            ad_optim_config c = ad_optim_defaults(AD_OPT_RMSPROP);
            c.momentum = mu ? 0.5 : 0.0;
            c.centered = centered;
            cr_assert_eq(ad_optim_new(m.ps, &c, &o), AD_OK, "%s", ad_last_error());
            int count = ad_optim_state_count(o);
            cr_assert_eq(count, 1 + mu + centered);
            void *seen[3] = {0};
            for (int k = 0; k < count; k++) {
                ad_tensor v;
                cr_assert_eq(ad_optim_state(o, 0, k, &v), AD_OK);
                cr_assert(v.size == OUT * IN);
                for (int j = 0; j < k; j++)
                    cr_assert_neq(seen[j], v.data, "buffers %d and %d overlap", j, k);
                seen[k] = v.data;
            }
            ad_tensor v;
            cr_expect_eq(ad_optim_state(o, 0, count, &v), AD_ERR_INVALID);
            ad_optim_free(o);
        }
    model_close(&m);
}

Test(optim_state, every_bad_argument_is_refused_and_changes_nothing)
{
    model m;
    model_open(&m);
    ad_optim *o;
    ad_optim_config mom = ad_optim_defaults(AD_OPT_MOMENTUM);
    cr_assert_eq(ad_optim_new(m.ps, &mom, &o), AD_OK);
    ad_tensor v = {.ndim = -5};
    int64_t steps = -9;
    ad_optim_config c;
    cr_assert_eq(ad_optim_state(NULL, 0, 0, &v), AD_ERR_NULL);
    cr_assert_eq(ad_optim_state(o, 0, 0, NULL), AD_ERR_NULL);
    cr_assert_eq(ad_optim_state(o, 3, 0, &v), AD_ERR_INVALID);
    cr_assert(strstr(ad_last_error(), "index 3"), "%s", ad_last_error());
    cr_assert_eq(ad_optim_state(o, -1, 0, &v), AD_ERR_INVALID);
    cr_assert_eq(ad_optim_state(o, 0, 1, &v), AD_ERR_INVALID, "momentum has one buffer");
    cr_assert_eq(v.ndim, -5, "the view is untouched on error");
    cr_assert_eq(ad_optim_get_steps(o, 0, NULL), AD_ERR_NULL);
    cr_assert_eq(ad_optim_get_steps(NULL, 0, &steps), AD_ERR_NULL);
    cr_assert_eq(ad_optim_get_steps(o, 3, &steps), AD_ERR_INVALID);
    cr_assert_eq(steps, -9);
    cr_assert_eq(ad_optim_set_steps(o, 0, -1), AD_ERR_INVALID);
    cr_assert_eq(ad_optim_set_steps(o, 7, 1), AD_ERR_INVALID);
    cr_assert_eq(ad_optim_set_steps(NULL, 0, 1), AD_ERR_NULL);
    cr_assert_eq(ad_optim_get_steps(o, 0, &steps), AD_OK);
    cr_assert_eq(steps, 0);
    cr_assert_eq(ad_optim_get_config(o, NULL), AD_ERR_NULL);
    cr_assert_eq(ad_optim_get_config(NULL, &c), AD_ERR_NULL);
    ad_optim_free(o);
    model_close(&m);
}

Test(optim_state, parameters_added_later_get_state_on_demand_or_fail_cleanly)
{
    model m;
    model_open(&m);
    ad_optim *o;
    ad_optim_config adam = ad_optim_defaults(AD_OPT_ADAM);
    cr_assert_eq(ad_optim_new(m.ps, &adam, &o), AD_OK);
    ad_tensor *extra = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    int index;
    cr_assert_eq(ad_params_add(m.ps, extra, &index), AD_OK);
    int64_t steps = -1;
    cr_assert_eq(ad_optim_get_steps(o, index, &steps), AD_OK);
    cr_assert_eq(steps, 0, "no state yet reads as no steps");
    ts_alloc_install();
    ad_tensor v = {.ndim = -5};
    ts_alloc_fail_at(1);
    cr_assert_eq(ad_optim_state(o, index, 1, &v), AD_ERR_NOMEM);
    ts_alloc_fail_at(1);
    cr_assert_eq(ad_optim_set_steps(o, index, 4), AD_ERR_NOMEM);
    ts_alloc_fail_at(0);
    cr_assert_eq(v.ndim, -5);
    cr_assert_eq(ad_optim_get_steps(o, index, &steps), AD_OK);
    cr_assert_eq(steps, 0, "a failed set changes nothing");
    cr_assert_eq(ad_optim_state(o, index, 1, &v), AD_OK);
    cr_assert(v.dtype == AD_F64 && v.size == 3 && ((double *)v.data)[2] == 0.0);
    cr_assert_eq(ad_optim_set_steps(o, index, 4), AD_OK);
    cr_assert_eq(ad_optim_get_steps(o, index, &steps), AD_OK);
    cr_assert_eq(steps, 4);
    ad_optim_free(o);
    ts_alloc_uninstall();
    ad_tensor_free(extra);
    model_close(&m);
}
