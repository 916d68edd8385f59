/*
** ad_check.h: checking a rule, in float64.
**
** ad_rule_check runs fn forward once on copies of the given float64 inputs (int32 for
** constant leaves), draws a random output cotangent dy, and checks the registered
** rule's pullback slot by slot. A slot is differentiable unless the rule declares it
** nondiff or its input is int32; the others are skipped.
**
** Example (fragment):
**     const ad_tensor *in[3] = {&W, &X, &B};       // float64 copies of a layer's inputs
**     ad_check_report report;
**     ad_status rc = ad_rule_check(my_matmul, in, 3, NULL, &report);  // the defaults
**     ad_check_report_print(&report, stdout);      // what was checked, slot by slot
**
**     ad_check_options o = ad_check_defaults();    // to compare FA's dX with dY B too:
**     o.expected = my_dy_times_b;                  // a pullback of your own
**     rc = ad_rule_check(my_matmul, in, 3, &o, &report);
**
** Every differentiable slot gets the checks that hold for any pullback, whatever its
** formula (the structural checks; each is a bit of ad_check_slot.passed):
**   AD_CHECKED_WRITES  with beta = 0 into a NaN-filled buffer, every element is written;
**   AD_CHECKED_ADDS    with beta = 1 into a random pre-fill, the result is the pre-fill
**                      plus the beta = 0 result (a pullback that overwrites instead of
**                      adding is the silent wrong-gradient bug);
**   AD_CHECKED_LINEAR  p(a u + b v) = a p(u) + b p(v) for cotangents u = dy and a random
**                      v, a = 0.75, b = -1.5 (a + b != 1, so an added constant shows);
**   AD_CHECKED_ALONE   the slot gets the same values asked alone as when every
**                      differentiable slot is asked in one call;
**   AD_CHECKED_BOUNDS  guard bytes before and after every buffer stay as they were, and
**                      the inputs, the output and dy keep their values.
** These allow float64 rounding only: 1e-12 relative for WRITES/ADDS/ALONE, 1e-9 of the
** largest magnitude in the slot for LINEAR.
**
** Then the values (AD_CHECKED_VALUES), by slot kind:
**   a gradient slot (not in the rule's not_gradient) is compared with the true
**     vector-Jacobian product dy' J by central differences: over every coordinate when
**     the input has at most full_limit elements, else along `directions` random
**     directions d (entries in [-1, 1)), comparing <pullback, d> with the difference;
**   a feedback slot (in not_gradient) has no ground truth: it is compared with
**     options.expected when the caller gives one (what FA's dX should be: dY B), and
**     otherwise gets the structural checks only. The rule's reference is never used as
**     the expected value: it is the true gradient, which a feedback slot differs from
**     on purpose.
** An element passes when |got - want| <= atol + rtol * max(|got|, |want|).
**
** Where the rule has a reference pullback, each slot's report also gives the angle in
** degrees between the rule's result and the reference's for the same dy (FA's input
** slot: between dY B and dY W; 0 when B = W, 180 when B = -W). The reference runs with
** beta = 1 into zeros, so a slot it does not write reads as zero. A zero reference
** (Kolen-Pollack's B, whose true gradient is 0) has no angle: that is reported as not
** applicable, never as a failure. The angle is information, not a criterion.
**
** A rule with AD_RULE_IGNORES_DY is run with dy = NULL, as a sweep runs it, and no
** angle is measured (its reference reads dy, the rule something else). What it reads
** instead (DFA's output error e) comes from the rule's signal hook (ad_rule.signal, see
** ad_rule.h): the checker asks the hook for a signal buffer, fills it with random
** values, checks LINEAR in the signal instead of dy, and hands it back when it ends,
** so ad_op_dfa_hidden is checked alone with nothing but the ad_dfa its calls pass as
** attrs. Without a hook the pullback runs with whatever state it finds (the caller may
** set it up) and LINEAR is not checked. The expected pullback, if any, runs in the
** same state (it can read the signal as the rule does).
**
** The check stops at the first failure and returns it; the report says how far it got.
** The checker allocates only from two private tapes (their arenas), freed before it
** returns.
*/
#ifndef AD_CHECK_H
#define AD_CHECK_H

#include <stdio.h>
#include "ad_rule.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
** Options: start from ad_check_defaults() and change what you need. Every value is
** used as given (an explicit 0 means 0); a NULL options pointer means the defaults.
*/
typedef struct ad_check_options {
    double rtol;             /* relative tolerance; default 1e-6; finite, >= 0 */
    double atol;             /* absolute tolerance; default 1e-8; finite, >= 0 */
    double eps;              /* finite-difference step; default 1e-5; finite, > 0 */
    int64_t full_limit;      /* every coordinate up to this many elements, random
                                directions above; default 256; >= 0 */
    int directions;          /* random directions for larger inputs; default 8; >= 1 */
    uint64_t seed;           /* for dy, pre-fills and directions; default 1; any value */
    ad_pullback_fn expected; /* optional: what the feedback (not_gradient) slots should
                                equal, called like the rule's pullback (same context,
                                inputs, output and dy), one slot at a time with
                                beta = 0; it must write the slot it is given. NULL
                                (default): feedback slots get the structural checks only */
    const void *attrs;       /* passed to fn and checked against the rule, as ad_call_as
                                does (NULL: the rule's defaults); default NULL */
    size_t attrs_size;       /* bytes at attrs; default 0; nonzero needs attrs */
} ad_check_options;

/* The defaults above. */
AD_API ad_check_options ad_check_defaults(void);

/* How a slot's values were judged, or why it was skipped. */
typedef enum ad_check_method {
    AD_CHECK_SKIPPED_NONDIFF = 0, /* in the rule's nondiff: never asked for */
    AD_CHECK_SKIPPED_INT32,       /* an int32 input: a constant leaf */
    AD_CHECK_FINITE_DIFFERENCES,  /* a gradient slot */
    AD_CHECK_EXPECTED,            /* a feedback slot, against options.expected */
    AD_CHECK_STRUCTURAL           /* a feedback slot without options.expected */
} ad_check_method;

/* Bits of ad_check_slot.passed (see the top of this header). */
#define AD_CHECKED_WRITES 1u
#define AD_CHECKED_ADDS 2u
#define AD_CHECKED_LINEAR 4u
#define AD_CHECKED_ALONE 8u
#define AD_CHECKED_BOUNDS 16u
#define AD_CHECKED_VALUES 32u

typedef enum ad_check_outcome {
    AD_CHECK_NOT_RUN = 0, /* the check stopped (a failure elsewhere) before it was done */
    AD_CHECK_PASSED,      /* every check it gets passed */
    AD_CHECK_FAILED,      /* the failure ad_rule_check returned is this slot's */
    AD_CHECK_SKIPPED      /* not differentiable */
} ad_check_outcome;

typedef enum ad_check_angle {
    AD_CHECK_ANGLE_NONE = 0,       /* no reference pullback, or the slot was not reached */
    AD_CHECK_ANGLE_MEASURED,       /* angle_degrees holds the angle */
    AD_CHECK_ANGLE_ZERO_REFERENCE, /* not applicable: the reference's slot is all zeros */
    AD_CHECK_ANGLE_ZERO_SLOT,      /* not applicable: the rule's slot is all zeros */
    AD_CHECK_ANGLE_OWN_SIGNAL      /* not applicable: the rule ignores dy */
} ad_check_angle;

typedef struct ad_check_slot {
    ad_check_method method;
    ad_check_outcome outcome;
    unsigned passed;        /* AD_CHECKED_* bits of the checks it passed */
    double max_rel_err;     /* largest |got - want| / max(|got|, |want|) against finite
                               differences or options.expected; 0 when not compared */
    ad_check_angle angle;
    double angle_degrees;   /* in [0, 180] when angle is MEASURED, else NaN */
} ad_check_slot;

typedef struct ad_check_report {
    const char *fn_name;    /* the name given to ad_rule_check_as (the caller's string) */
    int n_slots;            /* the call's input count; slot[0..n_slots) are filled */
    int slots_checked;      /* differentiable slots that passed every check they get */
    double max_rel_err;     /* the largest of the slots' */
    ad_check_slot slot[AD_MAX_INPUTS];
} ad_check_report;

/*
** Checks fn's registered rule at inputs in[0..n) (float64, or int32 for constant
** leaves). opts: NULL means ad_check_defaults(). report (optional out) is written on
** every return, success or failure; on an argument error it holds no slots.
** Errors: AD_ERR_NULL (fn, in or an input), AD_ERR_ARITY (n outside 1..AD_MAX_INPUTS),
** AD_ERR_INVALID (an option out of its range or NaN; the message names it),
** AD_ERR_NO_RULE, AD_ERR_DTYPE (an input that is neither float64 nor int32, or an
** output that is not float64), AD_ERR_ATTRS (attrs do not fit the rule),
** AD_ERR_BAD_RULE (a signal hook that gave no float64
** tensor), AD_ERR_NOMEM, the status fn, a pullback or the signal hook returned,
** AD_ERR_CHECK_FAILED (the message names the rule, the function, the slot, the check
** and, for values, the element and both numbers). The inputs are never modified.
*/
AD_API ad_status ad_rule_check_as(ad_primal_fn fn, const char *fn_name,
                           const ad_tensor *const in[], int n,
                           const ad_check_options *opts, ad_check_report *report);
#define ad_rule_check(fn, in, n, opts, report)                                          \
    ad_rule_check_as(AD_PRIMAL(fn), #fn, (in), (n), (opts), (report))

/*
** Writes the report, a line per slot: how it was checked, the outcome, the checks it
** passed, the largest relative error of its values and the angle to the reference:
**   ad_rule_check ad_op_dense_kp: 3 of 3 differentiable slots passed
**     input 0  finite differences  passed  writes adds linear alone bounds values  max
**       rel err 1e-10  angle 0.0 deg                     (one line in the output)
**     input 1  structural only (feedback)  passed  writes adds linear alone bounds
**       angle 24.5 deg
**     input 2  structural only (feedback)  passed  writes adds linear alone bounds
**       angle n/a (reference is zero)
** Errors: AD_ERR_NULL (report or stream), AD_ERR_IO (the stream reports an error).
*/
AD_API ad_status ad_check_report_print(const ad_check_report *report, FILE *stream);

#ifdef __cplusplus
}
#endif
#endif /* AD_CHECK_H */
