/*
** test_constrain.c: ad_weight_norms_record and ad_constrain_weights (BioTorch's
** constrain_weights) against norms and rescaled weights derived by hand, in float32
** and float64; a zero weight left alone; the norms surviving a checkpoint as a buffer;
** every error, each leaving weights and norms as they were.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ad_checkpoint.h"
#include "support.h"

static ad_tensor *vec(ad_dtype dtype, int64_t n, const double *v)
{
    ad_tensor *t = ts_tensor(dtype, 1, TS_SHAPE(n));
    for (int64_t i = 0; i < n; i++)
        ts_set(t, i, v[i]);
    return t;
}

/* w1 = (3, 4): norm 5; w2 = [[1, 2], [2, 4]]: norm 5 too; after doubling w1 and
** negating and tripling w2 the constraint gives back (3, 4) and -[[1, 2], [2, 4]]. */
Test(constrain, weights_return_to_their_initial_frobenius_norms)
{
    for (int d = 0; d < 2; d++) {
        ad_dtype dtype = d ? AD_F64 : AD_F32;
        ad_tensor *w1 = vec(dtype, 2, (const double[]){3, 4});
        ad_tensor *w2 = ts_tensor(dtype, 2, TS_SHAPE(2, 2));
        const double w2v[4] = {1, 2, 2, 4};
        for (int i = 0; i < 4; i++)
            ts_set(w2, i, w2v[i]);
        ad_tensor *ws[2] = {w1, w2}, *norms = ts_tensor(AD_F64, 1, TS_SHAPE(2));
        uint64_t v0 = norms->version;
        cr_assert_eq(ad_weight_norms_record(ws, 2, norms), AD_OK, "%s", ad_last_error());
        cr_expect_eq(ts_get(norms, 0), 5.0);
        cr_expect_eq(ts_get(norms, 1), 5.0);
        cr_expect_neq(norms->version, v0, "norms' version moves");
        ts_set(w1, 0, 6), ts_set(w1, 1, 8);
        for (int i = 0; i < 4; i++)
            ts_set(w2, i, -3 * w2v[i]);
        uint64_t v1 = w1->version;
        cr_assert_eq(ad_constrain_weights(ws, 2, norms), AD_OK, "%s", ad_last_error());
        cr_expect_eq(ts_get(w1, 0), 3.0);
        cr_expect_eq(ts_get(w1, 1), 4.0);
        for (int i = 0; i < 4; i++)
            cr_expect_eq(ts_get(w2, i), -w2v[i], "%s w2[%d]", d ? "f64" : "f32", i);
        cr_expect_neq(w1->version, v1, "the weight's version moves");
        ad_tensor_free(w1);
        ad_tensor_free(w2);
        ad_tensor_free(norms);
    }
}

/* A direction that is not a Pythagorean triple: the result has norm n0 to rounding. */
Test(constrain, rescaled_norm_matches_to_rounding)
{
    ad_tensor *w = vec(AD_F64, 3, (const double[]){0.1, -0.7, 0.3});
    ad_tensor *ws[1] = {w}, *norms = vec(AD_F64, 1, (const double[]){2.5});
    cr_assert_eq(ad_constrain_weights(ws, 1, norms), AD_OK);
    double s = 0;
    for (int i = 0; i < 3; i++)
        s += ts_get(w, i) * ts_get(w, i);
    cr_expect(fabs(sqrt(s) - 2.5) < 1e-15, "norm %.17g", sqrt(s));
    double f = 2.5 / sqrt(0.01 + 0.49 + 0.09);
    cr_expect(fabs(ts_get(w, 1) + 0.7 * f) < 1e-15);
    ad_tensor_free(w);
    ad_tensor_free(norms);
}

Test(constrain, zero_weight_is_left_alone_and_n_zero_is_a_no_op)
{
    ad_tensor *w = vec(AD_F32, 2, (const double[]){0, 0});
    ad_tensor *ws[1] = {w}, *norms = vec(AD_F64, 1, (const double[]){3});
    uint64_t v = w->version;
    cr_assert_eq(ad_constrain_weights(ws, 1, norms), AD_OK);
    cr_expect(ts_get(w, 0) == 0 && ts_get(w, 1) == 0);
    cr_expect_eq(w->version, v, "nothing written");
    ad_tensor *none = ts_tensor(AD_F64, 1, TS_SHAPE(0));
    cr_expect_eq(ad_constrain_weights(ws, 0, none), AD_OK);
    cr_expect_eq(ad_weight_norms_record(ws, 0, none), AD_OK);
    ad_tensor_free(none);
    ad_tensor_free(w);
    ad_tensor_free(norms);
}

/* Saved as a checkpoint buffer, the norms come back bit for bit. */
Test(constrain, norms_round_trip_through_a_checkpoint_buffer)
{
    char dir[64], path[96];
    ts_tmpdir_make(dir, sizeof dir, "constrain");
    snprintf(path, sizeof path, "%s/norms.safetensors", dir);
    ad_tensor *w = vec(AD_F32, 3, (const double[]){0.1, -0.7, 0.3});
    ad_tensor *ws[1] = {w}, *norms = ts_tensor(AD_F64, 1, TS_SHAPE(1));
    ad_tensor *back = ts_tensor(AD_F64, 1, TS_SHAPE(1));
    cr_assert_eq(ad_weight_norms_record(ws, 1, norms), AD_OK);
    ad_params *ps;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, w, NULL), AD_OK);
    const char *names[1] = {"fc1.weight"};
    ad_checkpoint_buffer b = {"constrain.norms", norms};
    ad_checkpoint_extras x = {.buffers = &b, .n_buffers = 1};
    cr_assert_eq(ad_checkpoint_save(path, ps, names, &x), AD_OK, "%s", ad_last_error());
    b.tensor = back;
    cr_assert_eq(ad_checkpoint_load(path, ps, names, &x), AD_OK, "%s", ad_last_error());
    cr_expect(!memcmp(back->data, norms->data, sizeof(double)));
    ad_params_free(ps);
    ad_tensor_free(w);
    ad_tensor_free(norms);
    ad_tensor_free(back);
    ts_tmpdir_remove(dir);
}

Test(constrain, every_error_is_named_and_changes_nothing)
{
    ad_tensor *w = vec(AD_F32, 2, (const double[]){6, 8});
    ad_tensor *labels = ts_tensor(AD_I32, 1, TS_SHAPE(2));
    ad_tensor *n1 = vec(AD_F64, 1, (const double[]){5});
    ad_tensor *n2 = vec(AD_F64, 2, (const double[]){5, 5});
    ad_tensor *f32 = vec(AD_F32, 1, (const double[]){5});
    ad_tensor *bad = vec(AD_F64, 2, (const double[]){5, NAN});
    ad_tensor *neg = vec(AD_F64, 1, (const double[]){-1});
    ad_tensor *one[1] = {w}, *two[2] = {w, NULL}, *ints[1] = {labels}, *pair[2] = {w, w};
    const struct {
        ad_tensor *const *ws;
        int n;
        const ad_tensor *norms;
        ad_status code;
        const char *needle;
        int record; /* also for ad_weight_norms_record */
    } cases[] = {
        {NULL, 1, n1, AD_ERR_NULL, "weights is NULL", 1},
        {one, 1, NULL, AD_ERR_NULL, "norms is NULL", 1},
        {two, 2, n2, AD_ERR_NULL, "weights[1] is NULL", 1},
        {one, -1, n1, AD_ERR_INVALID, "n = -1", 1},
        {one, 1, f32, AD_ERR_DTYPE, "must be float64", 1},
        {one, 1, n2, AD_ERR_SHAPE, "rank 1 of 1 elements", 1},
        {ints, 1, n1, AD_ERR_DTYPE, "weights[0]", 1},
        {pair, 2, bad, AD_ERR_INVALID, "norms[1] = nan", 0},
        {one, 1, neg, AD_ERR_INVALID, "norms[0] = -1", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int r = 0; r <= cases[i].record; r++) {
            double before = ts_get(cases[i].norms ? cases[i].norms : n1, 0);
            ad_tensor *const *ws = cases[i].ws;
            ad_status rc = r ? ad_weight_norms_record(ws, cases[i].n,
                                                      (ad_tensor *)cases[i].norms)
                             : ad_constrain_weights(ws, cases[i].n, cases[i].norms);
            cr_expect_eq(rc, cases[i].code, "case %zu (%s)", i, r ? "record" : "constrain");
            cr_expect(strstr(ad_last_error(), cases[i].needle), "case %zu: '%s' lacks '%s'",
                      i, ad_last_error(), cases[i].needle);
            cr_expect(ts_get(w, 0) == 6 && ts_get(w, 1) == 8, "case %zu moved w", i);
            cr_expect_eq(ts_get(cases[i].norms ? cases[i].norms : n1, 0), before);
        }
    ad_tensor *ts[] = {w, labels, n1, n2, f32, bad, neg};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        ad_tensor_free(ts[i]);
}
