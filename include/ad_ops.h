/*
** ad_ops.h: built-in ops. Each is a primal function with a registered rule (present
** before the first lookup, no init call needed) and a typed wrapper that records it,
** so model code reads as nested calls:
**
** Example (fragment):
**     ad_var h = ad_tanh(t, ad_bias_add(t, ad_matmul(t, x, w, 0, 1), b));
**
** Every op takes float32 or float64 (all float inputs of one call share one dtype).
** Layout: row-major, activations batch x features, a weight W is out x in, so a
** dense layer is Y = X W' = ad_matmul(t, X, W, 0, 1).
** Wrappers return a poisoned handle on error, as ad_call does.
*/
#ifndef AD_OPS_H
#define AD_OPS_H

#include "ad_tape.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C = op(A) op(B), rank 2; op(X) is X' when the flag is nonzero. OpenBLAS ?gemm;
** transposes are flags, never copies. Attributes optional: without them, no
** transposes (AD_MATMUL_ATTRS_DEFAULT). */
typedef struct ad_matmul_attrs {
    int trans_a, trans_b;
} ad_matmul_attrs;
#define AD_MATMUL_ATTRS_DEFAULT ((ad_matmul_attrs){.trans_a = 0, .trans_b = 0})
AD_API ad_status ad_op_matmul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_matmul(ad_tape *t, ad_var a, ad_var b, int trans_a, int trans_b);

/* Elementwise, same shapes: a + b, a - b, a * b; alpha * a (attributes required: a
** call of ad_op_scale without an ad_scale_attrs is AD_ERR_ATTRS). */
AD_API ad_status ad_op_add(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_sub(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_mul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
typedef struct ad_scale_attrs {
    double alpha;
} ad_scale_attrs;
AD_API ad_status ad_op_scale(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_add(ad_tape *t, ad_var a, ad_var b);
AD_API ad_var ad_sub(ad_tape *t, ad_var a, ad_var b);
AD_API ad_var ad_mul(ad_tape *t, ad_var a, ad_var b);
AD_API ad_var ad_scale(ad_tape *t, ad_var a, double alpha);

/* X (n x m) + b (m), b added to every row. */
AD_API ad_status ad_op_bias_add(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_bias_add(ad_tape *t, ad_var x, ad_var b);

/* Activations, elementwise. */
AD_API ad_status ad_op_tanh(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_relu(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_sigmoid(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_tanh(ad_tape *t, ad_var x);
AD_API ad_var ad_relu(ad_tape *t, ad_var x);
AD_API ad_var ad_sigmoid(ad_tape *t, ad_var x);

/* A dense layer's tail in one op: relu(X + b) and tanh(X + b), b added to every row
** of X (n x m). Bitwise the values and gradients of ad_relu(t, ad_bias_add(t, x, b))
** and its tanh twin, in one pass over the batch each way instead of two (the plain
** ops stay for models that need the pre-activation X + b on the tape). */
AD_API ad_status ad_op_bias_relu(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_bias_tanh(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_bias_relu(ad_tape *t, ad_var x, ad_var b);
AD_API ad_var ad_bias_tanh(ad_tape *t, ad_var x, ad_var b);

/* Reductions to a rank-0 value: sum and mean of every element. */
AD_API ad_status ad_op_sum(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_mean(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_sum(ad_tape *t, ad_var x);
AD_API ad_var ad_mean(ad_tape *t, ad_var x);

/* MSE, to a rank-0 value: mean over every element of (pred - target)^2, like
** torch.nn.MSELoss and Flux.mse; only pred is differentiated. Shapes must match
** (AD_ERR_SHAPE naming both). */
AD_API ad_status ad_op_mse(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_mse(ad_tape *t, ad_var pred, ad_var target);

/* How a loss reduces its per-row values. Zero is none of them, so a zeroed struct is
** refused rather than taken for a default: start from the _DEFAULT initialiser. */
typedef enum ad_reduction {
    AD_REDUCTION_NONE = 1, /* one loss per row, rank 1 (n): PyTorch's reduction='none' */
    AD_REDUCTION_MEAN = 2, /* their mean over the batch, rank 0 */
    AD_REDUCTION_SUM = 3,  /* their sum, rank 0 */
} ad_reduction;

/*
** Softmax cross-entropy from logits z (n x k, float) and int32 class labels l (n, each
** in 0..k-1): per row L_i = logsumexp(z_i) - z_i[l_i] = -log softmax(z_i)[l_i], then
** reduced: none gives L (n), mean sum_i L_i / n (rank 0; NaN for n = 0, like PyTorch),
** sum sum_i L_i (rank 0). Numerically stable (max-shifted log-sum-exp, in double); the
** softmax is saved for the pullback, dz_i = c_i (softmax(z_i) - onehot(l_i)) with
** c_i = dy_i, dy / n or dy. Labels are not differentiated.
** ad_softmax_cross_entropy is the mean, like torch.nn.CrossEntropyLoss(); the _ex form
** takes the reduction; ad_op_softmax_cross_entropy's attributes are optional (default
** mean). Errors: AD_ERR_SHAPE (not one label per row, both shapes named),
** AD_ERR_INVALID (a label outside 0..k-1, naming the row; a reduction other than the
** three), AD_ERR_DTYPE (float labels), AD_ERR_RANK (logits not rank 2, labels not 1).
*/
typedef struct ad_softmax_ce_attrs {
    ad_reduction reduction;
} ad_softmax_ce_attrs;
#define AD_SOFTMAX_CE_ATTRS_DEFAULT ((ad_softmax_ce_attrs){.reduction = AD_REDUCTION_MEAN})
AD_API ad_status ad_op_softmax_cross_entropy(ad_ctx *cx, const ad_tensor *const in[],
                                      ad_tensor **out);
AD_API ad_var ad_softmax_cross_entropy(ad_tape *t, ad_var logits, ad_var labels);
AD_API ad_var ad_softmax_cross_entropy_ex(ad_tape *t, ad_var logits, ad_var labels,
                                   ad_reduction reduction);

/*
** Threads for adtape's own loops (im2col and col2im of conv2d, max pooling), besides
** OpenBLAS's for the GEMMs: n (capped at 16), or 0 for OpenBLAS's count
** (openblas_set_num_threads / OPENBLAS_NUM_THREADS). Process-wide; 1 until set, since
** on a machine with as many cores as OpenBLAS threads its idle workers, which spin
** after each GEMM, can slow a second thread of ours more than it gains (bench/RESULTS.md).
** Results are bitwise the same at every count: each thread writes its own part of the
** output. Workers are plain pthreads started on first use; they sleep between regions,
** and a region too small to pay for waking them runs on the calling thread.
*/
AD_API void ad_set_num_threads(int n);
AD_API int ad_get_num_threads(void); /* the count in force, at least 1 */

/*
** 2-D convolution (cross-correlation, as torch.nn.functional.conv2d), NCHW:
**   y[n, o, p, q] = b[o] + sum_{c, i, j} w[o, c, i, j] x[n, g*Cg + c, p*sh - ph + i*dh,
**                                                       q*sw - pw + j*dw]
** over c < Cg = Cin/groups, i < kh, j < kw, with g = o / (Cout/groups) and x read as 0
** outside its H x W (the padding). Shapes: x N x Cin x H x W, w Cout x Cg x kh x kw (as
** PyTorch), b Cout; y N x Cout x Hout x Wout with Hout = (H + 2ph - dh(kh-1) - 1)/sh + 1
** (floor) and Wout alike. im2col on OpenBLAS ?gemm, small images batched into one
** GEMM; scratch from the tape's arena (no heap allocation after the first step).
** Attributes optional (AD_CONV2D_ATTRS_DEFAULT: stride 1, padding 0, dilation 1, one
** group); ad_conv2d and ad_conv2d_bias take NULL for them. Zero never means default.
** The pullbacks read dy, x (for dW) and w (for dX), never y or b: dX = the transposed
** convolution of dy with w, dW = sum over N and positions of dy x-patches, db = sum of
** dy over N, Hout and Wout; each is computed only when asked for.
** Errors: AD_ERR_RANK (x or w not rank 4, b not rank 1); AD_ERR_INVALID (a stride,
** dilation or groups below 1, a padding below 0; the field is named); AD_ERR_SHAPE
** (Cin != Cg * groups, Cout not divisible by groups, b not Cout, or a kernel larger
** than the padded input, i.e. an output extent below 1; shapes named); AD_ERR_OVERFLOW
** (an extent beyond BLAS's int range, or sizes that overflow); AD_ERR_NOMEM.
*/
typedef struct ad_conv2d_attrs {
    int stride_h, stride_w;     /* >= 1 */
    int pad_h, pad_w;           /* >= 0: zeros added on each side */
    int dilation_h, dilation_w; /* >= 1 */
    int groups;                 /* >= 1, dividing Cin and Cout */
} ad_conv2d_attrs;
#define AD_CONV2D_ATTRS_DEFAULT                                                         \
    ((ad_conv2d_attrs){.stride_h = 1, .stride_w = 1, .pad_h = 0, .pad_w = 0,           \
                       .dilation_h = 1, .dilation_w = 1, .groups = 1})
AD_API ad_status ad_op_conv2d(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_conv2d_bias(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_conv2d(ad_tape *t, ad_var x, ad_var w, const ad_conv2d_attrs *attrs);
AD_API ad_var ad_conv2d_bias(ad_tape *t, ad_var x, ad_var w, ad_var b,
                             const ad_conv2d_attrs *attrs);

/*
** Views: the same elements in the same order under a new shape, sharing x's memory (no
** copy; the tape knows they alias, see ad_out_view). reshape takes ndim (0..4) extents,
** one of which may be -1 to be inferred, as torch.reshape; flatten is N x d1 x ... ->
** N x (d1 ... dk), rank 2 to 4, as torch.flatten(x, 1) (the step from conv layers to
** dense ones). Never write through a view. The pullback gives dX = dY's elements under
** x's shape and reads neither x nor y. Errors: AD_ERR_SHAPE (another element count, or
** a -1 that cannot be inferred; x named), AD_ERR_INVALID (an extent below -1, or two
** -1), AD_ERR_RANK, AD_ERR_NULL (no shape for ndim > 0), AD_ERR_OVERFLOW.
*/
typedef struct ad_reshape_attrs {
    int ndim;
    int64_t shape[AD_MAX_RANK];
} ad_reshape_attrs;
AD_API ad_status ad_op_reshape(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_status ad_op_flatten(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_reshape(ad_tape *t, ad_var x, int ndim, const int64_t *shape);
AD_API ad_var ad_flatten(ad_tape *t, ad_var x);

/*
** Pooling attributes, required by max_pool2d and avg_pool2d (a call without them is
** AD_ERR_ATTRS; zero never means default): a kh x kw window moved by the strides over
** x padded by pad_h rows and pad_w columns on each side, at most half the kernel (as
** PyTorch). Output Hout = (H + 2 pad_h - kernel_h) / stride_h + 1 (floor: PyTorch's
** ceil_mode=False; dilation 1), Wout alike. AD_POOL2D_ATTRS(kh, kw) is PyTorch's
** nn.MaxPool2d((kh, kw)) default: stride = kernel, no padding.
** Errors of both: AD_ERR_RANK (x not rank 4); AD_ERR_INVALID (a kernel or stride
** below 1, a padding below 0 or above half its kernel; the field is named);
** AD_ERR_SHAPE (an empty plane, H or W 0, or a kernel larger than the padded input,
** i.e. an output extent below 1; x named); AD_ERR_OVERFLOW (sizes that overflow);
** AD_ERR_NOMEM.
*/
typedef struct ad_pool2d_attrs {
    int kernel_h, kernel_w; /* >= 1 */
    int stride_h, stride_w; /* >= 1 */
    int pad_h, pad_w;       /* >= 0 and at most half the kernel, as PyTorch */
} ad_pool2d_attrs;
/* kernel kh x kw, stride = kernel, no padding: PyTorch's nn.MaxPool2d(k) default */
#define AD_POOL2D_ATTRS(kh, kw)                                                         \
    ((ad_pool2d_attrs){.kernel_h = (kh), .kernel_w = (kw), .stride_h = (kh),            \
                       .stride_w = (kw), .pad_h = 0, .pad_w = 0})

/*
** Max pooling, NCHW, as torch.nn.functional.max_pool2d:
**   y[n, c, p, q] = max_{i < kh, j < kw} x[n, c, p*sh - ph + i, q*sw - pw + j]
** with the padding counting as -infinity. x N x C x H x W, y N x C x Hout x Wout.
** Ties and NaN as PyTorch's CPU kernel: the window is scanned in row-major order from
** -infinity and an element is taken when it is greater than the maximum so far or NaN,
** so of equal maxima the first in row-major order wins (and gets the whole gradient),
** and a NaN in a window propagates to y (the window's last NaN gets the gradient).
** The primal saves the argmax (int32 positions in the H x W plane; not in forward-only
** mode); the pullback scatters dY to them, dX[argmax] += dY, reading neither x nor y
** (a memory-saving sweep may reuse both). AD_ERR_OVERFLOW also for a plane of more
** than INT32_MAX positions; AD_ERR_NO_GRAD from the sweep if the call was recorded in
** forward-only mode.
*/
AD_API ad_status ad_op_max_pool2d(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_max_pool2d(ad_tape *t, ad_var x, const ad_pool2d_attrs *attrs);

/*
** Average pooling, NCHW, as torch.nn.functional.avg_pool2d with count_include_pad=True
** (its default):
**   y[n, c, p, q] = 1/(kh kw) sum_{i < kh, j < kw} x[n, c, p*sh - ph + i, q*sw - pw + j]
** with the padding counting as zeros and always in the divisor kh*kw. Shapes as
** max_pool2d; sums in double. The pullback reads dy alone (neither x nor y):
** dX[window] += dY / (kh kw).
*/
AD_API ad_status ad_op_avg_pool2d(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
AD_API ad_var ad_avg_pool2d(ad_tape *t, ad_var x, const ad_pool2d_attrs *attrs);

/*
** Global average pooling, as torch.nn.AdaptiveAvgPool2d(1): x N x C x H x W to y
** N x C x 1 x 1, y[n, c] = the mean of x[n, c, ., .], summed in double. Takes no
** attributes. The pullback reads dy alone: dX[n, c, ., .] = dY[n, c] / (H W).
** Errors: AD_ERR_RANK (x not rank 4), AD_ERR_SHAPE (H or W 0), AD_ERR_OVERFLOW,
** AD_ERR_NOMEM.
*/
AD_API ad_status ad_op_global_avg_pool2d(ad_ctx *cx, const ad_tensor *const in[],
                                         ad_tensor **out);
AD_API ad_var ad_global_avg_pool2d(ad_tape *t, ad_var x);

/*
** C = alpha op(A) op(B) + beta C on OpenBLAS, in the tensors' dtype (rank 2, all one
** float dtype), transposes as flags. For users' own primals and pullbacks: pass the
** pullback's beta[i] as beta (a float, as the pullback gets it), so beta = 0 writes
** (C may hold garbage, even NaN) and beta = 1 adds. Extents of 0 are handled (BLAS
** would refuse them). Errors: AD_ERR_NULL, AD_ERR_RANK, AD_ERR_DTYPE, AD_ERR_SHAPE
** (both shapes in the message), AD_ERR_OVERFLOW (an extent beyond int); C is
** untouched on error.
*/
AD_API ad_status ad_gemm_tensors(const ad_tensor *a, int trans_a, const ad_tensor *b, int trans_b,
                          double alpha, float beta, ad_tensor *c);

/*
** Backprop's pullback for a dense layer Y = X W' with inputs (W, X, ...): dW = dY' X,
** dX = dY W; slots past the second are left alone. Offered as the `reference` of
** feedback rules whose primal is a dense layer with extra inputs (FA's my_matmul).
*/
AD_API ad_status ad_dense_backprop_pullback(ad_ctx *cx, const ad_tensor *dy,
                                     const ad_tensor *const in[], const ad_tensor *y,
                                     ad_tensor *const din[], const float beta[]);

#ifdef __cplusplus
}
#endif
#endif /* AD_OPS_H */
