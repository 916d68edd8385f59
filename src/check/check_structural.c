/*
** check_structural.c: what every pullback must do whatever its formula. It writes every
** element on beta = 0, adds on beta = 1, is linear in the cotangent it is given, gives
** a slot the same values alone as with the others, and writes nothing but its buffers.
** These are all a feedback slot gets without an expected pullback, so each is written
** to catch its bug on its own, with a message that names the bug.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../base/base.h"
#include "check_internal.h"

/* Guard elements on each side of a buffer: 64 bytes keep the data 64-byte aligned, as
** the arena gives it to pullbacks in a sweep. The pattern is no value a pullback would
** plausibly compute, and is compared bitwise. */
enum { GUARD = 8 };
static const uint64_t guard_bits = 0x5AFEC0DE5AFEC0DEull;

bool adi_chk_differentiable(const adi_checker *c, int slot)
{
    return c->x[slot]->dtype == AD_F64 && !(c->rule->nondiff & AD_INPUT(slot));
}

bool adi_chk_is_feedback(const adi_checker *c, int slot)
{
    return (c->rule->not_gradient & AD_INPUT(slot)) != 0;
}

ad_status adi_chk_fail(adi_checker *c, int slot, const char *fmt, ...)
{
    char what[400], where[32] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (slot >= 0) {
        c->rep.slot[slot].outcome = AD_CHECK_FAILED;
        snprintf(where, sizeof where, ", input %d", slot);
    }
    return ad_fail(AD_ERR_CHECK_FAILED, "ad_rule_check: rule \"%s\" (%s)%s: %s",
                   c->rule->name, c->fn_name, where, what);
}

ad_status adi_chk_buffer(adi_checker *c, const ad_tensor *like, ad_tensor **out)
{
    return adi_tape_alloc_tensor(c->tape, "ad_rule_check", like->dtype, like->ndim,
                                like->shape, out);
}

/* One float64 arena block of GUARD + n + GUARD elements; its descriptor is then made
** to view the middle n in like's shape. */
ad_status adi_chk_guarded(adi_checker *c, const ad_tensor *like, double fill,
                          ad_tensor **out)
{
    int64_t n = like->size;
    ad_tensor *t;
    ad_status rc = adi_tape_alloc_tensor(c->tape, "ad_rule_check", AD_F64, 1,
                                        (const int64_t[]){n + 2 * GUARD}, &t);
    if (rc)
        return rc;
    double *raw = t->data;
    for (int64_t k = 0; k < GUARD; k++) {
        memcpy(raw + k, &guard_bits, sizeof guard_bits);
        memcpy(raw + GUARD + n + k, &guard_bits, sizeof guard_bits);
    }
    for (int64_t k = 0; k < n; k++)
        raw[GUARD + k] = fill;
    rc = ad_tensor_init(t, AD_F64, like->ndim, like->shape, raw + GUARD);
    if (rc == AD_OK)
        *out = t;
    return rc;
}

static bool guards_intact(const ad_tensor *t)
{
    const double *data = t->data, *raw = data - GUARD;
    for (int64_t k = 0; k < GUARD; k++)
        if (memcmp(raw + k, &guard_bits, sizeof guard_bits) ||
            memcmp(data + t->size + k, &guard_bits, sizeof guard_bits))
            return false;
    return true;
}

static bool same_bytes(const ad_tensor *a, const ad_tensor *b)
{
    size_t bytes = (size_t)a->size * ad_dtype_size(a->dtype);
    return bytes == 0 || memcmp(a->data, b->data, bytes) == 0;
}

ad_status adi_chk_run(adi_checker *c, ad_pullback_fn pullback, const char *who, int slot,
                      ad_tensor *const din[], const float beta[],
                      const ad_tensor *drive_now)
{
    ad_status rc = adi_node_pullback(c->tape, c->node, pullback, c->dy, din, beta);
    if (rc)
        return rc;
    for (int i = 0; i < c->n; i++)
        if (din[i] && !guards_intact(din[i]))
            return adi_chk_fail(c, i, "%s wrote outside its buffer (the guard elements "
                                "just before or after it changed)", who);
    for (int i = 0; i < c->n; i++)
        if (!same_bytes(c->x[i], c->in[i]))
            return adi_chk_fail(c, slot, "%s changed input %d (a pullback may write only "
                                "its cotangent buffers)", who, i);
    if (!same_bytes(c->y, c->y_copy))
        return adi_chk_fail(c, slot, "%s changed the output y", who);
    if (c->drive && drive_now && !same_bytes(c->drive, drive_now))
        return adi_chk_fail(c, slot, "%s changed the cotangent it was given", who);
    return AD_OK;
}

/* Writes and adds, from the beta = 0 result g and the beta = 1 result over pre. */
static ad_status judge_beta(adi_checker *c, int slot, const ad_tensor *g,
                            const ad_tensor *pre, const ad_tensor *acc)
{
    const double *g0 = g->data, *p = pre->data, *g1 = acc->data;
    for (int64_t k = 0; k < g->size; k++)
        if (isnan(g0[k]))
            return adi_chk_fail(c, slot, "element %lld left unwritten with beta = 0",
                                (long long)k);
    c->rep.slot[slot].passed |= AD_CHECKED_WRITES;
    for (int64_t k = 0; k < g->size; k++)
        if (!(fabs(g1[k] - (g0[k] + p[k])) <= 1e-12 * (1.0 + fabs(g0[k]) + fabs(p[k]))))
            return adi_chk_fail(c, slot, "with beta = 1 element %lld is %.10g, not %.10g "
                                "+ %.10g (the pre-fill): the pullback overwrites instead "
                                "of adding", (long long)k, g1[k], g0[k], p[k]);
    c->rep.slot[slot].passed |= AD_CHECKED_ADDS;
    return AD_OK;
}

/* pw = p(a u + b v) against a p(u) + b p(v), within rounding of the largest term. */
static ad_status judge_linear(adi_checker *c, int slot, double a, double b,
                              const ad_tensor *pv, const ad_tensor *pw)
{
    const double *pu = c->g[slot]->data, *v = pv->data, *w = pw->data;
    double scale = 0.0;
    for (int64_t k = 0; k < pw->size; k++)
        scale = fmax(scale, fabs(a * pu[k]) + fabs(b * v[k]) + fabs(w[k]));
    for (int64_t k = 0; k < pw->size; k++) {
        double want = a * pu[k] + b * v[k];
        if (!(fabs(w[k] - want) <= 1e-9 * scale))
            return adi_chk_fail(c, slot, "not linear in its cotangent: element %lld is "
                                "%.10g for a u + b v, but a p(u) + b p(v) = %.10g (a = "
                                "%g, b = %g)", (long long)k, w[k], want, a, b);
    }
    c->rep.slot[slot].passed |= AD_CHECKED_LINEAR;
    return AD_OK;
}

/*
** p(v) and p(a u + b v) for a second random cotangent v. The drive is written in place
** (a rule may read its cotangent from anywhere, not only from dy) and restored before
** anything is judged, so later runs see u again.
*/
static ad_status check_linear(adi_checker *c, int slot)
{
    const double a = 0.75, b = -1.5; /* exact in binary; a + b != 1, a != 1 */
    ad_tensor *din[AD_MAX_INPUTS] = {0}, *v, *w, *pv, *pw;
    float beta[AD_MAX_INPUTS] = {0};
    ad_status rc = adi_chk_buffer(c, c->drive, &v);
    if (rc || (rc = adi_chk_buffer(c, c->drive, &w)) ||
        (rc = adi_chk_guarded(c, c->x[slot], NAN, &pv)) ||
        (rc = adi_chk_guarded(c, c->x[slot], NAN, &pw)))
        return rc;
    double *vd = v->data, *wd = w->data, *drive = c->drive->data;
    const double *u = c->drive_u->data;
    uint64_t rng = c->o.seed * 131u + (uint64_t)slot;
    for (int64_t k = 0; k < v->size; k++) {
        vd[k] = adi_uniform_pm1(&rng);
        wd[k] = a * u[k] + b * vd[k];
    }
    size_t bytes = (size_t)v->size * sizeof(double);
    if (bytes)
        memcpy(drive, vd, bytes);
    din[slot] = pv;
    rc = adi_chk_run(c, c->rule->pullback, "the pullback", slot, din, beta, v);
    if (rc == AD_OK) {
        if (bytes)
            memcpy(drive, wd, bytes);
        din[slot] = pw;
        rc = adi_chk_run(c, c->rule->pullback, "the pullback", slot, din, beta, w);
    }
    if (bytes)
        memcpy(drive, u, bytes);
    return rc ? rc : judge_linear(c, slot, a, b, pv, pw);
}

ad_status adi_chk_structural(adi_checker *c, int slot)
{
    const ad_tensor *like = c->x[slot];
    ad_tensor *din[AD_MAX_INPUTS] = {0}, *fresh, *acc, *pre;
    float beta[AD_MAX_INPUTS] = {0};
    ad_status rc = adi_chk_guarded(c, like, NAN, &fresh);
    if (rc || (rc = adi_chk_guarded(c, like, 0.0, &acc)) ||
        (rc = adi_chk_buffer(c, like, &pre)))
        return rc;
    uint64_t rng = c->o.seed * 31u + (uint64_t)slot;
    for (int64_t k = 0; k < like->size; k++)
        ((double *)pre->data)[k] = ((double *)acc->data)[k] = adi_uniform_pm1(&rng);
    din[slot] = fresh;
    if ((rc = adi_chk_run(c, c->rule->pullback, "the pullback", slot, din, beta,
                          c->drive_u)))
        return rc;
    din[slot] = acc;
    beta[slot] = 1.0f;
    if ((rc = adi_chk_run(c, c->rule->pullback, "the pullback", slot, din, beta,
                          c->drive_u)) ||
        (rc = judge_beta(c, slot, fresh, pre, acc)))
        return rc;
    c->g[slot] = fresh;
    if (c->drive && (rc = check_linear(c, slot)))
        return rc;
    c->rep.slot[slot].passed |= AD_CHECKED_BOUNDS;
    return AD_OK;
}

/* Every differentiable slot in one call, beta = 0, against each slot's run alone. */
ad_status adi_chk_together(adi_checker *c)
{
    ad_tensor *din[AD_MAX_INPUTS] = {0};
    float beta[AD_MAX_INPUTS] = {0};
    ad_status rc = AD_OK;
    int asked = 0;
    for (int i = 0; rc == AD_OK && i < c->n; i++)
        if (adi_chk_differentiable(c, i) &&
            (rc = adi_chk_guarded(c, c->x[i], NAN, &din[i])) == AD_OK)
            asked++;
    if (rc || asked == 0) /* no slot to ask for: the sweep would not run it either */
        return rc;
    if ((rc = adi_chk_run(c, c->rule->pullback, "the pullback", -1, din, beta, c->drive_u)))
        return rc;
    for (int i = 0; i < c->n; i++) {
        if (!din[i])
            continue;
        const double *all = din[i]->data, *alone = c->g[i]->data;
        for (int64_t k = 0; k < din[i]->size; k++)
            if (!(fabs(all[k] - alone[k]) <= 1e-12 * (1.0 + fabs(all[k]) + fabs(alone[k]))))
                return adi_chk_fail(c, i, "element %lld is %.10g when every slot is asked "
                                    "at once, %.10g when this slot is asked alone",
                                    (long long)k, all[k], alone[k]);
        c->rep.slot[i].passed |= AD_CHECKED_ALONE;
    }
    return AD_OK;
}
