/*
** check.c: ad_rule_check, the finite-difference checker any user can run on any rule.
**
** It drives the rule the way the sweep does, through a private tape, and checks the
** two contracts a pullback can break silently: the values (against central
** differences, or the reference pullback for feedback slots) and the beta protocol
** (write on beta = 0, add on beta = 1). The checker is a client of the tape: it
** sees nodes only through tape_client.h, so the arrows run check -> tape -> rules.
*/
#include <math.h>
#include <string.h>

#include "../base/base.h"
#include "ad_check.h"
#include "../tape/tape_client.h"

typedef struct checker {
    const char *fn_name;
    ad_primal_fn fn;
    const ad_rule *rule;
    ad_check_options o;
    ad_tape *tape;     /* holds the recorded call and every buffer */
    ad_tape *fd_tape;  /* re-records the call at perturbed inputs */
    ad_tensor *x[AD_MAX_INPUTS]; /* copies of the inputs, perturbed in place */
    int n;
    ad_node *node;
    ad_tensor *dy;
    ad_check_report rep;
} checker;

static ad_status buffer(checker *c, const ad_tensor *like, ad_tensor **out)
{
    return ad_tape_alloc_tensor(c->tape, "ad_rule_check", like->dtype, like->ndim,
                                like->shape, out);
}

static bool close_enough(checker *c, double got, double want)
{
    double scale = fmax(fabs(got), fabs(want));
    double err = fabs(got - want);
    if (scale > 0 && err / scale > c->rep.max_rel_err)
        c->rep.max_rel_err = err / scale;
    return err <= c->o.atol + c->o.rtol * scale; /* false for NaN */
}

/* <dy, f(x)> with input `slot` as it is now: one forward on the scratch tape. */
static ad_status probe(checker *c, double *out)
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
        s += ((const double *)c->dy->data)[k] * ((const double *)yt->data)[k];
    *out = s;
    return AD_OK;
}

/*
** Central difference of <dy, f> along direction d (NULL: the unit vector at j). The
** perturbed elements are restored from `orig`, a copy of the input, not by adding
** back, which would let the copy drift by rounding across probes.
*/
static ad_status directional(checker *c, int slot, const double *orig, const double *d,
                             int64_t j, double *out)
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

static ad_status mismatch(checker *c, int slot, const char *against, int64_t j, double got,
                          double want)
{
    return ad_fail(AD_ERR_CHECK_FAILED, "ad_rule_check: rule \"%s\" (%s), input %d, %s %lld: "
                   "pullback gives %.10g, %s gives %.10g", c->rule->name, c->fn_name, slot,
                   j < 0 ? "direction" : "element", (long long)(j < 0 ? -j - 1 : j), got,
                   against, want);
}

static ad_status against_finite_differences(checker *c, int slot, const ad_tensor *g)
{
    const double *gd = g->data;
    int64_t n = g->size;
    ad_tensor *orig, *dir;
    ad_status rc = buffer(c, g, &orig);
    if (rc || (rc = ad_tensor_copy_from(orig, c->x[slot])))
        return rc;
    if (n <= c->o.full_limit) {
        for (int64_t j = 0; j < n; j++) {
            double fd;
            rc = directional(c, slot, orig->data, NULL, j, &fd);
            if (rc)
                return rc;
            if (!close_enough(c, gd[j], fd))
                return mismatch(c, slot, "finite differences", j, gd[j], fd);
        }
        return AD_OK;
    }
    rc = buffer(c, g, &dir);
    uint64_t rng = c->o.seed ^ 0x5bd1e995u ^ (uint64_t)slot;
    for (int t = 0; rc == AD_OK && t < c->o.directions; t++) {
        double *d = dir->data, fd, dot = 0.0;
        for (int64_t k = 0; k < n; k++) {
            d[k] = ad_uniform_pm1(&rng);
            dot += gd[k] * d[k];
        }
        rc = directional(c, slot, orig->data, d, 0, &fd);
        if (rc == AD_OK && !close_enough(c, dot, fd))
            return mismatch(c, slot, "finite differences", -(int64_t)t - 1, dot, fd);
    }
    return rc;
}

static ad_status against_reference(checker *c, int slot, const ad_tensor *g)
{
    ad_pullback_fn ref = c->o.reference ? c->o.reference : c->rule->reference;
    if (!ref)
        return ad_fail(AD_ERR_CHECK_FAILED, "ad_rule_check: rule \"%s\" (%s), input %d is "
                       "declared not a gradient but there is no reference pullback",
                       c->rule->name, c->fn_name, slot);
    ad_tensor *din[AD_MAX_INPUTS] = {0}, *want;
    float beta[AD_MAX_INPUTS] = {0};
    ad_status rc = buffer(c, g, &want);
    din[slot] = want;
    if (rc || (rc = ad_node_pullback(c->tape, c->node, ref, c->dy, din, beta)))
        return rc;
    for (int64_t j = 0; j < g->size; j++) {
        double a = ((double *)g->data)[j], b = ((double *)want->data)[j];
        if (!close_enough(c, a, b))
            return mismatch(c, slot, "the reference pullback", j, a, b);
    }
    return AD_OK;
}

/*
** Runs the rule's pullback for `slot` alone, into a NaN-filled buffer with beta = 0
** and into a random pre-fill with beta = 1; *g gets the beta = 0 result.
*/
static ad_status beta_protocol(checker *c, int slot, ad_tensor **g)
{
    ad_tensor *din[AD_MAX_INPUTS] = {0}, *fresh, *acc, *prefill;
    float beta[AD_MAX_INPUTS] = {0};
    const ad_tensor *like = c->x[slot];
    ad_status rc = buffer(c, like, &fresh);
    if (rc || (rc = buffer(c, like, &acc)) || (rc = buffer(c, like, &prefill)))
        return rc;
    uint64_t rng = c->o.seed * 31u + (uint64_t)slot;
    for (int64_t k = 0; k < like->size; k++) {
        ((double *)fresh->data)[k] = NAN;
        ((double *)prefill->data)[k] = ((double *)acc->data)[k] = ad_uniform_pm1(&rng);
    }
    din[slot] = fresh;
    if ((rc = ad_node_pullback(c->tape, c->node, c->rule->pullback, c->dy, din, beta)))
        return rc;
    din[slot] = acc;
    beta[slot] = 1.0f;
    if ((rc = ad_node_pullback(c->tape, c->node, c->rule->pullback, c->dy, din, beta)))
        return rc;
    for (int64_t k = 0; k < like->size; k++) {
        double g0 = ((double *)fresh->data)[k], pre = ((double *)prefill->data)[k];
        double g1 = ((double *)acc->data)[k];
        if (isnan(g0))
            return ad_fail(AD_ERR_CHECK_FAILED, "ad_rule_check: rule \"%s\" (%s), input %d: "
                           "element %lld left unwritten with beta = 0", c->rule->name,
                           c->fn_name, slot, (long long)k);
        if (fabs(g1 - (g0 + pre)) > 1e-12 * (1.0 + fabs(g0) + fabs(pre)))
            return ad_fail(AD_ERR_CHECK_FAILED, "ad_rule_check: rule \"%s\" (%s), input %d: "
                           "with beta = 1 element %lld is %.10g, not %.10g + %.10g (the "
                           "pre-fill): the pullback overwrites instead of adding",
                           c->rule->name, c->fn_name, slot, (long long)k, g1, g0, pre);
    }
    *g = fresh;
    return AD_OK;
}

static bool slot_is_feedback(const ad_rule *r, int slot)
{
    return (r->not_gradient & AD_INPUT(slot)) != 0;
}

static ad_status check_slots(checker *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->x[i]->dtype != AD_F64 || (c->rule->nondiff & AD_INPUT(i)))
            continue;
        ad_tensor *g = NULL;
        ad_status rc = beta_protocol(c, i, &g);
        if (rc == AD_OK)
            rc = slot_is_feedback(c->rule, i) ? against_reference(c, i, g)
                                              : against_finite_differences(c, i, g);
        if (rc)
            return rc;
        c->rep.slots_checked++;
    }
    return AD_OK;
}

static ad_status setup(checker *c, const ad_tensor *const in[])
{
    ad_status rc = ad_tape_new(&c->tape);
    if (rc || (rc = ad_tape_new(&c->fd_tape)))
        return rc;
    ad_var v[AD_MAX_INPUTS];
    for (int i = 0; i < c->n; i++) {
        if (!in[i])
            return ad_fail(AD_ERR_NULL, "ad_rule_check: input %d is NULL", i);
        if (in[i]->dtype != AD_F64 && in[i]->dtype != AD_I32)
            return ad_fail(AD_ERR_DTYPE, "ad_rule_check: input %d is %s; the checker runs "
                           "in f64 (i32 for constant leaves)", i, ad_dtype_name(in[i]->dtype));
        if ((rc = buffer(c, in[i], &c->x[i])) || (rc = ad_tensor_copy_from(c->x[i], in[i])))
            return rc;
        v[i] = ad_use_named(c->tape, c->x[i], "checked input");
    }
    ad_var y = ad_call_as(c->tape, c->fn, c->fn_name, v, c->n, c->o.attrs, c->o.attrs_size);
    if (!ad_var_ok(y))
        return ad_fail(ad_tape_status(c->tape), "%s", ad_tape_error(c->tape));
    c->node = ad_tape_node_of(c->tape, y);
    const ad_tensor *yt = ad_value(c->tape, y);
    if (yt->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "ad_rule_check: %s returned %s for f64 inputs",
                       c->fn_name, ad_dtype_name(yt->dtype));
    if ((rc = buffer(c, yt, &c->dy)))
        return rc;
    uint64_t rng = c->o.seed;
    for (int64_t k = 0; k < yt->size; k++)
        ((double *)c->dy->data)[k] = ad_uniform_pm1(&rng);
    return AD_OK;
}

ad_check_options ad_check_defaults(void)
{
    return (ad_check_options){.rtol = 1e-6, .atol = 1e-8, .eps = 1e-5, .full_limit = 256,
                              .directions = 8, .seed = 1};
}

static ad_status invalid_option(const char *field, double value, const char *must)
{
    return ad_fail(AD_ERR_INVALID, "ad_rule_check: options.%s is %g; it must be %s", field,
                   value, must);
}

/* Every value is taken as given (0 included), so only values that cannot mean anything
** are refused; !(x >= 0) is true for NaN as well as for negative x. */
static ad_status validate_options(const ad_check_options *o)
{
    if (!(o->rtol >= 0) || isinf(o->rtol))
        return invalid_option("rtol", o->rtol, "finite and >= 0");
    if (!(o->atol >= 0) || isinf(o->atol))
        return invalid_option("atol", o->atol, "finite and >= 0");
    if (!(o->eps > 0) || isinf(o->eps))
        return invalid_option("eps", o->eps, "finite and > 0");
    if (o->full_limit < 0)
        return invalid_option("full_limit", (double)o->full_limit, ">= 0");
    if (o->directions < 1)
        return invalid_option("directions", o->directions, ">= 1");
    if (o->attrs_size > 0 && !o->attrs)
        return ad_fail(AD_ERR_INVALID, "ad_rule_check: options.attrs is NULL with "
                       "attrs_size %zu", o->attrs_size);
    return AD_OK;
}

ad_status ad_rule_check_as(ad_primal_fn fn, const char *fn_name,
                           const ad_tensor *const in[], int n,
                           const ad_check_options *opts, ad_check_report *report)
{
    checker c = {.fn_name = fn_name ? fn_name : "(unnamed function)", .fn = fn, .n = n};
    c.o = opts ? *opts : ad_check_defaults();
    if (report)
        *report = c.rep;
    if (!fn || !in)
        return ad_fail(AD_ERR_NULL, "ad_rule_check: %s is NULL", fn ? "in" : "fn");
    if (n < 1 || n > AD_MAX_INPUTS)
        return ad_fail(AD_ERR_ARITY, "ad_rule_check: %d inputs (1..%d allowed)", n,
                       AD_MAX_INPUTS);
    ad_status rc = validate_options(&c.o);
    if (rc)
        return rc;
    c.rule = ad_rule_find(fn);
    if (!c.rule)
        return ad_fail(AD_ERR_NO_RULE, "ad_rule_check: no rule registered for %s", c.fn_name);
    rc = setup(&c, in);
    if (rc == AD_OK)
        rc = check_slots(&c);
    if (report)
        *report = c.rep;
    ad_tape_free(c.tape);
    ad_tape_free(c.fd_tape);
    return rc;
}
