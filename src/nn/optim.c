/*
** optim.c: optimisers (descent, momentum, Nesterov, Adam, AdamW, RMSprop) with
** global-norm clipping and weight decay, following PyTorch's published update
** equations: torch.nn.utils.clip_grad_norm_, torch.optim.SGD (dampening 0),
** torch.optim.Adam and torch.optim.AdamW (amsgrad off), torch.optim.RMSprop, all in
** their single-tensor form.
**
** State is arrays by dense parameter index, outside any tape: one allocation per
** parameter holding the velocity (momentum, Nesterov), Adam's two moments or
** RMSprop's one to three buffers back to back, in the parameter's own dtype, plus a
** per-parameter step count. It is made in ad_optim_new for the parameters present then
** and grown in ad_optim_step only when parameters were added since, so a steady-state
** step allocates nothing.
*/
#include <math.h>
#include <string.h>

#include "optim_internal.h"

typedef adi_optim_slot slot;

/* Per-parameter coefficients of one update; Adam's depend on the parameter's count. */
typedef struct coef {
    ad_optim_kind kind;
    double lr, mu, b1, b2, eps, alpha; /* alpha: RMSprop's smoothing */
    double scale;  /* clipping factor applied to the gradient, 1 when not clipping */
    double wd;     /* coupled decay added to the gradient (0 for AdamW) */
    double shrink; /* AdamW's decoupled decay factor 1 - lr wd (1 otherwise) */
    double step_size, bc2_sqrt; /* Adam: lr / (1 - b1^t), sqrt(1 - b2^t) */
} coef;

/*
** One update over n elements of one dtype, d = scale g + wd p being the decayed,
** clipped gradient:
**   descent   p -= lr d
**   momentum  m = mu m + d; p -= lr m            (m starts at 0, so step 1 gives m = d)
**   Nesterov  m = mu m + d; p -= lr (d + mu m)
**   Adam(W)   p *= shrink; m = b1 m + (1-b1) d; v = b2 v + (1-b2) d^2;
**             p -= step_size m / (sqrt(v) / bc2_sqrt + eps)
** f32 parameters compute in f32 with f32 state, as PyTorch does.
*/
#define DEFINE_UPDATE(T, NAME, SQRT)                                                     \
    static void NAME(const coef *c, T *restrict p, const T *restrict g, T *restrict m,  \
                     T *restrict v, int64_t n)                                           \
    {                                                                                    \
        const T lr = (T)c->lr, sc = (T)c->scale, wd = (T)c->wd, mu = (T)c->mu;           \
        const T b1 = (T)c->b1, b2 = (T)c->b2, eps = (T)c->eps, shrink = (T)c->shrink;    \
        const T ss = (T)c->step_size, bc2s = (T)c->bc2_sqrt;                             \
        switch (c->kind) {                                                               \
        case AD_OPT_DESCENT:                                                             \
            for (int64_t k = 0; k < n; k++)                                              \
                p[k] -= lr * (sc * g[k] + wd * p[k]);                                    \
            break;                                                                       \
        case AD_OPT_MOMENTUM:                                                            \
            for (int64_t k = 0; k < n; k++) {                                            \
                m[k] = mu * m[k] + (sc * g[k] + wd * p[k]);                              \
                p[k] -= lr * m[k];                                                       \
            }                                                                            \
            break;                                                                       \
        case AD_OPT_NESTEROV:                                                            \
            for (int64_t k = 0; k < n; k++) {                                            \
                T d = sc * g[k] + wd * p[k];                                             \
                m[k] = mu * m[k] + d;                                                    \
                p[k] -= lr * (d + mu * m[k]);                                            \
            }                                                                            \
            break;                                                                       \
        case AD_OPT_ADAM:                                                                \
        case AD_OPT_ADAMW:                                                               \
            for (int64_t k = 0; k < n; k++) {                                            \
                p[k] *= shrink;                                                          \
                T d = sc * g[k] + wd * p[k];                                             \
                m[k] = b1 * m[k] + (1 - b1) * d;                                         \
                v[k] = b2 * v[k] + (1 - b2) * d * d;                                     \
                p[k] -= ss * m[k] / (SQRT(v[k]) / bc2s + eps);                           \
            }                                                                            \
            break;                                                                       \
        case AD_OPT_RMSPROP: /* rmsprop_f32, rmsprop_f64 */                              \
            break;                                                                       \
        }                                                                                \
    }

DEFINE_UPDATE(float, update_f32, sqrtf)
DEFINE_UPDATE(double, update_f64, sqrt)

/*
** RMSprop over n elements, d = scale g + wd p, as torch.optim.RMSprop orders it:
**   v = alpha v + (1-alpha) d^2
**   centered: a = alpha a + (1-alpha) d; den = sqrt(v - a^2) + eps; else sqrt(v) + eps
**   momentum: b = mu b + d / den; p -= lr b;  otherwise p -= lr d / den
** a and b are NULL when not kept.
*/
#define DEFINE_RMSPROP(T, NAME, SQRT)                                                    \
    static void NAME(const coef *c, T *restrict p, const T *restrict g, T *restrict v,  \
                     T *restrict b, T *restrict a, int64_t n)                            \
    {                                                                                    \
        const T lr = (T)c->lr, sc = (T)c->scale, wd = (T)c->wd, mu = (T)c->mu;           \
        const T al = (T)c->alpha, al1 = (T)(1.0 - c->alpha), eps = (T)c->eps;            \
        for (int64_t k = 0; k < n; k++) {                                                \
            T d = sc * g[k] + wd * p[k];                                                 \
            v[k] = al * v[k] + al1 * d * d;                                              \
            T den;                                                                       \
            if (a) {                                                                     \
                a[k] = al * a[k] + al1 * d;                                              \
                den = SQRT(v[k] - a[k] * a[k]) + eps;                                    \
            } else {                                                                     \
                den = SQRT(v[k]) + eps;                                                   \
            }                                                                            \
            if (b) {                                                                     \
                b[k] = mu * b[k] + d / den;                                              \
                p[k] -= lr * b[k];                                                       \
            } else {                                                                     \
                p[k] -= lr * d / den;                                                    \
            }                                                                            \
        }                                                                                \
    }

DEFINE_RMSPROP(float, rmsprop_f32, sqrtf)
DEFINE_RMSPROP(double, rmsprop_f64, sqrt)

int adi_optim_buffers(const ad_optim_config *c)
{
    switch (c->kind) {
    case AD_OPT_DESCENT: return 0;
    case AD_OPT_MOMENTUM:
    case AD_OPT_NESTEROV: return 1;
    case AD_OPT_ADAM:
    case AD_OPT_ADAMW: return 2;
    case AD_OPT_RMSPROP: return 1 + (c->momentum > 0.0) + (c->centered != 0);
    }
    return 0;
}

/* Zeroed state for parameter p; false when the allocation fails or overflows. */
static bool slot_make(const ad_optim_config *c, const ad_tensor *p, slot *s)
{
    size_t per, bytes;
    int k = adi_optim_buffers(c);
    *s = (slot){0};
    if (k == 0)
        return true;
    if (!adi_size_mul((size_t)p->size, ad_dtype_size(p->dtype), &per) ||
        !adi_size_mul(per, (size_t)k, &bytes))
        return false;
    s->b[0] = adi_calloc(1, bytes);
    if (!s->b[0])
        return false;
    for (int j = 1; j < k; j++)
        s->b[j] = (char *)s->b[j - 1] + per;
    return true;
}

ad_status adi_optim_ensure_state(ad_optim *o, const char *what)
{
    int n = ad_params_count(o->ps);
    if (n <= o->n)
        return AD_OK;
    slot *slots = adi_calloc((size_t)n, sizeof *slots);
    int made = o->n;
    if (slots) {
        if (o->n > 0)
            memcpy(slots, o->slots, (size_t)o->n * sizeof *slots);
        while (made < n && slot_make(&o->cfg, ad_params_at(o->ps, made), &slots[made]))
            made++;
    }
    if (!slots || made < n) {
        for (int i = o->n; slots && i < made; i++)
            ad_free(slots[i].b[0]);
        ad_free(slots);
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory for the state of %d parameters",
                       what, n);
    }
    ad_free(o->slots);
    o->slots = slots;
    o->n = n;
    return AD_OK;
}

static ad_status bad_field(const char *field, double x, const char *range)
{
    return ad_fail(AD_ERR_INVALID, "ad_optim_new: %s = %g is outside %s", field, x, range);
}

/* The values ad_nn.h documents, for every kind (fields a kind does not read are set
** too, so changing .kind afterwards keeps sensible values). RMSprop's momentum is
** torch.optim.RMSprop's 0, since for RMSprop it adds a buffer and changes the method. */
ad_optim_config ad_optim_defaults(ad_optim_kind kind)
{
    return (ad_optim_config){.kind = kind, .lr = 0.01,
                             .momentum = kind == AD_OPT_RMSPROP ? 0.0 : 0.9, .beta1 = 0.9,
                             .beta2 = 0.999, .eps = 1e-8, .alpha = 0.99};
}

/* Checks every field whatever the kind (torch.optim validates every argument too), as
** given: 0 is a value, not "default". eps divides only in Adam's update, so only Adam
** and AdamW need it positive. NaN fails every range. */
static ad_status validate_config(const ad_optim_config *c)
{
    bool adam = c->kind == AD_OPT_ADAM || c->kind == AD_OPT_ADAMW;
    if ((unsigned)c->kind > (unsigned)AD_OPT_RMSPROP)
        return ad_fail(AD_ERR_INVALID, "ad_optim_new: kind %d is not an ad_optim_kind",
                       (int)c->kind);
    if (!(c->lr >= 0.0 && isfinite(c->lr)))
        return bad_field("lr", c->lr, "[0, inf)");
    if (!(c->momentum >= 0.0 && c->momentum < 1.0))
        return bad_field("momentum", c->momentum, "[0, 1)");
    if (!(c->beta1 >= 0.0 && c->beta1 < 1.0))
        return bad_field("beta1", c->beta1, "[0, 1)");
    if (!(c->beta2 >= 0.0 && c->beta2 < 1.0))
        return bad_field("beta2", c->beta2, "[0, 1)");
    if (!((adam ? c->eps > 0.0 : c->eps >= 0.0) && isfinite(c->eps)))
        return bad_field("eps", c->eps, adam ? "(0, inf) for Adam and AdamW" : "[0, inf)");
    if (!(c->weight_decay >= 0.0 && isfinite(c->weight_decay)))
        return bad_field("weight_decay", c->weight_decay, "[0, inf)");
    if (!(c->clip_norm >= 0.0 && isfinite(c->clip_norm)))
        return bad_field("clip_norm", c->clip_norm, "[0, inf)");
    if (!(c->alpha >= 0.0 && c->alpha < 1.0))
        return bad_field("alpha", c->alpha, "[0, 1)");
    return AD_OK;
}

ad_status ad_optim_new(const ad_params *ps, const ad_optim_config *cfg, ad_optim **out)
{
    if (!ps || !cfg || !out)
        return ad_fail(AD_ERR_NULL, "ad_optim_new: %s is NULL",
                       !ps ? "parameter set" : !cfg ? "config" : "out");
    ad_status rc = validate_config(cfg);
    if (rc)
        return rc;
    ad_optim *o = adi_calloc(1, sizeof *o);
    if (!o)
        return ad_fail(AD_ERR_NOMEM, "ad_optim_new: out of memory");
    o->ps = ps;
    o->cfg = *cfg;
    rc = adi_optim_ensure_state(o, "ad_optim_new");
    if (rc) {
        ad_optim_free(o);
        return rc;
    }
    *out = o;
    return AD_OK;
}

void ad_optim_free(ad_optim *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n; i++)
        ad_free(o->slots[i].b[0]);
    ad_free(o->slots);
    ad_free(o);
}

ad_status ad_optim_set_lr(ad_optim *o, double lr)
{
    if (!o)
        return ad_fail(AD_ERR_NULL, "ad_optim_set_lr: optimiser is NULL");
    if (!(lr >= 0.0 && isfinite(lr)))
        return ad_fail(AD_ERR_INVALID, "ad_optim_set_lr: lr = %g is outside [0, inf)", lr);
    o->cfg.lr = lr;
    return AD_OK;
}

/* Sum of squares in double whatever the dtype, so f32 gradients lose nothing. */
static double sum_squares(const ad_tensor *g)
{
    double s = 0.0;
    if (g->dtype == AD_F32) {
        const float *x = g->data;
        for (int64_t k = 0; k < g->size; k++)
            s += (double)x[k] * (double)x[k];
    } else {
        const double *x = g->data;
        for (int64_t k = 0; k < g->size; k++)
            s += x[k] * x[k];
    }
    return s;
}

double ad_grads_global_norm(const ad_grads *gs)
{
    double s = 0.0;
    for (int i = 0; i < ad_params_count(ad_grads_params(gs)); i++) {
        const ad_tensor *g = ad_grads_at(gs, i);
        if (g)
            s += sum_squares(g);
    }
    return sqrt(s);
}

/* The coefficients every parameter shares this step. */
static coef step_coef(const ad_optim *o, const ad_grads *gs)
{
    const ad_optim_config *c = &o->cfg;
    coef k = {.kind = c->kind, .lr = c->lr, .mu = c->momentum, .b1 = c->beta1,
              .b2 = c->beta2, .eps = c->eps, .alpha = c->alpha, .scale = 1.0,
              .wd = c->weight_decay, .shrink = 1.0};
    /* clip_grad_norm_: factor clip / (norm + 1e-6), clamped to 1. A non-finite norm
    ** gives a NaN or zero factor and non-finite steps, as in PyTorch. */
    if (c->clip_norm > 0.0) {
        double f = c->clip_norm / (ad_grads_global_norm(gs) + 1e-6);
        k.scale = f < 1.0 ? f : 1.0;
    }
    if (c->kind == AD_OPT_ADAMW) {
        k.shrink = 1.0 - c->lr * c->weight_decay;
        k.wd = 0.0;
    }
    return k;
}

ad_status ad_optim_step(ad_optim *o, const ad_grads *gs)
{
    if (!o || !gs)
        return ad_fail(AD_ERR_NULL, "ad_optim_step: %s is NULL",
                       o ? "gradient set" : "optimiser");
    if (ad_grads_params(gs) != o->ps)
        return ad_fail(AD_ERR_INVALID, "ad_optim_step: the gradient set was made for "
                       "another parameter set");
    ad_status rc = adi_optim_ensure_state(o, "ad_optim_step");
    if (rc)
        return rc;
    coef k = step_coef(o, gs);
    bool adam = o->cfg.kind == AD_OPT_ADAM || o->cfg.kind == AD_OPT_ADAMW;
    for (int i = 0; i < ad_params_count(o->ps); i++) {
        const ad_tensor *g = ad_grads_at(gs, i);
        if (!g)
            continue;
        ad_tensor *p = ad_params_at(o->ps, i);
        slot *s = &o->slots[i];
        s->steps++;
        if (adam) {
            double t = (double)s->steps;
            k.step_size = o->cfg.lr / (1.0 - pow(o->cfg.beta1, t));
            k.bc2_sqrt = sqrt(1.0 - pow(o->cfg.beta2, t));
        }
        if (o->cfg.kind == AD_OPT_RMSPROP) {
            void *b = o->cfg.momentum > 0.0 ? s->b[1] : NULL;
            void *a = o->cfg.centered ? s->b[b ? 2 : 1] : NULL;
            if (p->dtype == AD_F32)
                rmsprop_f32(&k, p->data, g->data, s->b[0], b, a, p->size);
            else
                rmsprop_f64(&k, p->data, g->data, s->b[0], b, a, p->size);
        } else if (p->dtype == AD_F32) {
            update_f32(&k, p->data, g->data, s->b[0], s->b[1], p->size);
        } else {
            update_f64(&k, p->data, g->data, s->b[0], s->b[1], p->size);
        }
        ad_tensor_touch(p);
    }
    return AD_OK;
}
