/*
** conv.c: 2-D convolution, NCHW (weights Cout x Cin/groups x kh x kw, as PyTorch), by
** im2col on OpenBLAS. Forward: per block of images, cols = im2col(x) and, per group,
** Y_g = W_g cols_g. Backward, from the same blocks: dW_g += dY_g cols_g',
** dcols_g = W_g' dY_g and dX = col2im(dcols); db sums dY. The blocks and their
** threads are in conv_blocks.c, data movement in conv_im2col.c.
**
** Why im2col: the GEMM does the arithmetic at OpenBLAS's speed, for any stride,
** padding, dilation and group count, with no kernel of ours per shape; the price is a
** column buffer of Cin*kh*kw x (positions) per block, taken from the tape's arena.
** Why blocks: one image's GEMM has Hout*Wout columns, too few to run near peak once
** images are small (LeNet's later layers), so images are batched until a block has
** FOLD_COLUMNS columns; a block of several images costs a transpose between NCHW and
** the channel-major block (cheap next to the GEMM), a block of one image needs none.
**
** Two exceptions, chosen from the geometry (adi_conv_path, conv_direct.c):
** - direct: float32, groups 1, stride 1, dilation 1, at most 16 output channels and
**   160 taps (LeNet's first two layers). GEMMs with so few rows run far below
**   OpenBLAS's peak, so the forward and dW run as register-tiled loops over a padded
**   copy of each image (conv_direct.c, conv_direct_kernels.c); dX keeps im2col. The
**   sums are in another order than the GEMM's: equal to float32 rounding, and the same
**   bits at any thread count.
** - dense: a kernel over the whole unpadded image (a 1 x 1 output, LeNet's third
**   layer) is a linear layer on x as it is; im2col would be a transpose of x done one
**   element at a time.
*/
#include <limits.h>

#include "conv_internal.h"

#define FOLD_COLUMNS 1024

typedef adi_conv_plan conv_plan;

/* a * b for nonnegative extents; false when it exceeds int64_t. */
static bool mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a != 0 && b > INT64_MAX / a)
        return false;
    *out = a * b;
    return true;
}

static ad_status check_attrs(const char *op, const ad_conv2d_attrs *at)
{
    const struct { const char *name; int v, min; } f[] = {
        {"stride_h", at->stride_h, 1},     {"stride_w", at->stride_w, 1},
        {"pad_h", at->pad_h, 0},           {"pad_w", at->pad_w, 0},
        {"dilation_h", at->dilation_h, 1}, {"dilation_w", at->dilation_w, 1},
        {"groups", at->groups, 1},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < f[i].min)
            return ad_fail(AD_ERR_INVALID, "%s: %s is %d, must be >= %d (zero is not a "
                           "default: start from AD_CONV2D_ATTRS_DEFAULT)", op, f[i].name,
                           f[i].v, f[i].min);
    return AD_OK;
}

/* One output extent: (in + 2 pad - dil (k - 1) - 1) / stride + 1, or an error. */
static ad_status out_extent(const char *op, const ad_tensor *x, const ad_tensor *w,
                            int axis, int pad, int dil, int stride, int64_t *out)
{
    char dx[64], dw[64];
    int64_t in = x->shape[2 + axis], k = w->shape[2 + axis], span;
    if (!mul_ok(dil, k > 0 ? k - 1 : 0, &span) || span > INT64_MAX - 1 ||
        in > INT64_MAX - 2 * (int64_t)pad)
        return ad_fail(AD_ERR_OVERFLOW, "%s: kernel extent of w %s (dilation %d) or the "
                       "padded input x %s overflows", op,
                       ad_tensor_describe(w, dw, sizeof dw), dil,
                       ad_tensor_describe(x, dx, sizeof dx));
    int64_t room = in + 2 * (int64_t)pad - (span + 1);
    if (k == 0)
        return ad_fail(AD_ERR_SHAPE, "%s: w %s has an empty kernel", op,
                       ad_tensor_describe(w, dw, sizeof dw));
    if (room < 0)
        return ad_fail(AD_ERR_SHAPE, "%s: kernel %s %lld (dilated to %lld) does not fit x "
                       "%s padded by %d: output extent below 1 (w %s)", op,
                       axis ? "width" : "height", (long long)k, (long long)(span + 1),
                       ad_tensor_describe(x, dx, sizeof dx), pad,
                       ad_tensor_describe(w, dw, sizeof dw));
    *out = room / stride + 1;
    return AD_OK;
}

/* Checks x, w (and b when given) against the attributes and fills the plan. */
static ad_status conv_plan_make(const char *op, const ad_ctx *cx, const ad_tensor *x,
                                const ad_tensor *w, const ad_tensor *b, conv_plan *p)
{
    const ad_conv2d_attrs *at = ad_attrs(cx);
    char dx[64], dw[64], db[64];
    if (!at)
        return ad_fail(AD_ERR_NULL, "%s: no context (primals run through ad_call)", op);
    ad_status rc = check_attrs(op, at);
    if (rc)
        return rc;
    if (x->ndim != 4 || w->ndim != 4 || (b && b->ndim != 1))
        return ad_fail(AD_ERR_RANK, "%s: x %s and w %s must be rank 4%s", op,
                       ad_tensor_describe(x, dx, sizeof dx),
                       ad_tensor_describe(w, dw, sizeof dw), b ? ", b rank 1" : "");
    int64_t G = at->groups, cin;
    if (!mul_ok(w->shape[1], G, &cin) || cin != x->shape[1])
        return ad_fail(AD_ERR_SHAPE, "%s: x %s has %lld channels, w %s with groups %d "
                       "takes %lld x %d", op, ad_tensor_describe(x, dx, sizeof dx),
                       (long long)x->shape[1], ad_tensor_describe(w, dw, sizeof dw),
                       at->groups, (long long)w->shape[1], at->groups);
    if (w->shape[0] % G)
        return ad_fail(AD_ERR_SHAPE, "%s: w %s has %lld output channels, not divisible "
                       "by groups %d", op, ad_tensor_describe(w, dw, sizeof dw),
                       (long long)w->shape[0], at->groups);
    if (b && b->shape[0] != w->shape[0])
        return ad_fail(AD_ERR_SHAPE, "%s: b %s is not one per output channel of w %s", op,
                       ad_tensor_describe(b, db, sizeof db),
                       ad_tensor_describe(w, dw, sizeof dw));
    adi_conv_geometry g = {.n = x->shape[0], .c = x->shape[1], .h = x->shape[2],
                           .w = x->shape[3], .kh = w->shape[2], .kw = w->shape[3],
                           .sh = at->stride_h, .sw = at->stride_w, .ph = at->pad_h,
                           .pw = at->pad_w, .dh = at->dilation_h, .dw = at->dilation_w};
    if ((rc = out_extent(op, x, w, 0, at->pad_h, at->dilation_h, at->stride_h, &g.ho)) ||
        (rc = out_extent(op, x, w, 1, at->pad_w, at->dilation_w, at->stride_w, &g.wo)))
        return rc;
    int64_t P, kk, kg;
    if (!mul_ok(g.ho, g.wo, &P) || !mul_ok(g.kh, g.kw, &kk) || !mul_ok(kk, w->shape[1], &kg)
        || P > INT_MAX || kg > INT_MAX || w->shape[0] > INT_MAX)
        return ad_fail(AD_ERR_OVERFLOW, "%s: x %s, w %s: an extent exceeds BLAS's int "
                       "range", op, ad_tensor_describe(x, dx, sizeof dx),
                       ad_tensor_describe(w, dw, sizeof dw));
    int64_t nb = (FOLD_COLUMNS + P - 1) / P;
    *p = (conv_plan){.g = g, .co = w->shape[0], .groups = G, .cog = w->shape[0] / G,
                     .kg = kg, .nb = nb < g.n ? nb : (g.n ? g.n : 1)};
    return AD_OK;
}

/*
** A kernel over the whole unpadded image (ADI_CONV_DENSE: a 1 x 1 output, LeNet's third
** layer): im2col(x) would be x' (K x N), copied one element at a time, so the GEMMs
** take x as it is: y (N x Cout) = b 1' (or 0) + x W'.
*/
static void dense_forward(const conv_plan *p, const ad_tensor *x, const ad_tensor *w,
                          const ad_tensor *b, ad_tensor *y)
{
    int64_t n = p->g.n, co = p->co;
    if (b)
        AD_DISPATCH_FLOAT(x->dtype, T, {
            const T *bs = b->data;
            T *ys = y->data;
            for (int64_t i = 0; i < n; i++)
                for (int64_t o = 0; o < co; o++)
                    ys[i * co + o] = bs[o];
        });
    adi_gemm(x->dtype, false, true, n, co, p->kg, 1.0, x->data, p->kg, w->data, p->kg,
             b ? 1.0 : 0.0, y->data, co);
}

ad_status adi_conv_forward(const char *op, ad_ctx *cx, const ad_tensor *x,
                           const ad_tensor *w, const ad_tensor *b, ad_tensor **out)
{
    conv_plan p;
    ad_status rc = conv_plan_make(op, cx, x, w, b, &p);
    if (rc || (rc = ad_out(cx, x->dtype, 4,
                           (int64_t[]){p.g.n, p.co, p.g.ho, p.g.wo}, out)))
        return rc;
    if ((*out)->size == 0)
        return AD_OK;
    int path = adi_conv_path(x->dtype, p.co, p.groups, &p.g);
    if (path == ADI_CONV_DIRECT)
        return adi_conv_direct_forward(cx, &p.g, p.co, x->data, w->data,
                                       b ? b->data : NULL, (*out)->data);
    if (path == ADI_CONV_DENSE) {
        dense_forward(&p, x, w, b, *out);
        return AD_OK;
    }
    return adi_conv_blocks_forward(cx, &p, x, w, b, *out);
}

ad_status ad_op_conv2d(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return adi_conv_forward("conv2d", cx, in[0], in[1], NULL, out);
}

ad_status ad_op_conv2d_bias(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return adi_conv_forward("conv2d_bias", cx, in[0], in[1], in[2], out);
}

/* The sum of g[0 .. n) in double, over four interleaved partial sums: one running sum
** would wait on the adder's latency at every element. */
#define ROW_SUM(T, g, n, out)                                                           \
    do {                                                                                \
        double a0_ = 0, a1_ = 0, a2_ = 0, a3_ = 0;                                      \
        int64_t q_ = 0;                                                                 \
        for (; q_ + 4 <= (n); q_ += 4) {                                                \
            a0_ += (g)[q_], a1_ += (g)[q_ + 1], a2_ += (g)[q_ + 2], a3_ += (g)[q_ + 3]; \
        }                                                                               \
        for (; q_ < (n); q_++)                                                          \
            a0_ += (g)[q_];                                                             \
        (out) = (a0_ + a1_) + (a2_ + a3_);                                              \
    } while (0)

/* db[o] = sum over n and positions of dy[n, o, .], in double. */
static ad_status bias_grad(ad_ctx *cx, const conv_plan *p, const ad_tensor *dy,
                           ad_tensor *db, float beta)
{
    int64_t P = p->g.ho * p->g.wo, co = p->co;
    ad_tensor *acc;
    ad_status rc = ad_scratch(cx, AD_F64, 1, &co, &acc);
    if (rc)
        return rc;
    double *s = acc->data;
    for (int64_t o = 0; o < co; o++)
        s[o] = 0;
    AD_DISPATCH_FLOAT(dy->dtype, T, {
        const T *g = dy->data;
        for (int64_t n = 0; n < p->g.n; n++)
            for (int64_t o = 0; o < co; o++) {
                double row;
                ROW_SUM(T, g + (n * co + o) * P, P, row);
                s[o] += row;
            }
        T *d = db->data;
        AD_PUT_EACH(d, co, beta, o, (T)s[o]);
    });
    return AD_OK;
}

/*
** y = conv(x, w) (+ b):  dX = col2im(F' dY)  (reads fb: w, or FA's B; not x);
**                        dW = dY im2col(x)'  (reads x, not w);  db = sum_{n,p,q} dY.
** dX and dW are zeroed first under beta 0, then every block adds.
*/
ad_status adi_conv_pullback(const char *op, ad_ctx *cx, const ad_tensor *dy,
                            const ad_tensor *x, const ad_tensor *w, const ad_tensor *b,
                            const ad_tensor *fb, ad_tensor *const din[], const float beta[])
{
    conv_plan p;
    ad_status rc = conv_plan_make(op, cx, x, w, b, &p);
    if (rc || (b && din[2] && (rc = bias_grad(cx, &p, dy, din[2], beta[2]))))
        return rc;
    for (int s = 0; s < 2; s++)
        if (din[s] && beta[s] == 0.0f && din[s]->size)
            memset(din[s]->data, 0, (size_t)din[s]->size * ad_dtype_size(din[s]->dtype));
    if ((!din[0] && !din[1]) || dy->size == 0 || p.kg == 0) /* kg 0: dX, dW are empty */
        return AD_OK;
    if (adi_conv_path(x->dtype, p.co, p.groups, &p.g) == ADI_CONV_DENSE) {
        /* dW += dY' x, dX += dY F, with dY as N x Cout (see dense_forward) */
        if (din[1])
            adi_gemm(x->dtype, true, false, p.co, p.kg, p.g.n, 1.0, dy->data, p.co, x->data,
                     p.kg, 1.0, din[1]->data, p.kg);
        if (din[0])
            adi_gemm(x->dtype, false, false, p.g.n, p.kg, p.co, 1.0, dy->data, p.co,
                     fb->data, p.kg, 1.0, din[0]->data, p.kg);
        return AD_OK;
    }
    /* The direct path takes dW (after the blocks' scratch, so that a failure leaves
    ** dW as it was); the im2col blocks take the rest. */
    bool direct = din[1] && adi_conv_path(x->dtype, p.co, p.groups, &p.g) == ADI_CONV_DIRECT;
    ad_tensor *dw_rest = direct ? NULL : din[1];
    adi_conv_blocks blocks;
    if ((din[0] || dw_rest) &&
        (rc = adi_conv_blocks_backward_prepare(cx, &p, x, fb, dy, din[0], dw_rest, &blocks)))
        return rc;
    if (direct && (rc = adi_conv_direct_dw(cx, &p.g, p.co, x->data, dy->data, din[1]->data)))
        return rc;
    if (din[0] || dw_rest)
        adi_conv_blocks_backward(&blocks);
    return AD_OK;
}

static ad_status conv2d_pullback(ad_ctx *cx, const ad_tensor *dy,
                                 const ad_tensor *const in[], const ad_tensor *y,
                                 ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d", cx, dy, in[0], in[1], NULL, in[1], din, beta);
}

static ad_status conv2d_bias_pullback(ad_ctx *cx, const ad_tensor *dy,
                                      const ad_tensor *const in[], const ad_tensor *y,
                                      ad_tensor *const din[], const float beta[])
{
    (void)y;
    return adi_conv_pullback("conv2d_bias", cx, dy, in[0], in[1], in[2], in[1], din, beta);
}

static const ad_rule rule_conv2d = {
    .name = "conv2d",
    .pullback = conv2d_pullback,
    .n_inputs = 2,
    .inputs = {{0, AD_RANK(4)}, {0, AD_RANK(4)}},
    .unread = AD_OUTPUT, /* reads x (for dW) and w (for dX), never y */
    .attrs_size = sizeof(ad_conv2d_attrs),
    .attrs_default = &AD_CONV2D_ATTRS_DEFAULT,
};

static const ad_rule rule_conv2d_bias = {
    .name = "conv2d_bias",
    .pullback = conv2d_bias_pullback,
    .n_inputs = 3,
    .inputs = {{0, AD_RANK(4)}, {0, AD_RANK(4)}, {0, AD_RANK(1)}},
    .unread = AD_OUTPUT | AD_INPUT(2), /* db needs dy alone */
    .attrs_size = sizeof(ad_conv2d_attrs),
    .attrs_default = &AD_CONV2D_ATTRS_DEFAULT,
};

ad_var ad_conv2d(ad_tape *t, ad_var x, ad_var w, const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d, "ad_conv2d", (const ad_var[]){x, w}, 2, attrs,
                      attrs ? sizeof *attrs : 0);
}

ad_var ad_conv2d_bias(ad_tape *t, ad_var x, ad_var w, ad_var b, const ad_conv2d_attrs *attrs)
{
    return ad_call_as(t, ad_op_conv2d_bias, "ad_conv2d_bias", (const ad_var[]){x, w, b}, 3,
                      attrs, attrs ? sizeof *attrs : 0);
}

ADI_RULE_FAMILY(adi_family_conv, "conv",
                ADI_SEED(ad_op_conv2d, rule_conv2d),
                ADI_SEED(ad_op_conv2d_bias, rule_conv2d_bias));
