/*
** check.c: ad_rule_check, the checker any user can run on any rule: the entry point,
** its options, the recording of the call, and the order of the checks (each in
** check_structural.c or check_values.c).
**
** It drives the rule the way the sweep does, through a private tape, and checks what
** a pullback can get wrong silently: the beta protocol, linearity, its bounds, and its
** values where there is something to compare them with (central differences for
** gradient slots, the caller's expected pullback for feedback slots). The checker is a
** client of the tape: it sees nodes only through tape_client.h, so the arrows run
** check -> tape -> rules.
*/
#include <math.h>
#include <string.h>

#include "../base/base.h"
#include "check_internal.h"

/* What each slot will get, known before anything runs, so a report that stops early
** still says how every slot would have been checked. */
static void plan_slots(adi_checker *c)
{
    c->rep.n_slots = c->n;
    for (int i = 0; i < c->n; i++) {
        ad_check_slot *s = &c->rep.slot[i];
        s->angle_degrees = NAN;
        if (c->x[i]->dtype == AD_I32)
            s->method = AD_CHECK_SKIPPED_INT32;
        else if (c->rule->nondiff & AD_INPUT(i))
            s->method = AD_CHECK_SKIPPED_NONDIFF;
        else if (adi_chk_is_feedback(c, i))
            s->method = c->o.expected ? AD_CHECK_EXPECTED : AD_CHECK_STRUCTURAL;
        else
            s->method = AD_CHECK_FINITE_DIFFERENCES;
        if (!adi_chk_differentiable(c, i))
            s->outcome = AD_CHECK_SKIPPED;
    }
}

/*
** A rule that ignores dy is run as the sweep runs it, with dy = NULL. If it has a
** signal hook, the signal the hook gives is what its pullback must be linear in;
** without one there is nothing the checker could vary.
*/
static ad_status setup_drive(adi_checker *c)
{
    bool ignores = (c->rule->flags & AD_RULE_IGNORES_DY) != 0;
    c->dy = ignores ? NULL : c->cot;
    c->drive = ignores ? NULL : c->cot;
    if (ignores && c->rule->signal) {
        ad_status rc = adi_node_signal(c->tape, c->node, c->rule->signal, &c->signal);
        if (rc)
            return rc;
        if (!c->signal || c->signal->dtype != AD_F64)
            return ad_fail(AD_ERR_BAD_RULE, "ad_rule_check: rule \"%s\" (%s): its signal "
                           "hook gave %s, not a float64 tensor", c->rule->name, c->fn_name,
                           c->signal ? ad_dtype_name(c->signal->dtype) : "nothing");
        uint64_t rng = c->o.seed * 7u + 3u;
        for (int64_t k = 0; k < c->signal->size; k++)
            ((double *)c->signal->data)[k] = adi_uniform_pm1(&rng);
        c->drive = c->signal;
    }
    if (!c->drive)
        return AD_OK;
    ad_status rc = adi_chk_buffer(c, c->drive, &c->drive_u);
    return rc ? rc : ad_tensor_copy_from(c->drive_u, c->drive);
}

/* The hook's second call, on every way out once it gave a signal. */
static ad_status withdraw_signal(adi_checker *c, ad_status rc)
{
    if (!c->signal)
        return rc;
    ad_status wrc = adi_node_signal(c->tape, c->node, c->rule->signal, &c->signal);
    return rc ? rc : wrc;
}

static ad_status record_call(adi_checker *c)
{
    ad_var v[AD_MAX_INPUTS];
    ad_status rc;
    for (int i = 0; i < c->n; i++) {
        if (!c->in[i])
            return ad_fail(AD_ERR_NULL, "ad_rule_check: input %d is NULL", i);
        if (c->in[i]->dtype != AD_F64 && c->in[i]->dtype != AD_I32)
            return ad_fail(AD_ERR_DTYPE, "ad_rule_check: input %d is %s; the checker runs "
                           "in f64 (i32 for constant leaves)", i,
                           ad_dtype_name(c->in[i]->dtype));
        if ((rc = adi_chk_buffer(c, c->in[i], &c->x[i])) ||
            (rc = ad_tensor_copy_from(c->x[i], c->in[i])))
            return rc;
        v[i] = ad_use_named(c->tape, c->x[i], "checked input");
    }
    plan_slots(c);
    ad_var y = ad_call_as(c->tape, c->fn, c->fn_name, v, c->n, c->o.attrs, c->o.attrs_size);
    if (!ad_var_ok(y))
        return ad_fail(ad_tape_status(c->tape), "%s", ad_tape_error(c->tape));
    c->node = adi_tape_node_of(c->tape, y);
    c->y = ad_value(c->tape, y);
    if (c->y->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "ad_rule_check: %s returned %s for f64 inputs",
                       c->fn_name, ad_dtype_name(c->y->dtype));
    return AD_OK;
}

static ad_status setup(adi_checker *c)
{
    ad_status rc = ad_tape_new(&c->tape);
    if (rc || (rc = ad_tape_new(&c->fd_tape)) || (rc = record_call(c)) ||
        (rc = adi_chk_buffer(c, c->y, &c->y_copy)) ||
        (rc = adi_chk_buffer(c, c->y, &c->cot)) ||
        (rc = ad_tensor_copy_from(c->y_copy, c->y)))
        return rc;
    uint64_t rng = c->o.seed;
    for (int64_t k = 0; k < c->y->size; k++)
        ((double *)c->cot->data)[k] = adi_uniform_pm1(&rng);
    return setup_drive(c);
}

static void passed(adi_checker *c, int slot)
{
    c->rep.slot[slot].outcome = AD_CHECK_PASSED;
    c->rep.slots_checked++;
}

/*
** Every pullback run comes first, for every slot, and finite differences last: the
** probes re-record the call, and a primal may reset state its pullback reads (DFA's
** records clear the output error). A feedback slot is complete before the probes.
*/
static ad_status run_checks(adi_checker *c)
{
    ad_status rc = AD_OK;
    for (int i = 0; rc == AD_OK && i < c->n; i++)
        if (adi_chk_differentiable(c, i))
            rc = adi_chk_structural(c, i);
    if (rc == AD_OK)
        rc = adi_chk_together(c);
    for (int i = 0; rc == AD_OK && i < c->n; i++) {
        if (!adi_chk_differentiable(c, i))
            continue;
        if (adi_chk_is_feedback(c, i) && c->o.expected)
            rc = adi_chk_expected(c, i);
        if (rc == AD_OK)
            rc = adi_chk_angle(c, i);
    }
    for (int i = 0; rc == AD_OK && i < c->n; i++)
        if (adi_chk_differentiable(c, i) && adi_chk_is_feedback(c, i))
            passed(c, i);
    for (int i = 0; rc == AD_OK && i < c->n; i++) {
        if (!adi_chk_differentiable(c, i) || adi_chk_is_feedback(c, i))
            continue;
        if ((rc = adi_chk_finite_differences(c, i)) == AD_OK)
            passed(c, i);
    }
    return rc;
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
    adi_checker c = {.fn_name = fn_name ? fn_name : "(unnamed function)", .fn = fn,
                     .n = n, .in = in};
    c.rep.fn_name = c.fn_name;
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
        return ad_fail(AD_ERR_NO_RULE, "ad_rule_check: no rule registered for %s",
                       c.fn_name);
    rc = setup(&c);
    if (rc == AD_OK)
        rc = run_checks(&c);
    rc = withdraw_signal(&c, rc);
    if (report)
        *report = c.rep;
    ad_tape_free(c.tape);
    ad_tape_free(c.fd_tape);
    return rc;
}
