/*
** test_optim_defaults.c: an ad_optim_config is read as given (0 means 0) and its
** defaults come from ad_optim_defaults. The expected steps are computed here by hand
** from the update equations (plain SGD, Adam with beta1 = 0), not by the library.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

enum { N = 4 };
static const double w0[N] = {0.5, -1.25, 2.0, 0.75};
static const double c0[N] = {0.1, 0.2, -0.4, 1.0};

/* w (f64, N) trained on mse(w, c) = mean((w - c)^2), whose gradient is 2 (w - c) / N. */
typedef struct fit {
    ad_tensor *w, *c;
    ad_params *ps;
    ad_grads *gs;
    ad_tape *tape;
} fit;

static ad_var fit_loss(ad_tape *t, void *u)
{
    fit *f = u;
    return ad_mse(t, ad_use(t, f->w), ad_use(t, f->c));
}

static void fit_open(fit *f)
{
    f->w = ts_tensor(AD_F64, 1, TS_SHAPE(N));
    f->c = ts_tensor(AD_F64, 1, TS_SHAPE(N));
    for (int i = 0; i < N; i++) {
        ts_set(f->w, i, w0[i]);
        ts_set(f->c, i, c0[i]);
    }
    cr_assert_eq(ad_params_new(&f->ps), AD_OK);
    cr_assert_eq(ad_params_add(f->ps, f->w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(f->ps, &f->gs), AD_OK);
    cr_assert_eq(ad_tape_new(&f->tape), AD_OK);
}

static void fit_close(fit *f)
{
    ad_tape_free(f->tape);
    ad_grads_free(f->gs);
    ad_params_free(f->ps);
    ad_tensor_free(f->w);
    ad_tensor_free(f->c);
}

static void fit_step(fit *f, ad_optim *o)
{
    cr_assert_eq(ad_gradient(f->tape, f->ps, fit_loss, f, f->gs, NULL), AD_OK, "%s",
                 ad_last_error());
    cr_assert_eq(ad_optim_step(o, f->gs), AD_OK, "%s", ad_last_error());
}

static ad_optim *optim_new(const fit *f, ad_optim_config c)
{
    ad_optim *o = NULL;
    cr_assert_eq(ad_optim_new(f->ps, &c, &o), AD_OK, "%s", ad_last_error());
    return o;
}

static double max_diff(const ad_tensor *w, const double *want)
{
    double d = 0.0;
    for (int i = 0; i < N; i++)
        d = fmax(d, fabs(ts_get(w, i) - want[i]));
    return d;
}

/* Three steps of plain SGD by hand: w -= lr 2 (w - c) / N. */
static void sgd_by_hand(double lr, int steps, double w[N])
{
    memcpy(w, w0, sizeof w0);
    for (int s = 0; s < steps; s++)
        for (int i = 0; i < N; i++)
            w[i] -= lr * 2.0 * (w[i] - c0[i]) / N;
}

Test(optim_defaults, momentum_zero_gives_plain_sgd_steps)
{
    const ad_optim_kind kinds[2] = {AD_OPT_MOMENTUM, AD_OPT_NESTEROV};
    for (int k = 0; k < 2; k++) {
        fit f;
        fit_open(&f);
        ad_optim *o = optim_new(&f, (ad_optim_config){.kind = kinds[k], .lr = 0.3});
        double want[N];
        for (int s = 1; s <= 3; s++) {
            fit_step(&f, o);
            sgd_by_hand(0.3, s, want);
            cr_expect_lt(max_diff(f.w, want), 1e-14, "kind %d, step %d: not plain SGD",
                         kinds[k], s);
        }
        /* the control: with the old implicit 0.9 the third step is far from SGD's */
        double sgd3[N];
        sgd_by_hand(0.3, 3, sgd3);
        fit g;
        fit_open(&g);
        ad_optim_config c = ad_optim_defaults(kinds[k]);
        c.lr = 0.3;
        ad_optim *o9 = optim_new(&g, c);
        for (int s = 0; s < 3; s++)
            fit_step(&g, o9);
        cr_expect_gt(max_diff(g.w, sgd3), 1e-3, "momentum 0.9 looks like SGD here");
        ad_optim_free(o9);
        fit_close(&g);
        ad_optim_free(o);
        fit_close(&f);
    }
}

/* Adam with beta1 = 0: m = g, so m_hat = g (1 - 0^t = 1); v = b2 v + (1 - b2) g^2,
** v_hat = v / (1 - b2^t); w -= lr m_hat / (sqrt(v_hat) + eps). */
Test(optim_defaults, beta1_zero_is_honoured_by_adam)
{
    const double lr = 0.05, b2 = 0.99, eps = 1e-8;
    fit f;
    fit_open(&f);
    ad_optim_config c = ad_optim_defaults(AD_OPT_ADAM);
    c.lr = lr;
    c.beta1 = 0.0;
    c.beta2 = b2;
    ad_optim *o = optim_new(&f, c);
    double w[N], v[N] = {0}, w_b09[N], m9[N] = {0}, v9[N] = {0};
    memcpy(w, w0, sizeof w0);
    memcpy(w_b09, w0, sizeof w0);
    for (int s = 1; s <= 3; s++) {
        fit_step(&f, o);
        for (int i = 0; i < N; i++) {
            double g = 2.0 * (w[i] - c0[i]) / N;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            w[i] -= lr * g / (sqrt(v[i] / (1 - pow(b2, s))) + eps);
            double g9 = 2.0 * (w_b09[i] - c0[i]) / N; /* beta1 = 0.9, the control */
            m9[i] = 0.9 * m9[i] + 0.1 * g9;
            v9[i] = b2 * v9[i] + (1 - b2) * g9 * g9;
            w_b09[i] -= lr / (1 - pow(0.9, s)) * m9[i] / (sqrt(v9[i] / (1 - pow(b2, s))) + eps);
        }
        cr_expect_lt(max_diff(f.w, w), 1e-14, "step %d is not Adam with beta1 = 0", s);
    }
    cr_expect_gt(max_diff(f.w, w_b09), 1e-4, "beta1 = 0 and 0.9 agree: a weak problem");
    ad_optim_config got;
    cr_assert_eq(ad_optim_get_config(o, &got), AD_OK);
    cr_expect_eq(got.beta1, 0.0, "beta1 = 0 was replaced by %g", got.beta1);
    ad_optim_free(o);
    fit_close(&f);
}

Test(optim_defaults, defaults_are_the_documented_values_for_every_kind)
{
    for (int k = AD_OPT_DESCENT; k <= AD_OPT_RMSPROP; k++) {
        ad_optim_config c = ad_optim_defaults((ad_optim_kind)k);
        cr_expect_eq(c.kind, (ad_optim_kind)k);
        cr_expect_eq(c.lr, 0.01, "kind %d", k);
        cr_expect_eq(c.momentum, k == AD_OPT_RMSPROP ? 0.0 : 0.9, "kind %d", k);
        cr_expect_eq(c.alpha, 0.99, "kind %d", k);
        cr_expect_eq(c.centered, 0, "kind %d", k);
        cr_expect_eq(c.beta1, 0.9, "kind %d", k);
        cr_expect_eq(c.beta2, 0.999, "kind %d", k);
        cr_expect_eq(c.eps, 1e-8, "kind %d", k);
        cr_expect_eq(c.weight_decay, 0.0, "kind %d", k);
        cr_expect_eq(c.clip_norm, 0.0, "kind %d", k);
        /* they are valid, and what the optimiser then reports */
        fit f;
        fit_open(&f);
        ad_optim *o = optim_new(&f, c);
        ad_optim_config got;
        cr_assert_eq(ad_optim_get_config(o, &got), AD_OK);
        cr_expect(!memcmp(&got, &c, sizeof c), "kind %d: the config changed", k);
        ad_optim_free(o);
        fit_close(&f);
    }
    cr_expect_eq(ad_optim_defaults((ad_optim_kind)42).kind, (ad_optim_kind)42,
                 "an unknown kind is kept for ad_optim_new to refuse");
}

Test(optim_defaults, explicit_zeros_are_kept_and_eps_zero_is_invalid_for_adam)
{
    fit f;
    fit_open(&f);
    const ad_optim_kind adams[2] = {AD_OPT_ADAM, AD_OPT_ADAMW};
    for (int k = 0; k < 2; k++) {
        ad_optim *const sentinel = (ad_optim *)&f, *o = sentinel;
        ad_optim_config c = ad_optim_defaults(adams[k]);
        c.eps = 0.0;
        cr_expect_eq(ad_optim_new(f.ps, &c, &o), AD_ERR_INVALID, "kind %d, eps 0", adams[k]);
        cr_expect(strstr(ad_last_error(), ": eps = 0 "), "%s", ad_last_error());
        cr_expect_eq(o, sentinel, "*out written on failure");
        /* all zeros is no longer a default Adam: eps is refused, loudly */
        cr_expect_eq(ad_optim_new(f.ps, &(ad_optim_config){.kind = adams[k]}, &o),
                     AD_ERR_INVALID);
    }
    /* kinds that never divide by eps take 0; every other zero is kept as given */
    ad_optim_config zeros = {.kind = AD_OPT_MOMENTUM};
    ad_optim *o = optim_new(&f, zeros);
    ad_optim_config got;
    cr_assert_eq(ad_optim_get_config(o, &got), AD_OK);
    cr_expect(!memcmp(&got, &zeros, sizeof got), "lr %g, momentum %g, beta1 %g, beta2 %g, "
              "eps %g: a zero became a default", got.lr, got.momentum, got.beta1, got.beta2,
              got.eps);
    /* lr 0 moves nothing */
    fit_step(&f, o);
    cr_expect_eq(max_diff(f.w, w0), 0.0, "lr 0 moved w");
    ad_optim_free(o);
    fit_close(&f);
}

/* A checkpoint carries the optimiser's kind, lr, state and step counts; an lr of 0 and
** a momentum of 0 come back as 0, and the resumed step is bitwise the original's. */
Test(optim_defaults, checkpoint_round_trips_a_config_with_zeros)
{
    const double lrs[2] = {0.25, 0.0};
    for (int k = 0; k < 2; k++) {
        char dir[64], path[96];
        ts_tmpdir_make(dir, sizeof dir, "optim-defaults");
        snprintf(path, sizeof path, "%s/run.safetensors", dir);
        fit a, b;
        fit_open(&a);
        fit_open(&b);
        ad_optim *oa = optim_new(&a, (ad_optim_config){.kind = AD_OPT_MOMENTUM, .lr = lrs[k]});
        ad_optim *ob = optim_new(&b, (ad_optim_config){.kind = AD_OPT_MOMENTUM, .lr = 0.5});
        fit_step(&a, oa);
        fit_step(&a, oa);
        const char *const names[] = {"w"};
        ad_checkpoint_extras xa = {.optim = oa}, xb = {.optim = ob};
        cr_assert_eq(ad_checkpoint_save(path, a.ps, names, &xa), AD_OK, "%s", ad_last_error());
        cr_assert_eq(ad_checkpoint_load(path, b.ps, names, &xb), AD_OK, "%s", ad_last_error());
        ad_optim_config ca, cb;
        cr_assert_eq(ad_optim_get_config(oa, &ca), AD_OK);
        cr_assert_eq(ad_optim_get_config(ob, &cb), AD_OK);
        cr_expect(!memcmp(&ca, &cb, sizeof ca), "lr %g: loaded lr %g, momentum %g",
                  lrs[k], cb.lr, cb.momentum);
        fit_step(&a, oa);
        fit_step(&b, ob);
        cr_expect(!memcmp(a.w->data, b.w->data, N * sizeof(double)),
                  "lr %g: the resumed step differs", lrs[k]);
        ad_optim_free(oa);
        ad_optim_free(ob);
        fit_close(&a);
        fit_close(&b);
        ts_tmpdir_remove(dir);
    }
}
