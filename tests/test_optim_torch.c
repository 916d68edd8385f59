/*
** test_optim_torch.c: optimisers against PyTorch (torch.optim on the CPU). RMSprop:
** plain, with momentum, centered, with weight decay, and all at once, for a few steps
** from the same parameter and gradients: the parameter and every state buffer after
** the last step, to 1e-12 relative in float64 and 1e-5 in float32. One run of
** tests/interop/optim_reference.py under Debian's /usr/bin/python3 draws the inputs
** and computes every reference value; this file reads them. Without that interpreter
** or its torch the test fails saying what to install; it never skips.
** Schedules: ad_lr_multistep against MultiStepLR's rate in every epoch, bit for bit
** (BioTorch's milestones 50, 75 with gamma 0.1 over 100 epochs, and an odd case).
*/
#define _POSIX_C_SOURCE 200809L /* posix_spawn, environ */
#include <criterion/criterion.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

extern char **environ;

/* Debian's interpreter, where python3-torch installs. */
#define REFERENCE_PYTHON "/usr/bin/python3"

/* float64: the same operations in the same order, so differences are a few ulps.
** float32: both compute in float32, but the order of a few products may differ. */
#define TOL_F64 1e-12
#define TOL_F32 1e-5

enum { MAX_STEPS = 8, MAX_STATE = 3 };

static void run_reference(const char *out)
{
    cr_assert_eq(access(REFERENCE_PYTHON, X_OK), 0,
                 "%s is missing: this suite compares with PyTorch and needs Debian's "
                 "python3 with python3-torch (scripts/setup.sh ADTAPE_TEST_PACKAGES)",
                 REFERENCE_PYTHON);
    char *argv[] = {REFERENCE_PYTHON, OPTIM_REFERENCE_SCRIPT, (char *)out, NULL};
    pid_t pid;
    int status, rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", argv[0], strerror(rc));
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s %s failed (its message is above): no PyTorch reference to compare with",
              REFERENCE_PYTHON, OPTIM_REFERENCE_SCRIPT);
}

static void expect_word(FILE *f, const char *word)
{
    char got[64];
    cr_assert_eq(fscanf(f, "%63s", got), 1, "the reference ends before \"%s\"", word);
    cr_assert_str_eq(got, word, "the reference has \"%s\" where \"%s\" belongs", got, word);
}

/* Reads "tensor NAME NDIM D0 ... V0 ..." into a new tensor of dtype (the values are
** float64 text; float32 inputs are rounded as torch's .float() rounds them). */
static ad_tensor *read_tensor(FILE *f, const char *name, ad_dtype dtype)
{
    expect_word(f, "tensor");
    expect_word(f, name);
    int ndim;
    int64_t shape[AD_MAX_RANK];
    cr_assert_eq(fscanf(f, "%d", &ndim), 1, "%s has no rank", name);
    cr_assert(ndim >= 1 && ndim <= AD_MAX_RANK, "%s has rank %d", name, ndim);
    for (int d = 0; d < ndim; d++) {
        long long e;
        cr_assert_eq(fscanf(f, "%lld", &e), 1, "%s has no extent %d", name, d);
        shape[d] = e;
    }
    ad_tensor *t = ts_tensor(dtype, ndim, shape);
    for (int64_t i = 0; i < t->size; i++) {
        double v;
        cr_assert_eq(fscanf(f, "%lf", &v), 1, "%s ends at element %lld", name,
                     (long long)i);
        ts_set(t, i, v);
    }
    return t;
}

/* Expects got to match torch's tensor `name` next in f to tol relative (to max(1,
** |torch|)); reports the worst element. */
static void compare(FILE *f, const char *name, const ad_tensor *got, double tol,
                    const char *what)
{
    ad_tensor *want = read_tensor(f, name, AD_F64);
    cr_assert_eq(want->size, got->size, "%s: %s has %lld elements in torch", what, name,
                 (long long)want->size);
    int64_t worst = 0;
    double worst_err = -1.0;
    for (int64_t i = 0; i < want->size; i++) {
        double w = ts_get(want, i), err = fabs(ts_get(got, i) - w) / fmax(1.0, fabs(w));
        if (!(err <= worst_err))
            worst = i, worst_err = err;
    }
    cr_expect(worst_err <= tol, "%s: %s[%lld] is %.17g in adtape, %.17g in torch "
              "(relative error %.3g)", what, name, (long long)worst, ts_get(got, worst),
              ts_get(want, worst), worst_err);
    ad_tensor_free(want);
}

typedef struct inputs {
    int steps;
    ad_tensor *p0, *g[MAX_STEPS]; /* float64 */
} inputs;

static void read_inputs(FILE *f, inputs *in)
{
    char name[16];
    expect_word(f, "adtape-optim-torch");
    expect_word(f, "inputs");
    cr_assert_eq(fscanf(f, "%d", &in->steps), 1);
    cr_assert(in->steps >= 1 && in->steps <= MAX_STEPS);
    in->p0 = read_tensor(f, "p0", AD_F64);
    for (int k = 0; k < in->steps; k++) {
        snprintf(name, sizeof name, "g%d", k + 1);
        in->g[k] = read_tensor(f, name, AD_F64);
    }
}

typedef struct fixed_grad {
    ad_tensor *p, *g;
} fixed_grad;

/* loss = sum(p * G), whose gradient is G exactly. */
static ad_var fixed_loss(ad_tape *t, void *user)
{
    fixed_grad *fg = user;
    return ad_sum(t, ad_mul(t, ad_use(t, fg->p), ad_use(t, fg->g)));
}

/* Runs the optimiser c over the inputs in dtype; returns it with *p its parameter. */
static ad_optim *run_optim(const inputs *in, const ad_optim_config *c, ad_dtype dtype,
                           ad_tensor **p, ad_params **ps)
{
    fixed_grad fg = {.p = ts_tensor(dtype, in->p0->ndim, in->p0->shape),
                     .g = ts_tensor(dtype, in->p0->ndim, in->p0->shape)};
    for (int64_t i = 0; i < in->p0->size; i++)
        ts_set(fg.p, i, ts_get(in->p0, i));
    ad_tape *t;
    ad_grads *gs;
    ad_optim *o;
    cr_assert_eq(ad_params_new(ps), AD_OK);
    cr_assert_eq(ad_params_add(*ps, fg.p, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(*ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    cr_assert_eq(ad_optim_new(*ps, c, &o), AD_OK, "%s", ad_last_error());
    for (int k = 0; k < in->steps; k++) {
        double loss;
        for (int64_t i = 0; i < fg.g->size; i++)
            ts_set(fg.g, i, ts_get(in->g[k], i));
        ad_tensor_touch(fg.g);
        cr_assert_eq(ad_gradient(t, *ps, fixed_loss, &fg, gs, &loss), AD_OK, "%s",
                     ad_last_error());
        cr_assert_eq(ad_optim_step(o, gs), AD_OK, "%s", ad_last_error());
    }
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_tensor_free(fg.g);
    *p = fg.p;
    return o;
}

/* "case NAME LR ALPHA EPS WD MOMENTUM CENTERED", then each dtype's parameter and
** state. */
static void compare_rmsprop_case(FILE *f, const inputs *in)
{
    char name[32], what[64];
    ad_optim_config c = ad_optim_defaults(AD_OPT_RMSPROP);
    expect_word(f, "case");
    cr_assert_eq(fscanf(f, "%31s %lf %lf %lf %lf %lf %d", name, &c.lr, &c.alpha, &c.eps,
                        &c.weight_decay, &c.momentum, &c.centered), 7);
    static const char *const dtypes[2] = {"F64", "F32"};
    static const char *const state[MAX_STATE] = {"square_avg", "momentum_buffer",
                                                 "grad_avg"};
    for (int d = 0; d < 2; d++) {
        ad_dtype dtype = d == 0 ? AD_F64 : AD_F32;
        double tol = d == 0 ? TOL_F64 : TOL_F32;
        ad_tensor *p;
        ad_params *ps;
        expect_word(f, "dtype");
        expect_word(f, dtypes[d]);
        ad_optim *o = run_optim(in, &c, dtype, &p, &ps);
        snprintf(what, sizeof what, "RMSprop %s %s", name, dtypes[d]);
        compare(f, "p", p, tol, what);
        int count = ad_optim_state_count(o);
        cr_assert_eq(count, 1 + (c.momentum > 0) + c.centered, "%s", what);
        for (int k = 0, s = 0; k < count; k++, s++) {
            ad_tensor view;
            if (s == 1 && c.momentum == 0)
                s = 2;
            cr_assert_eq(ad_optim_state(o, 0, k, &view), AD_OK);
            compare(f, state[s], &view, tol, what);
        }
        ad_optim_free(o);
        ad_params_free(ps);
        ad_tensor_free(p);
    }
}

/* "multistep BASE GAMMA N M1 .. MN EPOCHS LR0 ..": every epoch's rate, exactly. */
static void compare_multistep_case(FILE *f)
{
    int ms[16], epochs;
    ad_lr_multistep_config c = {.milestones = ms};
    expect_word(f, "multistep");
    cr_assert_eq(fscanf(f, "%lf %lf %d", &c.base_lr, &c.gamma, &c.n_milestones), 3);
    cr_assert(c.n_milestones >= 0 && c.n_milestones <= 16);
    for (int i = 0; i < c.n_milestones; i++)
        cr_assert_eq(fscanf(f, "%d", &ms[i]), 1);
    cr_assert_eq(fscanf(f, "%d", &epochs), 1);
    for (int e = 0; e < epochs; e++) {
        double want, got = -1.0;
        cr_assert_eq(fscanf(f, "%lf", &want), 1, "the rates end at epoch %d", e);
        cr_assert_eq(ad_lr_multistep(&c, e, &got), AD_OK, "%s", ad_last_error());
        cr_expect(got == want, "MultiStepLR(base %g, gamma %g): epoch %d has %.17g in "
                  "adtape, %.17g in torch", c.base_lr, c.gamma, e, got, want);
    }
}

Test(optim_torch, rmsprop_and_multistep_match_pytorch, .timeout = 50)
{
    char dir[64], path[96];
    ts_tmpdir_make(dir, sizeof dir, "optim-torch");
    snprintf(path, sizeof path, "%s/reference.txt", dir);
    run_reference(path);
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot read %s", path);
    inputs in = {0};
    read_inputs(f, &in);
    for (int k = 0; k < 5; k++)
        compare_rmsprop_case(f, &in);
    for (int k = 0; k < 2; k++)
        compare_multistep_case(f);
    fclose(f);
    ad_tensor_free(in.p0);
    for (int k = 0; k < in.steps; k++)
        ad_tensor_free(in.g[k]);
    ts_tmpdir_remove(dir);
}
