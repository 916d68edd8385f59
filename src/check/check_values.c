/*
** check_values.c: a slot's values. A gradient slot against central differences of
** <dy, f(x)>; a feedback slot against the caller's expected pullback, if any; and, for
** information, the angle between the slot and the rule's reference (the true
** gradient), which is never a reason to fail.
*/
#include <math.h>
#include <string.h>

#include "../base/base.h"
#include "check_internal.h"

static bool close_enough(adi_checker *c, int slot, double got, double want)
{
    double scale = fmax(fabs(got), fabs(want));
    double err = fabs(got - want);
    ad_check_slot *s = &c->rep.slot[slot];
    if (scale > 0 && err / scale > s->max_rel_err)
        s->max_rel_err = err / scale;
    if (s->max_rel_err > c->rep.max_rel_err)
        c->rep.max_rel_err = s->max_rel_err;
    return err <= c->o.atol + c->o.rtol * scale; /* false for NaN */
}

static ad_status mismatch(adi_checker *c, int slot, const char *against, int64_t j,
                          double got, double want)
{
    return adi_chk_fail(c, slot, "%s %lld: pullback gives %.10g, %s gives %.10g",
                        j < 0 ? "direction" : "element", (long long)(j < 0 ? -j - 1 : j),
                        got, against, want);
}

/* The expected pullback alone for the slot, beta = 0, into NaN: it must write it all. */
ad_status adi_chk_expected(adi_checker *c, int slot)
{
    ad_tensor *din[AD_MAX_INPUTS] = {0}, *want;
    float beta[AD_MAX_INPUTS] = {0};
    ad_status rc = adi_chk_guarded(c, c->x[slot], NAN, &want);
    din[slot] = want;
    if (rc || (rc = adi_chk_run(c, c->o.expected, "the expected pullback", slot, din,
                                beta, c->drive_u)))
        return rc;
    const double *g = c->g[slot]->data, *w = want->data;
    for (int64_t k = 0; k < want->size; k++) {
        if (isnan(w[k]))
            return adi_chk_fail(c, slot, "the expected pullback left element %lld "
                                "unwritten (it must write the slot it is given)",
                                (long long)k);
        if (!close_enough(c, slot, g[k], w[k]))
            return mismatch(c, slot, "the expected pullback", k, g[k], w[k]);
    }
    c->rep.slot[slot].passed |= AD_CHECKED_VALUES;
    return AD_OK;
}

/*
** The reference runs with beta = 1 into zeros, so a slot it leaves alone (Kolen-
** Pollack's B, whose true gradient is 0) reads as zero: no angle, not applicable.
** A rule that ignores dy gets none either: its reference reads dy, the rule does not.
*/
ad_status adi_chk_angle(adi_checker *c, int slot)
{
    ad_check_slot *s = &c->rep.slot[slot];
    if (!c->rule->reference)
        return AD_OK;
    if (c->rule->flags & AD_RULE_IGNORES_DY) {
        s->angle = AD_CHECK_ANGLE_OWN_SIGNAL;
        return AD_OK;
    }
    ad_tensor *din[AD_MAX_INPUTS] = {0}, *ref;
    float beta[AD_MAX_INPUTS] = {0};
    ad_status rc = adi_chk_guarded(c, c->x[slot], 0.0, &ref);
    din[slot] = ref;
    beta[slot] = 1.0f;
    if (rc || (rc = adi_chk_run(c, c->rule->reference, "the reference pullback", slot,
                                din, beta, c->drive_u)))
        return rc;
    const double *g = c->g[slot]->data, *r = ref->data;
    double dot = 0, gg = 0, rr = 0;
    for (int64_t k = 0; k < ref->size; k++) {
        if (!isfinite(r[k]))
            return adi_chk_fail(c, slot, "the reference pullback wrote %g at element "
                                "%lld", r[k], (long long)k);
        dot += g[k] * r[k];
        gg += g[k] * g[k];
        rr += r[k] * r[k];
    }
    if (rr == 0 || gg == 0) {
        s->angle = rr == 0 ? AD_CHECK_ANGLE_ZERO_REFERENCE : AD_CHECK_ANGLE_ZERO_SLOT;
        return AD_OK;
    }
    double cosine = dot / (sqrt(gg) * sqrt(rr));
    s->angle = AD_CHECK_ANGLE_MEASURED;
    s->angle_degrees = acos(fmin(1.0, fmax(-1.0, cosine))) * (180.0 / acos(-1.0));
    return AD_OK;
}

/* <cot, f(x)> with the inputs as they are now: one forward on the probe tape. */
static ad_status probe(adi_checker *c, double *out)
{
    ad_var v[AD_MAX_INPUTS];
    ad_tape_reset(c->fd_tape);
    for (int i = 0; i < c->n; i++)
        v[i] = ad_use_named(c->fd_tape, c->x[i], "checked input");
    ad_var y = ad_call_as(c->fd_tape, c->fn, c->fn_name, v, c->n, c->o.attrs,
                          c->o.attrs_size);
    if (!ad_var_ok(y))
        return ad_fail(ad_tape_status(c->fd_tape), "%s", ad_tape_error(c->fd_tape));
    const ad_tensor *yt = ad_value(c->fd_tape, y);
    double s = 0.0;
    for (int64_t k = 0; k < yt->size; k++)
        s += ((const double *)c->cot->data)[k] * ((const double *)yt->data)[k];
    *out = s;
    return AD_OK;
}

/*
** Central difference of <cot, f> along direction d (NULL: the unit vector at j). The
** perturbed elements are restored from `orig`, a copy of the input, not by adding
** back, which would let the copy drift by rounding across probes.
*/
static ad_status directional(adi_checker *c, int slot, const double *orig,
                             const double *d, int64_t j, double *out)
{
    double *x = c->x[slot]->data, plus, minus, h = c->o.eps;
    int64_t lo = d ? 0 : j, hi = d ? c->x[slot]->size : j + 1;
    for (int64_t k = lo; k < hi; k++)
        x[k] = orig[k] + h * (d ? d[k] : 1.0);
    ad_status rc = probe(c, &plus);
    for (int64_t k = lo; k < hi; k++)
        x[k] = orig[k] - h * (d ? d[k] : 1.0);
    if (rc == AD_OK)
        rc = probe(c, &minus);
    for (int64_t k = lo; k < hi; k++)
        x[k] = orig[k];
    if (rc == AD_OK)
        *out = (plus - minus) / (2 * h);
    return rc;
}

ad_status adi_chk_finite_differences(adi_checker *c, int slot)
{
    const ad_tensor *g = c->g[slot];
    const double *gd = g->data;
    int64_t n = g->size;
    ad_tensor *orig, *dir;
    ad_status rc = adi_chk_buffer(c, g, &orig);
    if (rc || (rc = ad_tensor_copy_from(orig, c->x[slot])))
        return rc;
    if (n <= c->o.full_limit) {
        for (int64_t j = 0; j < n; j++) {
            double fd;
            if ((rc = directional(c, slot, orig->data, NULL, j, &fd)))
                return rc;
            if (!close_enough(c, slot, gd[j], fd))
                return mismatch(c, slot, "finite differences", j, gd[j], fd);
        }
        c->rep.slot[slot].passed |= AD_CHECKED_VALUES;
        return AD_OK;
    }
    rc = adi_chk_buffer(c, g, &dir);
    uint64_t rng = c->o.seed ^ 0x5bd1e995u ^ (uint64_t)slot;
    for (int t = 0; rc == AD_OK && t < c->o.directions; t++) {
        double *d = dir->data, fd, dot = 0.0;
        for (int64_t k = 0; k < n; k++) {
            d[k] = adi_uniform_pm1(&rng);
            dot += gd[k] * d[k];
        }
        rc = directional(c, slot, orig->data, d, 0, &fd);
        if (rc == AD_OK && !close_enough(c, slot, dot, fd))
            return mismatch(c, slot, "finite differences", -(int64_t)t - 1, dot, fd);
    }
    if (rc == AD_OK)
        c->rep.slot[slot].passed |= AD_CHECKED_VALUES;
    return rc;
}
