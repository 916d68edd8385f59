/*
** test_conv_torch.c: conv2d, conv2d_bias, max_pool2d, avg_pool2d and global_avg_pool2d
** against PyTorch (torch.nn.functional in float64 on the CPU): y and every gradient
** (dx, dw, db) of loss = sum(y * G) on the same inputs, to 1e-12 relative. PyTorch is a
** reference of the tests only: this file writes every case's attributes and inputs
** (from its own seeded generator) to a text file, one run of
** tests/interop/conv_reference.py under Debian's /usr/bin/python3 computes them all,
** and the results are compared here. Without that interpreter or its torch the test
** fails saying what to install; it never skips.
** Cases: strides, padding, dilation, non-square kernels, odd sizes, two groups, batch
** 1, one channel, both of conv's GEMM paths (one image, blocks of images); max pool on
** inputs with ties (PyTorch gives a tied window's gradient to its first maximum in
** row-major order) and padding over negative inputs (the padding is -inf, not 0); avg
** pool with the padding in the divisor.
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

/* Debian's interpreter, where python3-torch installs; the python3 first on PATH may be
** another one without it. */
#define REFERENCE_PYTHON "/usr/bin/python3"

/* Both sides sum in another order (im2col GEMM against PyTorch's kernels); in f64 the
** differences stay near 1e-15 for these sizes, so 1e-12 leaves room and still catches
** any wrong index or missing term. */
#define TOL 1e-12

typedef enum op_kind { OP_CONV, OP_CONV_BIAS, OP_MAX, OP_AVG, OP_GLOBAL } op_kind;
static const char *const op_names[] = {"conv2d", "conv2d_bias", "max_pool2d", "avg_pool2d",
                                       "global_avg_pool2d"};

/* How x is filled: uniform values never tie; a few levels tie in most windows (PyTorch's
** tie rule decides which element gets dy); negative levels also tell a -inf padding
** from a 0 one; a constant makes every window one big tie. */
typedef enum fill_kind { FILL_UNIFORM, FILL_LEVELS, FILL_NEGATIVE_LEVELS, FILL_CONSTANT } fill_kind;

typedef struct torch_case {
    const char *what;
    op_kind op;
    int64_t n, c, h, w;
    int64_t co, kh, kw; /* the convolutions' weights: Cout x C/groups x kh x kw */
    ad_conv2d_attrs conv;
    ad_pool2d_attrs pool;
    fill_kind fill;
} torch_case;

#define CONV(what, op, n, c, h, w, co, kh, kw, sh, sw, ph, pw, dh, dw, groups)            \
    {what, op, n, c, h, w, co, kh, kw, {sh, sw, ph, pw, dh, dw, groups}, {0}, FILL_UNIFORM}
#define POOL(what, op, n, c, h, w, kh, kw, sh, sw, ph, pw, fill)                          \
    {what, op, n, c, h, w, 0, 0, 0, {0}, {kh, kw, sh, sw, ph, pw}, fill}
#define GLOBAL(what, n, c, h, w) {what, OP_GLOBAL, n, c, h, w, 0, 0, 0, {0}, {0}, FILL_UNIFORM}

static const torch_case cases[] = {
    CONV("3x3, no attributes", OP_CONV_BIAS, 2, 3, 5, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1),
    CONV("stride 2x3, pad 1x0, 3x2 kernel, odd 7x6", OP_CONV, 2, 2, 7, 6, 3, 3, 2,
         2, 3, 1, 0, 1, 1, 1),
    CONV("dilation 2, pad 2x1, batch 1, one channel", OP_CONV_BIAS, 1, 1, 7, 7, 2, 2, 3,
         1, 1, 2, 1, 2, 2, 1),
    CONV("groups 2, stride 1x2, pad 1, 3x1 kernel", OP_CONV, 2, 4, 5, 4, 6, 3, 1,
         1, 2, 1, 1, 1, 1, 2),
    CONV("groups 2 with stride 3x2, pad 0x2, dilation 2x1", OP_CONV_BIAS, 2, 2, 6, 5, 4, 2, 3,
         3, 2, 0, 2, 2, 1, 2),
    CONV("1x1 kernel, batch 3, one channel", OP_CONV_BIAS, 3, 1, 3, 5, 1, 1, 1,
         1, 1, 0, 0, 1, 1, 1),
    CONV("3x3 kernel over a padded 2x2 image", OP_CONV_BIAS, 1, 1, 2, 2, 1, 3, 3,
         1, 1, 1, 1, 1, 1, 1),
    /* 20x20 = 400 positions: blocks of 3 images, the last block holds 2 */
    CONV("blocks of images, a partial last block", OP_CONV_BIAS, 5, 2, 22, 22, 3, 3, 3,
         1, 1, 0, 0, 1, 1, 1),
    CONV("blocks of images, groups 2", OP_CONV_BIAS, 4, 4, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2),
    /* 34x34 = 1156 positions, at least the 1024 of one block: one image per GEMM */
    CONV("one image per GEMM, 3x2 kernel", OP_CONV, 2, 2, 34, 33, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1),
    /* Over 16 output channels the pullback builds the columns again instead of keeping
    ** the forward's (conv.c): both paths, blocks of images and one image per GEMM */
    CONV("17 output channels, stride 2, pad 1, blocks", OP_CONV_BIAS, 3, 3, 12, 11, 17, 3, 3,
         2, 2, 1, 1, 1, 1, 1),
    CONV("20 output channels, groups 2, one image per GEMM", OP_CONV, 2, 4, 33, 33, 20, 2, 2,
         1, 1, 0, 0, 1, 1, 2),

    POOL("max 2x2 stride 2, ties", OP_MAX, 2, 3, 6, 6, 2, 2, 2, 2, 0, 0, FILL_LEVELS),
    POOL("max 3x3 stride 1 pad 1, negative ties", OP_MAX, 1, 1, 7, 5, 3, 3, 1, 1, 1, 1,
         FILL_NEGATIVE_LEVELS),
    POOL("max 3x2 stride 2x1 pad 1, odd 7x6, ties", OP_MAX, 2, 2, 7, 6, 3, 2, 2, 1, 1, 1,
         FILL_LEVELS),
    POOL("max 2x2 pad 1 over a negative constant", OP_MAX, 1, 2, 5, 5, 2, 2, 2, 2, 1, 1,
         FILL_CONSTANT),
    POOL("max 2x3 stride 3x2 pad 1x0, distinct", OP_MAX, 1, 2, 5, 7, 2, 3, 3, 2, 1, 0,
         FILL_UNIFORM),
    POOL("max 4x5 stride 1x3 pad 2x2 (the largest), ties", OP_MAX, 1, 3, 4, 9, 4, 5, 1, 3, 2, 2,
         FILL_NEGATIVE_LEVELS),
    POOL("avg 2x2 stride 2", OP_AVG, 2, 3, 6, 6, 2, 2, 2, 2, 0, 0, FILL_UNIFORM),
    POOL("avg 3x3 stride 1 pad 1, one channel", OP_AVG, 1, 1, 7, 5, 3, 3, 1, 1, 1, 1,
         FILL_UNIFORM),
    POOL("avg 3x2 stride 2x1 pad 1, odd 7x6", OP_AVG, 2, 2, 7, 6, 3, 2, 2, 1, 1, 1,
         FILL_UNIFORM),
    POOL("avg 4x5 stride 1x3 pad 2x2", OP_AVG, 1, 3, 4, 9, 4, 5, 1, 3, 2, 2, FILL_UNIFORM),
    POOL("avg 1x1 stride 2, batch 3", OP_AVG, 3, 1, 5, 5, 1, 1, 2, 2, 0, 0, FILL_UNIFORM),
    GLOBAL("global 5x7", 2, 3, 5, 7),
    GLOBAL("global over one element", 1, 1, 1, 1),
    GLOBAL("global 7x3, batch 3, one channel", 3, 1, 7, 3),
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

/* One case's inputs and adtape's answers (NULL where the op has no such tensor). */
typedef struct case_run {
    ad_tensor *x, *w, *b, *g;
    ad_tensor *y, *dx, *dw, *db;
} case_run;

static void fill_x(ad_tensor *x, fill_kind fill, uint64_t *rng)
{
    ts_fill_uniform(x, rng, -1, 1);
    for (int64_t i = 0; i < x->size; i++) {
        double u = (ts_get(x, i) + 1) / 2; /* in [0, 1) */
        if (fill == FILL_LEVELS)
            ts_set(x, i, -1 + 0.5 * floor(u * 5)); /* -1, -0.5, 0, 0.5, 1 */
        else if (fill == FILL_NEGATIVE_LEVELS)
            ts_set(x, i, -2 + 0.5 * floor(u * 4)); /* -2, -1.5, -1, -0.5 */
        else if (fill == FILL_CONSTANT)
            ts_set(x, i, -0.75);
    }
    ad_tensor_touch(x);
}

/* The max pool windows (padding left out) whose maximum occurs more than once: proof
** that a tie case really puts PyTorch's tie rule to the test. */
static int64_t tied_windows(const ad_tensor *x, const ad_pool2d_attrs *p)
{
    int64_t h = x->shape[2], w = x->shape[3], planes = x->shape[0] * x->shape[1], tied = 0;
    int64_t ho = (h + 2 * p->pad_h - p->kernel_h) / p->stride_h + 1;
    int64_t wo = (w + 2 * p->pad_w - p->kernel_w) / p->stride_w + 1;
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t i = 0; i < ho; i++)
            for (int64_t j = 0; j < wo; j++) {
                double best = -INFINITY;
                int count = 0;
                for (int64_t a = i * p->stride_h - p->pad_h;
                     a < i * p->stride_h - p->pad_h + p->kernel_h; a++)
                    for (int64_t b = j * p->stride_w - p->pad_w;
                         b < j * p->stride_w - p->pad_w + p->kernel_w; b++) {
                        if (a < 0 || a >= h || b < 0 || b >= w)
                            continue;
                        double v = ts_get(x, (pl * h + a) * w + b);
                        count = v > best ? 1 : count + (v == best);
                        best = fmax(best, v);
                    }
                tied += count > 1;
            }
    return tied;
}

static ad_tensor *grad_copy(const ad_grads *gs, const ad_tensor *param, const char *what)
{
    const ad_tensor *g = ad_grads_get(gs, param);
    cr_assert_not_null(g, "%s: no gradient", what);
    return ts_clone(g);
}

/* Records the case on a fresh tape, sweeps loss = sum(y * G) back to x, w and b, and
** keeps copies of y and the gradients. G is drawn once y's shape is known. */
static void run_adtape(const torch_case *k, uint64_t *rng, case_run *r)
{
    memset(r, 0, sizeof *r);
    r->x = ts_tensor(AD_F64, 4, TS_SHAPE(k->n, k->c, k->h, k->w));
    fill_x(r->x, k->fill, rng);
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, r->x, NULL), AD_OK);
    if (k->op == OP_CONV || k->op == OP_CONV_BIAS) {
        r->w = ts_tensor(AD_F64, 4, TS_SHAPE(k->co, k->c / k->conv.groups, k->kh, k->kw));
        ts_fill_uniform(r->w, rng, -1, 1);
        cr_assert_eq(ad_params_add(ps, r->w, NULL), AD_OK);
    }
    if (k->op == OP_CONV_BIAS) {
        r->b = ts_tensor(AD_F64, 1, TS_SHAPE(k->co));
        ts_fill_uniform(r->b, rng, -1, 1);
        cr_assert_eq(ad_params_add(ps, r->b, NULL), AD_OK);
    }
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var x = ad_use(t, r->x), y;
    switch (k->op) {
    case OP_CONV: y = ad_conv2d(t, x, ad_use(t, r->w), &k->conv); break;
    case OP_CONV_BIAS:
        y = ad_conv2d_bias(t, x, ad_use(t, r->w), ad_use(t, r->b), &k->conv);
        break;
    case OP_MAX: y = ad_max_pool2d(t, x, &k->pool); break;
    case OP_AVG: y = ad_avg_pool2d(t, x, &k->pool); break;
    default: y = ad_global_avg_pool2d(t, x); break;
    }
    cr_assert(ad_var_ok(y), "%s: %s", k->what, ad_tape_error(t));
    const ad_tensor *yt = ad_value(t, y);
    r->g = ts_tensor(AD_F64, yt->ndim, yt->shape);
    ts_fill_uniform(r->g, rng, -1, 1);
    cr_assert_eq(ad_backward(t, ad_sum(t, ad_mul(t, y, ad_use(t, r->g))), ps, gs), AD_OK,
                 "%s: %s", k->what, ad_last_error());
    r->y = ts_clone(yt);
    r->dx = grad_copy(gs, r->x, k->what);
    if (r->w)
        r->dw = grad_copy(gs, r->w, k->what);
    if (r->b)
        r->db = grad_copy(gs, r->b, k->what);
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
}

static void free_run(case_run *r)
{
    ad_tensor *all[] = {r->x, r->w, r->b, r->g, r->y, r->dx, r->dw, r->db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ad_tensor_free(all[i]);
}

/* "tensor NAME NDIM D0 ... V0 ...": %.17g reads back to the same double in Python. */
static void write_tensor(FILE *f, const char *name, const ad_tensor *t)
{
    fprintf(f, "tensor %s %d", name, t->ndim);
    for (int d = 0; d < t->ndim; d++)
        fprintf(f, " %lld", (long long)t->shape[d]);
    for (int64_t i = 0; i < t->size; i++)
        fprintf(f, "%s%.17g", i % 8 ? " " : "\n", ts_get(t, i));
    fputc('\n', f);
}

static void write_case(FILE *f, const torch_case *k, const case_run *r)
{
    const ad_conv2d_attrs *c = &k->conv;
    const ad_pool2d_attrs *p = &k->pool;
    fprintf(f, "case %s", op_names[k->op]);
    if (k->op == OP_CONV || k->op == OP_CONV_BIAS)
        fprintf(f, " %d %d %d %d %d %d %d", c->stride_h, c->stride_w, c->pad_h, c->pad_w,
                c->dilation_h, c->dilation_w, c->groups);
    else if (k->op != OP_GLOBAL)
        fprintf(f, " %d %d %d %d %d %d", p->kernel_h, p->kernel_w, p->stride_h, p->stride_w,
                p->pad_h, p->pad_w);
    fputc('\n', f);
    write_tensor(f, "x", r->x);
    if (r->w)
        write_tensor(f, "w", r->w);
    if (r->b)
        write_tensor(f, "b", r->b);
    write_tensor(f, "G", r->g);
}

/* One run of the reference script over every case; fails the test if the interpreter
** is missing or the script fails (its own message is on stderr above ours). */
static void run_reference(const char *in, const char *out)
{
    cr_assert_eq(access(REFERENCE_PYTHON, X_OK), 0,
                 "%s is missing: this suite compares with PyTorch and needs Debian's "
                 "python3 with python3-torch (scripts/setup.sh ADTAPE_TEST_PACKAGES)",
                 REFERENCE_PYTHON);
    char *argv[] = {REFERENCE_PYTHON, CONV_REFERENCE_SCRIPT, (char *)in, (char *)out, NULL};
    pid_t pid;
    int status, rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", argv[0], strerror(rc));
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s %s failed (its message is above): no PyTorch reference to compare with",
              REFERENCE_PYTHON, CONV_REFERENCE_SCRIPT);
}

static void expect_word(FILE *f, const char *word, const char *what)
{
    char got[64];
    cr_assert_eq(fscanf(f, "%63s", got), 1, "%s: the reference ends before \"%s\"", what, word);
    cr_assert_str_eq(got, word, "%s: the reference has \"%s\" where \"%s\" belongs", what,
                     got, word);
}

/* Reads the reference's tensor `name` and expects adtape's `got` to have its shape and,
** element by element, |got - torch| <= TOL max(1, |torch|); reports the worst element. */
static void compare_tensor(FILE *f, const char *name, const ad_tensor *got, const char *what)
{
    expect_word(f, "tensor", what);
    expect_word(f, name, what);
    int ndim;
    cr_assert_eq(fscanf(f, "%d", &ndim), 1, "%s: %s has no rank", what, name);
    cr_assert(ndim >= 0 && ndim <= AD_MAX_RANK, "%s: %s has rank %d", what, name, ndim);
    cr_expect_eq(ndim, got->ndim, "%s: %s has rank %d in adtape, %d in torch", what, name,
                 got->ndim, ndim);
    int64_t size = 1;
    for (int d = 0; d < ndim; d++) {
        long long e;
        cr_assert_eq(fscanf(f, "%lld", &e), 1, "%s: %s has no extent %d", what, name, d);
        cr_expect(d < got->ndim && got->shape[d] == e, "%s: %s extent %d is %lld in torch",
                  what, name, d, e);
        size *= e;
    }
    int64_t worst = -1;
    double worst_err = 0, worst_want = 0;
    for (int64_t i = 0; i < size; i++) {
        double want;
        cr_assert_eq(fscanf(f, "%lf", &want), 1, "%s: %s ends at element %lld", what, name,
                     (long long)i);
        if (i >= got->size)
            continue;
        double err = fabs(ts_get(got, i) - want) / fmax(1.0, fabs(want));
        if (!(err <= worst_err)) /* NaN counts as the worst */
            worst = i, worst_err = err, worst_want = want;
    }
    cr_expect_eq(size, got->size, "%s: %s has %lld elements in torch, %lld in adtape", what,
                 name, (long long)size, (long long)got->size);
    cr_expect(worst < 0 || worst_err <= TOL,
              "%s: %s[%lld] is %.17g in adtape, %.17g in torch (relative error %.3g)", what,
              name, (long long)worst, worst < 0 ? 0.0 : ts_get(got, worst), worst_want,
              worst_err);
}

Test(conv_torch, values_and_gradients_match_pytorch_float64, .timeout = 50)
{
    static case_run runs[N_CASES];
    uint64_t rng = 20240611;
    char dir[64], in_path[96], out_path[96], what[128];
    ts_tmpdir_make(dir, sizeof dir, "conv-torch");
    snprintf(in_path, sizeof in_path, "%s/cases.txt", dir);
    snprintf(out_path, sizeof out_path, "%s/torch.txt", dir);

    FILE *f = fopen(in_path, "w");
    cr_assert_not_null(f, "%s", in_path);
    fprintf(f, "adtape-conv-torch %d\n", N_CASES);
    for (int i = 0; i < N_CASES; i++) {
        run_adtape(&cases[i], &rng, &runs[i]);
        if (cases[i].op == OP_MAX && cases[i].fill != FILL_UNIFORM)
            cr_assert_gt(tied_windows(runs[i].x, &cases[i].pool), 0,
                         "%s: no window ties; the case does not test the tie rule",
                         cases[i].what);
        write_case(f, &cases[i], &runs[i]);
    }
    cr_assert_eq(fclose(f), 0);

    run_reference(in_path, out_path);

    f = fopen(out_path, "r");
    cr_assert_not_null(f, "%s", out_path);
    for (int i = 0; i < N_CASES; i++) {
        snprintf(what, sizeof what, "case %d (%s, %s)", i, op_names[cases[i].op],
                 cases[i].what);
        int index;
        expect_word(f, "result", what);
        cr_assert_eq(fscanf(f, "%d", &index), 1);
        cr_assert_eq(index, i, "%s: the reference answers case %d", what, index);
        expect_word(f, op_names[cases[i].op], what);
        compare_tensor(f, "y", runs[i].y, what);
        compare_tensor(f, "dx", runs[i].dx, what);
        if (runs[i].dw)
            compare_tensor(f, "dw", runs[i].dw, what);
        if (runs[i].db)
            compare_tensor(f, "db", runs[i].db, what);
        free_run(&runs[i]);
    }
    expect_word(f, "end", "the reference's last line");
    fclose(f);
    ts_tmpdir_remove(dir);
}
