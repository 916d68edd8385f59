/*
** fuzz_record.c: libFuzzer target that reads its input as a program of tape
** operations, through the public API only: tensors of random dtype and rank 0..5
** (ad_tensor_init refuses 5), extents 0..4, shared with other tensors, or absurd;
** leaves on two tapes; the op wrappers; ad_call_as with any registered primal and any
** n; sweeps from any handle (stale, poisoned, foreign, not a scalar); resets in the
** middle; parameter sets growing under a gradient set; descent and initialisers that
** make recorded leaves stale; ad_rule_check on small float64 inputs; malformed rule
** registrations; memory-saving sweeps with values kept at random. Nothing may crash, leak or hang; every status is a named ad_status;
** every failure leaves a message (the thread's last error, or the tape's for a
** poisoned handle). After a failed call the program may reset the tape and use every
** tensor again, so one early error does not poison the rest of the program. The seeds
** in tests/fuzz/corpus/record/ are programs encoded by hand: a tanh layer with softmax
** cross-entropy in f32 (sweep, descent, reference sweep), the same in f64 with rule
** checks, and a two-layer DFA network with an MSE loss. DFA into conv layers shares
** the last wrapper case with dense KP.
*/
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ad.h"

#define CHECK(cond) ((cond) ? (void)0 : (fprintf(stderr, "CHECK failed at line %d: %s\n", __LINE__, #cond), __builtin_trap()))

enum { MAX_T = 12, CAP = 256, MAX_V = 32, MAX_STEPS = 256, MAX_CHECKS = 2 };

typedef struct world {
    const uint8_t *p;
    size_t n, i;
    ad_tensor t[MAX_T];
    int nt;
    ad_tape *tape[2];
    ad_var v[MAX_V]; /* v[0] stays poisoned */
    int nv;
    ad_params *ps, *ps_empty;
    ad_grads *gs, *gs_empty;
    ad_dfa dfa[2];
    int checks;
} world;

static double bufs[MAX_T][CAP]; /* tensor storage; double keeps every dtype aligned */
static FILE *devnull;

static unsigned next(world *w)
{
    return w->i < w->n ? w->p[w->i++] : 0;
}

/* Mostly the first tape; the second gets an eighth of the calls (foreign handles). */
static ad_tape *tape_of(world *w, unsigned op)
{
    return w->tape[(op & 0xe0) == 0xe0];
}

/* Huge shapes must reach the library's out-of-memory path, as in a normal process. */
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

/* ---- checks ---- */

static ad_status check_status(ad_status rc)
{
    CHECK(ad_status_class(rc) >= 0 && (rc == AD_OK || ad_last_error()[0] != '\0'));
    return rc;
}

/* A call whose failure must be a named status with a message of its own (the last
** error is emptied first). */
#define TRY(call) check_status((ad_fail(AD_OK, "%s", ""), (call)))

/* Reads every element, so ASan sees a tensor that claims more than it holds. */
static void read_tensor(const ad_tensor *x)
{
    CHECK(x->ndim >= 0 && x->ndim <= AD_MAX_RANK && x->size >= 0 && ad_dtype_size(x->dtype));
    volatile double sink = 0;
    for (int64_t k = 0; k < x->size && k < 4096; k++)
        sink += ad_tensor_get(x, k);
    (void)sink;
}

static void keep(world *w, ad_var r)
{
    w->v[w->nv < MAX_V ? w->nv++ : 1 + (int)(w->i % (MAX_V - 1))] = r;
}

/* Checks a call's result and keeps it; after a failure, maybe starts the tape over. */
static void push(world *w, ad_tape *t, ad_var r)
{
    ad_status st = ad_tape_status(t);
    keep(w, r);
    if (ad_var_ok(r)) {
        CHECK(st == AD_OK && ad_value(t, r) != NULL);
        read_tensor(ad_value(t, r));
        return;
    }
    CHECK(st != AD_OK && ad_status_class(st) > 0 && ad_tape_error(t)[0] != '\0');
    if (next(w) % 4 == 0)
        return;
    ad_tape_reset(t);
    for (int k = 0; k < w->nt; k++)
        keep(w, ad_use(t, &w->t[k]));
}

/* Half the time one of the four newest handles, so chains of ops are common. */
static ad_var pick(world *w)
{
    unsigned b = next(w), n = (unsigned)w->nv;
    return w->v[b & 1 ? n - 1 - (b >> 1) % (n < 4 ? n : 4) : (b >> 1) % n];
}

static ad_tensor *pick_tensor(world *w)
{
    unsigned b = next(w);
    return w->nt && b != 255 ? &w->t[b % (unsigned)w->nt] : NULL;
}

/* ---- user rules ---- */

static ad_status copy_in0(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, in[0]->dtype, in[0]->ndim, in[0]->shape, out);
    if (rc == AD_OK && in[0]->size > 0)
        memcpy((*out)->data, in[0]->data, (size_t)in[0]->size * ad_dtype_size(in[0]->dtype));
    return rc;
}

/* din = dy, or 1 where dy is NULL; added when beta is 1. */
static void put(ad_tensor *din, const ad_tensor *dy, float beta)
{
    for (int64_t k = 0; din && k < din->size; k++) {
        double d = dy ? ad_tensor_get(dy, k) : 1.0;
        if (din->dtype == AD_F32)
            ((float *)din->data)[k] = (float)(beta ? ((float *)din->data)[k] + d : d);
        else
            ((double *)din->data)[k] = beta ? ((double *)din->data)[k] + d : d;
    }
}

/* Two copies (with mixed dtypes; ignoring dy), their bodies different so that no
** linker folds them into one registry key. */
static ad_status user_mixed(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    return copy_in0(cx, in, out);
}

static ad_status user_ignores(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = copy_in0(cx, in, out);
    return rc == AD_OK && in[0]->size > CAP ? AD_ERR_INVALID : rc;
}

/* y = in[0]:  d0 = dy (1 when dy is NULL: the rule ignores it); slot 1 is nondiff */
static ad_status user_pb(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                         const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    put(din[0], dy, beta[0]);
    return AD_OK;
}

/* Breaks the contracts without a message: fails bare on odd sizes, makes no output on
** sizes 0 mod 4, asks for two on 2 mod 4; its pullback fails bare. */
static ad_status user_bad(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    if (in[0]->size % 4 != 2)
        return in[0]->size % 2 ? AD_ERR_INVALID : AD_OK;
    ad_status rc = copy_in0(cx, in, out);
    return rc ? rc : copy_in0(cx, in, out);
}

static ad_status user_bad_pb(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)dy, (void)in, (void)y, (void)din, (void)beta;
    return AD_ERR_PULLBACK;
}

static const ad_primal_fn fns[] = {
    ad_op_matmul, ad_op_add, ad_op_sub, ad_op_mul, ad_op_scale, ad_op_bias_add,
    ad_op_tanh, ad_op_relu, ad_op_sigmoid, ad_op_sum, ad_op_mean, ad_op_mse,
    ad_op_softmax_cross_entropy, ad_op_dense_fa, ad_op_dense_usf, ad_op_dense_sf,
    ad_op_dense_kp, ad_op_dfa_output, ad_op_dfa_hidden, ad_op_dfa_conv_hidden, ad_op_conv2d,
    ad_op_conv2d_bias,
    ad_op_conv2d_fa, ad_op_conv2d_bias_fa, ad_op_conv2d_usf, ad_op_conv2d_bias_usf,
    ad_op_conv2d_sf, ad_op_conv2d_bias_sf, ad_op_conv2d_kp, ad_op_conv2d_bias_kp,
    ad_op_dense_usf_scaled, ad_op_conv2d_usf_scaled, ad_op_conv2d_bias_usf_scaled,
    ad_op_reshape, ad_op_flatten,
    ad_op_max_pool2d, ad_op_avg_pool2d, ad_op_global_avg_pool2d, ad_op_clamp_grad,
    ad_op_exp, ad_op_log, ad_op_softplus, ad_op_leaky_relu, ad_op_stop_gradient,
    ad_op_bce_with_logits,
    user_mixed, user_ignores, user_bad,
};
enum { N_FNS = sizeof fns / sizeof fns[0] };

/* ---- the program's instructions ---- */

static void fill(const ad_tensor *t, uint64_t s)
{
    for (int64_t k = 0; k < t->size; k++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int r = (int)(s >> 59); /* 0..31 */
        if (t->dtype == AD_F32)
            ((float *)t->data)[k] = (float)(r - 16) / 8.0f;
        else if (t->dtype == AD_F64)
            ((double *)t->data)[k] = (r - 16) / 8.0;
        else
            ((int32_t *)t->data)[k] = r == 0 ? -1 : r == 1 ? 7 : r % 2; /* labels */
    }
}

/* Mostly 0..4 or an extent another tensor has (so shapes fit); sometimes absurd. */
static int64_t extent(world *w)
{
    unsigned e = next(w);
    if (e < 150 || (e < 250 && !w->nt))
        return e % 5;
    if (e < 250) {
        const ad_tensor *t = &w->t[e % (unsigned)w->nt];
        return t->ndim ? t->shape[e % (unsigned)t->ndim] : 1;
    }
    return e == 250 ? -1 : e == 251 ? INT64_MAX : (int64_t)1 << 40;
}

/* A tensor over its own buffer (rank 0..5, any dtype or none), used on a tape when
** the input says so. Tensors are never redescribed: tapes and sets hold them. */
static void op_tensor(world *w, unsigned op)
{
    static const ad_dtype dtypes[8] = {1, 1, 1, 2, 2, 3, 3, 0}; /* f32 f64 i32, none */
    static const int ranks[10] = {0, 1, 1, 2, 2, 2, 2, 3, 4, 5};
    unsigned a = next(w), b = next(w);
    int ndim = ranks[a % 10];
    int64_t shape[6];
    for (int d = 0; d < ndim; d++)
        shape[d] = extent(w);
    if (w->nt == MAX_T)
        return;
    ad_tensor *t = &w->t[w->nt];
    ad_status rc = TRY(ad_tensor_init(t, dtypes[(a / 10) % 8], ndim, shape,
                                      b % 16 == 15 ? NULL : bufs[w->nt]));
    if (rc != AD_OK || t->size > CAP) /* accepted, but larger than our buffer: unused */
        return;
    fill(t, b);
    w->nt++;
    if (op & 16)
        push(w, tape_of(w, op), ad_use(tape_of(w, op), t));
}

/* Six ints, each -1..3 (0 and -1 must be refused, as must padding over half a kernel). */
static ad_pool2d_attrs fuzzed_pool_attrs(world *w)
{
    ad_pool2d_attrs a;
    int *f = &a.kernel_h;
    for (int i = 0; i < 6; i++)
        f[i] = (int)(next(w) % 5) - 1;
    return a;
}

/* Seven ints, each -1..3 (0 and -1 must be refused where they are below the minimum). */
static ad_conv2d_attrs fuzzed_conv_attrs(world *w)
{
    ad_conv2d_attrs a;
    int *f = &a.stride_h;
    for (int i = 0; i < 7; i++)
        f[i] = (int)(next(w) % 5) - 1;
    return a;
}

static void op_wrapper(world *w, unsigned op)
{
    ad_tape *t = tape_of(w, op);
    ad_dfa *dfa = &w->dfa[(op >> 4) & 1];
    ad_var x = pick(w), y = pick(w), z = pick(w), r;
    ad_pool2d_attrs pool = fuzzed_pool_attrs(w);
    switch (next(w) % 24) {
    case 0: r = ad_tanh(t, x); break;
    case 1: r = ad_relu(t, x); break;
    case 2: r = ad_sigmoid(t, x); break;
    case 3: r = ad_sum(t, x); break;
    case 4: r = ad_mean(t, x); break;
    case 5: r = ad_scale(t, x, ((int)next(w) - 128) / 16.0); break;
    case 6: r = ad_dfa_output(t, dfa, x); break;
    case 7: r = ad_add(t, x, y); break;
    case 8: r = ad_sub(t, x, y); break;
    case 9: r = ad_mul(t, x, y); break;
    case 10: r = ad_bias_add(t, x, y); break;
    case 11: r = ad_mse(t, x, y); break;
    case 12: r = ad_softmax_cross_entropy(t, x, y); break;
    case 13: r = ad_matmul(t, x, y, (op >> 3) & 1, (op >> 4) & 1); break;
    case 14: r = ad_dense_usf(t, x, y); break;
    case 15: r = ad_dfa_hidden(t, dfa, x, y); break;
    case 16: r = ad_dense_fa(t, x, y, z); break;
    case 17: r = ad_dense_sf(t, x, y, z); break;
    case 18: r = ad_flatten(t, x); break;
    case 19: {
        int64_t shape[4] = {extent(w), extent(w), extent(w), extent(w)};
        r = ad_reshape(t, x, (int)(next(w) % 6), shape);
        break;
    }
    case 20: r = ad_max_pool2d(t, x, (op & 32) ? NULL : &pool); break;
    case 21: r = ad_avg_pool2d(t, x, &pool); break;
    case 22: /* one byte more picks among the later ops */
        switch (next(w) % 6) {
        case 0: r = ad_global_avg_pool2d(t, x); break;
        case 1: r = ad_exp(t, x); break;
        case 2: r = ad_log(t, x); break;
        case 3: r = ad_softplus(t, x); break;
        case 4: {
            ad_leaky_relu_attrs lr = {((int)next(w) - 128) / 64.0};
            r = ad_leaky_relu(t, x, (op & 32) ? NULL : &lr);
            break;
        }
        default: r = ad_stop_gradient(t, x); break;
        }
        break;
    default: /* op's bit 6 shares the last case, so the seeds' programs keep their meaning */
        if (op & 64) {
            ad_conv2d_attrs conv = fuzzed_conv_attrs(w);
            r = ad_dfa_conv_hidden(t, dfa, x, y, (op & 32) ? NULL : &conv);
        } else {
            r = ad_dense_kp(t, x, y, z);
        }
        break;
    }
    push(w, t, r);
}

/* conv2d and its feedback forms, which take ad_conv2d_attrs. */
static int is_conv(ad_primal_fn fn)
{
    return fn == ad_op_conv2d || fn == ad_op_conv2d_bias || fn == ad_op_conv2d_fa ||
           fn == ad_op_conv2d_bias_fa || fn == ad_op_conv2d_usf ||
           fn == ad_op_conv2d_bias_usf || fn == ad_op_conv2d_sf || fn == ad_op_conv2d_bias_sf ||
           fn == ad_op_conv2d_kp || fn == ad_op_conv2d_bias_kp ||
           fn == ad_op_conv2d_usf_scaled || fn == ad_op_conv2d_bias_usf_scaled;
}

/* The attribute struct fn reads (matmul, scale, softmax cross-entropy with any
** reduction, valid or not), none, or now and then bytes of a random size, which
** recording must refuse unless the size fits. Never for DFA, whose attributes hold a
** pointer: random bytes there would be the caller's wild pointer, not a library bug;
** DFA into conv layers gets fuzzed conv attributes with one of the world's ad_dfa. */
static void attrs_for(world *w, ad_primal_fn fn, const void **attrs, size_t *size)
{
    static ad_matmul_attrs mm;
    static ad_scale_attrs sc;
    static ad_softmax_ce_attrs ce;
    static ad_conv2d_attrs cv;
    static ad_dfa_conv_attrs dc;
    static ad_reshape_attrs rs;
    static ad_pool2d_attrs pl;
    static ad_clamp_grad_attrs cg;
    static ad_leaky_relu_attrs lr;
    static uint64_t junk[3];
    unsigned b = next(w);
    *attrs = NULL, *size = 0;
    if (b % 8 == 7 && fn != ad_op_dfa_output && fn != ad_op_dfa_hidden &&
        fn != ad_op_dfa_conv_hidden) {
        for (int i = 0; i < 3; i++)
            junk[i] = 0x0101010101010101ull * (b >> 3); /* finite as a double */
        *attrs = junk, *size = (b >> 3) % (sizeof junk + 1);
    } else if (fn == ad_op_matmul && b % 4) {
        mm = (ad_matmul_attrs){(int)(b & 8), (int)(b & 16)}, *attrs = &mm, *size = sizeof mm;
    } else if (fn == ad_op_scale && b % 4) {
        sc = (ad_scale_attrs){(int)b / 8.0 - 16}, *attrs = &sc, *size = sizeof sc;
    } else if (fn == ad_op_softmax_cross_entropy && b % 4) {
        ce = (ad_softmax_ce_attrs){(ad_reduction)((b >> 3) % 5)}, *attrs = &ce, *size = sizeof ce;
    } else if (is_conv(fn) && b % 4) {
        cv = fuzzed_conv_attrs(w), *attrs = &cv, *size = sizeof cv;
    } else if (fn == ad_op_dfa_conv_hidden && b % 4) {
        dc = (ad_dfa_conv_attrs){fuzzed_conv_attrs(w), &w->dfa[(b >> 2) & 1]};
        *attrs = &dc, *size = sizeof dc;
    } else if (fn == ad_op_reshape && b % 4) {
        rs.ndim = (int)(next(w) % 6);
        for (int i = 0; i < AD_MAX_RANK; i++)
            rs.shape[i] = extent(w);
        *attrs = &rs, *size = sizeof rs;
    } else if ((fn == ad_op_max_pool2d || fn == ad_op_avg_pool2d) && b % 4) {
        pl = fuzzed_pool_attrs(w);
        *attrs = &pl, *size = sizeof pl;
    } else if (fn == ad_op_clamp_grad && b % 4) {
        /* quarters in [-4, 4], so lo > hi and lo == hi come up; now and then a NaN */
        unsigned c = next(w);
        cg = (ad_clamp_grad_attrs){(int)(c % 33) / 4.0 - 4.0,
                                   (c & 0x100) ? NAN : (int)((c >> 9) % 33) / 4.0 - 4.0};
        *attrs = &cg, *size = sizeof cg;
    } else if (fn == ad_op_leaky_relu && b % 4) {
        lr = (ad_leaky_relu_attrs){((int)next(w) - 128) / 64.0}, *attrs = &lr, *size = sizeof lr;
    }
}

static void op_call(world *w, unsigned op)
{
    ad_tape *t = tape_of(w, op);
    ad_primal_fn fn = fns[next(w) % N_FNS];
    int n = (int)(next(w) % 11) - 1;
    ad_var in[10];
    for (int i = 0; i < 10; i++)
        in[i] = i < n ? pick(w) : w->v[0];
    const void *attrs;
    size_t size;
    attrs_for(w, fn, &attrs, &size);
    push(w, t, ad_call_as(t, fn, (op & 16) ? NULL : "fuzz_call", (op & 8) ? NULL : in, n,
                          attrs, size));
}

static int on_ready(int index, const ad_tensor *param, const ad_tensor *grad, void *user)
{
    CHECK(index >= 0 && param && grad);
    read_tensor(grad);
    return user && param->size == 1; /* sometimes stops the sweep */
}

static void op_backward(world *w, unsigned op)
{
    ad_tape *t = tape_of(w, op);
    unsigned b = next(w);
    bool usual = !(b & 3); /* otherwise: the empty set, or a gradient set for it */
    ad_sweep_options o = {.use_reference = (b >> 2) & 1};
    ad_grads_on_ready(w->gs, (b & 16) ? on_ready : NULL, (b & 32) ? w : NULL);
    ad_status rc = TRY(ad_backward_ex(t, pick(w), (b & 1) ? w->ps_empty : w->ps,
                                      (b & 2) ? w->gs_empty : w->gs, (b & 8) ? &o : NULL));
    if (rc == AD_OK && usual) {
        for (int p = 0; p < ad_params_count(w->ps); p++)
            if (ad_grads_at(w->gs, p))
                read_tensor(ad_grads_at(w->gs, p));
        const ad_tensor *c = ad_cotangent(t, pick(w));
        if (c)
            read_tensor(c);
    }
}

/* Parameters, fresh gradient sets, and writes to tensors (which make tapes stale). */
static void op_params(world *w, unsigned op)
{
    ad_tensor *x = pick_tensor(w);
    int index = -1;
    double lo = ((int)next(w) - 128) / 8.0, hi = next(w) / 8.0;
    ad_rng r;
    ad_rng_seed(&r, op);
    switch (next(w) % 8) {
    case 0:
        ad_grads_free(w->gs);
        w->gs = NULL;
        CHECK(ad_grads_new(w->ps, &w->gs) == AD_OK);
        break;
    case 1: TRY(ad_descent_step(w->ps, (op & 16) ? w->gs_empty : w->gs, lo)); break;
    case 2: TRY(ad_init_glorot_uniform(x, &r)); break;
    case 3: TRY(ad_init_uniform(x, &r, lo, hi)); break;
    case 4: TRY(ad_sf_draw_magnitudes(x, &r)); break;
    case 5: (void)ad_angle_degrees(x, pick_tensor(w)); break;
    case 6:
        if (x)
            fill(x, op), ad_tensor_touch(x);
        break;
    default:
        if (TRY(ad_params_add(w->ps, x, &index)) == AD_OK)
            CHECK(ad_params_index(w->ps, x) == index && ad_params_at(w->ps, index) == x);
    }
}

static void op_check(world *w)
{
    const ad_tensor *in[AD_MAX_INPUTS + 1];
    ad_primal_fn fn = fns[next(w) % N_FNS];
    int n = (int)(next(w) % (AD_MAX_INPUTS + 2));
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        in[i] = pick_tensor(w);
        if (!in[i] || in[i]->dtype == AD_F32)
            return; /* float64 and int32 leaves only */
        total += in[i]->size;
    }
    if (total > 48 || w->checks++ >= MAX_CHECKS)
        return;
    ad_check_options o = ad_check_defaults();
    o.seed = next(w), o.full_limit = 16;
    ad_check_report rep;
    attrs_for(w, fn, &o.attrs, &o.attrs_size);
    TRY(ad_rule_check_as(fn, "fuzz_check", in, n, &o, &rep));
}

/* A rule built from the input for a function that already has one, without
** AD_REPLACE: it must be refused (malformed, or already registered), never stored. */
static void op_register(world *w)
{
    ad_rule r = {.name = "fuzz rule"};
    ad_primal_fn fn = fns[next(w) % N_FNS];
    unsigned a = next(w);
    r.pullback = (a & 1) ? user_pb : NULL;
    r.n_inputs = (int)(a >> 1) % 11 - 1;
    r.nondiff = next(w);
    r.not_gradient = next(w);
    r.flags = next(w) & 31;
    r.unread = next(w);
    r.inputs[0] = (ad_input_spec){next(w) & 15, next(w) & 63};
    r.attrs_size = next(w) % 24;
    r.attrs_default = (next(w) & 1) ? w : NULL; /* any readable bytes do */
    CHECK(TRY(ad_rule_register_as((a & 128) ? NULL : fn, "fuzz_register", &r, 0)) != AD_OK);
}

static void op_misc(world *w, unsigned op)
{
    ad_tape *t = tape_of(w, op);
    const ad_tensor *x;
    switch (next(w) % 8) {
    case 0: ad_tape_reset(t); break;
    case 1:
        ad_tape_set_grad_enabled(t, op & 16);
        ad_tape_set_memory_saving(t, op & 32);
        ad_tape_set_anomaly_mode(t, op & 64);
        TRY(ad_keep(t, pick(w)));
        break;
    case 2: check_status(ad_tape_print(t, devnull)); break;
    case 3: check_status(ad_tape_print_rule_counts(t, devnull)); break;
    case 4: op_register(w); break;
    case 5: op_check(w); break;
    default:
        if ((x = ad_value(t, pick(w))))
            read_tensor(x);
        (void)ad_tape_get_stats(t);
    }
}

static void step(world *w)
{
    unsigned op = next(w);
    switch (op % 8) {
    case 0: op_tensor(w, op); break;
    case 1: push(w, tape_of(w, op), ad_use(tape_of(w, op), pick_tensor(w))); break;
    case 2: case 3: op_wrapper(w, op); break;
    case 4: op_call(w, op); break;
    case 5: op_backward(w, op); break;
    case 6: op_params(w, op); break;
    default: op_misc(w, op); break;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const ad_rule rules[3] = {
        {.name = "fuzz mixed", .pullback = user_pb, .n_inputs = 2,
         .inputs = {{AD_ACCEPT_FLOAT | AD_ACCEPT_I32, 0},
                    {AD_ACCEPT_F64 | AD_ACCEPT_I32, AD_RANK(0) | AD_RANK(1) | AD_RANK(2)}},
         .nondiff = AD_INPUT(1), .flags = AD_RULE_MIXED_DTYPES},
        {.name = "fuzz ignores dy", .pullback = user_pb, .n_inputs = 1,
         .flags = AD_RULE_IGNORES_DY},
        {.name = "fuzz bad", .pullback = user_bad_pb, .n_inputs = 1},
    };
    CHECK(ad_rule_register(user_mixed, &rules[0]) == AD_OK);
    CHECK(ad_rule_register(user_ignores, &rules[1]) == AD_OK);
    CHECK(ad_rule_register(user_bad, &rules[2]) == AD_OK);
    devnull = fopen("/dev/null", "w");
    CHECK(devnull != NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static world w;
    memset(&w, 0, sizeof w);
    w.p = data, w.n = size, w.nv = 1;
    CHECK(ad_tape_new(&w.tape[0]) == AD_OK && ad_tape_new(&w.tape[1]) == AD_OK);
    CHECK(ad_params_new(&w.ps) == AD_OK && ad_params_new(&w.ps_empty) == AD_OK);
    CHECK(ad_grads_new(w.ps, &w.gs) == AD_OK && ad_grads_new(w.ps_empty, &w.gs_empty) == AD_OK);
    for (int s = 0; s < MAX_STEPS && w.i < w.n; s++)
        step(&w);
    ad_tape_free(w.tape[0]);
    ad_tape_free(w.tape[1]);
    ad_grads_free(w.gs);
    ad_grads_free(w.gs_empty);
    ad_params_free(w.ps);
    ad_params_free(w.ps_empty);
    return 0;
}
