/*
** test_conv_fa.c: conv2d with feedback alignment. Both rules pass the default float64
** check (finite differences for w and b, structural checks for the feedback slot x);
** through the tape, dX equals the transposed convolution of dY with B computed by a
** naive loop written here (independently of conv.c), dW and db equal backprop's naive
** values, and the reference sweep gives backprop's dX (through w); with B = w the
** FA gradients are bitwise backprop's; a B of another shape is a named error.
*/
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "ad_feedback.h"
#include "support.h"

typedef struct fa_case {
    int64_t n, c, h, w, co, kh, kw;
    ad_conv2d_attrs at;
} fa_case;

static const fa_case cases[] = {
    {2, 3, 5, 5, 4, 3, 3, {1, 1, 0, 0, 1, 1, 1}},
    {2, 2, 7, 6, 3, 3, 2, {2, 3, 1, 0, 1, 1, 1}}, /* stride, padding */
    {1, 1, 7, 7, 2, 2, 3, {1, 1, 2, 1, 2, 2, 1}}, /* dilation, one channel, batch 1 */
    {2, 4, 5, 4, 6, 3, 1, {1, 2, 1, 1, 1, 1, 2}}, /* two groups */
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static int64_t extent(int64_t in, int64_t k, int pad, int dil, int stride)
{
    return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

typedef struct fa_io { ad_tensor *x, *w, *b, *fb, *g; int64_t ho, wo; } fa_io;

static fa_io make_io(ad_dtype dt, const fa_case *c, uint64_t *rng)
{
    fa_io io;
    const int64_t *ws = TS_SHAPE(c->co, c->c / c->at.groups, c->kh, c->kw);
    io.ho = extent(c->h, c->kh, c->at.pad_h, c->at.dilation_h, c->at.stride_h);
    io.wo = extent(c->w, c->kw, c->at.pad_w, c->at.dilation_w, c->at.stride_w);
    io.x = ts_tensor(dt, 4, TS_SHAPE(c->n, c->c, c->h, c->w));
    io.w = ts_tensor(dt, 4, ws);
    io.fb = ts_tensor(dt, 4, ws);
    io.b = ts_tensor(dt, 1, TS_SHAPE(c->co));
    io.g = ts_tensor(dt, 4, TS_SHAPE(c->n, c->co, io.ho, io.wo));
    ad_tensor *all[] = {io.x, io.w, io.fb, io.b, io.g};
    for (int i = 0; i < 5; i++)
        ts_fill_uniform(all[i], rng, -1, 1);
    return io;
}

static void free_io(fa_io *io)
{
    ad_tensor *all[] = {io->x, io->w, io->fb, io->b, io->g};
    for (int i = 0; i < 5; i++)
        ad_tensor_free(all[i]);
}

Test(conv_fa, both_rules_pass_the_default_float64_check)
{
    uint64_t rng = 21;
    for (int k = 0; k < N_CASES; k++) {
        fa_io io = make_io(AD_F64, &cases[k], &rng);
        ad_check_options o = ad_check_defaults();
        o.attrs = &cases[k].at, o.attrs_size = sizeof cases[k].at;
        ad_check_report rep = {0};
        cr_assert_eq(ad_rule_check(ad_op_conv2d_fa,
                                   ((const ad_tensor *const[]){io.x, io.w, io.fb}), 3, &o,
                                   &rep), AD_OK, "case %d: %s", k, ad_last_error());
        cr_expect_eq(rep.slot[1].method, AD_CHECK_FINITE_DIFFERENCES, "case %d: dW", k);
        cr_expect_eq(rep.slot[0].method, AD_CHECK_STRUCTURAL, "case %d: dX is feedback", k);
        cr_assert_eq(ad_rule_check(ad_op_conv2d_bias_fa,
                                   ((const ad_tensor *const[]){io.x, io.w, io.b, io.fb}), 4,
                                   &o, &rep), AD_OK, "case %d with bias: %s", k,
                     ad_last_error());
        cr_expect_eq(rep.slot[2].method, AD_CHECK_FINITE_DIFFERENCES, "case %d: db", k);
        free_io(&io);
    }
}

/*
** For L = sum(G .* conv(x, w) + b): dX through a kernel k (B for FA, w for backprop),
** dW and db, by one loop over every (n, o, p, q, c, i, j) as the definition reads.
*/
static void naive_grads(const fa_case *k, const fa_io *io, const ad_tensor *kern, double *dx,
                        double *dw, double *db)
{
    int64_t cg = k->c / k->at.groups, cog = k->co / k->at.groups;
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t o = 0; o < k->co; o++)
            for (int64_t p = 0; p < io->ho; p++)
                for (int64_t q = 0; q < io->wo; q++) {
                    double gy = ts_get(io->g, ((n * k->co + o) * io->ho + p) * io->wo + q);
                    db[o] += gy;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t ci = (o / cog) * cg + c;
                                int64_t ih = p * k->at.stride_h - k->at.pad_h + i * k->at.dilation_h;
                                int64_t iw = q * k->at.stride_w - k->at.pad_w + j * k->at.dilation_w;
                                if (ih < 0 || ih >= k->h || iw < 0 || iw >= k->w)
                                    continue;
                                int64_t wi = ((o * cg + c) * k->kh + i) * k->kw + j;
                                int64_t xi = ((n * k->c + ci) * k->h + ih) * k->w + iw;
                                dw[wi] += gy * ts_get(io->x, xi);
                                dx[xi] += gy * ts_get(kern, wi);
                            }
                }
}

typedef struct sweep_out { ad_tensor *dx, *dw, *db; } sweep_out;

/* One sweep of sum(G .* conv2d_bias_fa(x, w, b, fb)) over params x, w, b (never B);
** reference 1 runs the rules' references. Returns clones of the three gradients. */
static sweep_out sweep(const fa_case *k, const fa_io *io, const ad_tensor *fb, int reference)
{
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    ad_tensor *p[] = {io->x, io->w, io->b};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ad_params_add(ps, p[i], NULL), AD_OK);
    cr_assert_eq(ad_grads_new(ps, &gs), AD_OK);
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_conv2d_bias_fa(t, ad_use(t, io->x), ad_use(t, io->w), ad_use(t, io->b),
                                 ad_use(t, fb), &k->at);
    cr_assert(ad_var_ok(y), "%s", ad_tape_error(t));
    ad_sweep_options so = {.use_reference = reference};
    cr_assert_eq(ad_backward_ex(t, ad_sum(t, ad_mul(t, y, ad_use(t, io->g))), ps, gs, &so),
                 AD_OK, "%s", ad_last_error());
    sweep_out r = {ts_clone(ad_grads_get(gs, io->x)), ts_clone(ad_grads_get(gs, io->w)),
                   ts_clone(ad_grads_get(gs, io->b))};
    ad_tape_free(t);
    ad_grads_free(gs);
    ad_params_free(ps);
    return r;
}

static void free_sweep(sweep_out *s)
{
    ad_tensor_free(s->dx), ad_tensor_free(s->dw), ad_tensor_free(s->db);
}

static void expect_naive(ad_dtype dt, const fa_case *k, const fa_io *io,
                         const sweep_out *got, const ad_tensor *kern, const char *what)
{
    double *dx = calloc((size_t)io->x->size, sizeof *dx);
    double *dw = calloc((size_t)io->w->size, sizeof *dw);
    double *db = calloc((size_t)io->b->size, sizeof *db);
    cr_assert(dx && dw && db);
    naive_grads(k, io, kern, dx, dw, db);
    double tol = dt == AD_F32 ? 1e-4 : 1e-12;
    ts_assert_near(got->dx, dx, tol, what);
    ts_assert_near(got->dw, dw, tol, "dW");
    ts_assert_near(got->db, db, tol, "db");
    free(dx), free(dw), free(db);
}

Test(conv_fa, dx_is_the_transposed_convolution_with_b_and_dw_db_are_backprops)
{
    uint64_t rng = 23;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < N_CASES; k++) {
            ad_dtype dt = d ? AD_F32 : AD_F64;
            fa_io io = make_io(dt, &cases[k], &rng);
            sweep_out fa = sweep(&cases[k], &io, io.fb, 0);
            expect_naive(dt, &cases[k], &io, &fa, io.fb, "FA dX = conv_transpose(dY, B)");
            sweep_out ref = sweep(&cases[k], &io, io.fb, 1);
            expect_naive(dt, &cases[k], &io, &ref, io.w, "reference dX = conv_transpose(dY, W)");
            free_sweep(&fa), free_sweep(&ref);
            free_io(&io);
        }
}

Test(conv_fa, with_b_equal_to_w_fa_is_bitwise_backprop)
{
    uint64_t rng = 25;
    for (int k = 0; k < N_CASES; k++) {
        fa_io io = make_io(AD_F32, &cases[k], &rng);
        sweep_out fa = sweep(&cases[k], &io, io.w, 0), bp = sweep(&cases[k], &io, io.w, 1);
        cr_expect_eq(memcmp(fa.dx->data, bp.dx->data, (size_t)fa.dx->size * 4), 0, "case %d", k);
        cr_expect_eq(memcmp(fa.dw->data, bp.dw->data, (size_t)fa.dw->size * 4), 0, "case %d", k);
        free_sweep(&fa), free_sweep(&bp);
        free_io(&io);
    }
}

Test(conv_fa, a_feedback_of_another_shape_is_a_shape_error_naming_both)
{
    ad_tensor *x = ts_tensor(AD_F64, 4, TS_SHAPE(1, 2, 5, 5));
    ad_tensor *w = ts_tensor(AD_F64, 4, TS_SHAPE(3, 2, 3, 3));
    ad_tensor *fb = ts_tensor(AD_F64, 4, TS_SHAPE(3, 2, 3, 2));
    ad_tensor *b = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ad_tape *t;
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    ad_var y = ad_conv2d_fa(t, ad_use(t, x), ad_use(t, w), ad_use(t, fb), NULL);
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, "conv2d_fa", "3x2x3x2 f64 must have w's shape 3x2x3x3");
    ad_tape_reset(t);
    y = ad_conv2d_bias_fa(t, ad_use(t, x), ad_use(t, w), ad_use(t, b), ad_use(t, fb), NULL);
    ts_assert_tape_failed(t, y, AD_ERR_SHAPE, "conv2d_bias_fa", "must have w's shape");
    ad_tape_free(t);
    ad_tensor_free(x), ad_tensor_free(w), ad_tensor_free(fb), ad_tensor_free(b);
}
