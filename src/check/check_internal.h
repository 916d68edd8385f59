/*
** check_internal.h (internal): the rule checker's state, shared by its files:
** check.c (the entry point, options, setup, the order of the checks),
** check_structural.c (guarded buffers, pullback runs, the checks any pullback must
** pass), check_values.c (finite differences, the expected pullback, the angle) and
** check_report.c (printing a report).
*/
#ifndef AD_CHECK_INTERNAL_H
#define AD_CHECK_INTERNAL_H

#include <stdbool.h>

#include "ad_check.h"
#include "../tape/tape_client.h"

typedef struct adi_checker {
    const char *fn_name;
    ad_primal_fn fn;
    const ad_rule *rule;
    ad_check_options o;
    const ad_tensor *const *in;  /* the caller's inputs: what the copies must still hold */
    int n;
    ad_tape *tape;               /* holds the recorded call and every buffer */
    ad_tape *fd_tape;            /* re-records the call at perturbed inputs */
    ad_tensor *x[AD_MAX_INPUTS]; /* copies of the inputs, perturbed in place by probes */
    adi_node *node;
    const ad_tensor *y;          /* the recorded output */
    ad_tensor *y_copy;           /* its values, to show that no pullback wrote it */
    ad_tensor *cot;              /* the random output cotangent of the probes */
    const ad_tensor *dy;         /* what the pullbacks get as dy: cot, or NULL when the
                                    rule ignores dy */
    ad_tensor *drive;            /* the cotangent the pullback is linear in: cot, the
                                    signal, or NULL when nothing can be varied */
    ad_tensor *signal;           /* an AD_RULE_IGNORES_DY rule's seeded signal, handed
                                    back to its hook when the check ends */
    ad_tensor *drive_u;          /* drive's values, restored after the linearity runs */
    ad_tensor *g[AD_MAX_INPUTS]; /* each slot's beta = 0 result, asked alone */
    ad_check_report rep;
} adi_checker;

/* Whether a slot is differentiable (float64, not nondiff) and declared feedback. */
bool adi_chk_differentiable(const adi_checker *c, int slot);
bool adi_chk_is_feedback(const adi_checker *c, int slot);

/* AD_ERR_CHECK_FAILED with "ad_rule_check: rule "..." (fn), input <slot>: <text>", and
** the slot marked failed in the report (slot -1: no slot named or marked). */
ad_status adi_chk_fail(adi_checker *c, int slot, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Buffers from the checker's tape: plain, or guarded (guard elements on both sides,
** checked after every run) and filled with `fill`. */
ad_status adi_chk_buffer(adi_checker *c, const ad_tensor *like, ad_tensor **out);
ad_status adi_chk_guarded(adi_checker *c, const ad_tensor *like, double fill,
                          ad_tensor **out);

/* Runs `pullback` on the node with c->dy and the given buffers (all guarded), then
** checks that every guard is intact and that the inputs, the output and the drive
** (which must still hold drive_now's values) were left alone. `who` names the pullback
** in messages, `slot` the slot being checked (-1: all at once). */
ad_status adi_chk_run(adi_checker *c, ad_pullback_fn pullback, const char *who, int slot,
                      ad_tensor *const din[], const float beta[],
                      const ad_tensor *drive_now);

/* check_structural.c: writes, adds and linearity for one slot (sets c->g[slot]); then
** the same values with every slot asked at once. */
ad_status adi_chk_structural(adi_checker *c, int slot);
ad_status adi_chk_together(adi_checker *c);

/* check_values.c: the slot's values against options.expected, the angle to the rule's
** reference, and finite differences. */
ad_status adi_chk_expected(adi_checker *c, int slot);
ad_status adi_chk_angle(adi_checker *c, int slot);
ad_status adi_chk_finite_differences(adi_checker *c, int slot);

#endif /* AD_CHECK_INTERNAL_H */
