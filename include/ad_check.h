/*
** ad_check.h: checking a rule against finite differences, in float64.
**
** ad_rule_check runs fn forward on copies of the given float64 inputs, draws a random
** output cotangent dy, and for every differentiable input slot:
**   1. runs the pullback into a NaN-filled buffer with beta = 0 and fails if any
**      element is left unwritten;
**   2. runs it again into a buffer pre-filled with random values with beta = 1 and
**      fails unless the result equals step 1 plus the pre-fill (a pullback that
**      overwrites instead of adding is the silent wrong-gradient bug);
**   3. compares step 1 with the true vector-Jacobian product dy' J: by central
**      differences, over every coordinate when the input has at most `full_limit`
**      elements, else along `directions` random directions; for slots the rule
**      declares not a gradient (not_gradient), with the rule's reference pullback
**      (or options.reference) instead.
** An element passes when |got - want| <= atol + rtol * max(|got|, |want|).
*/
#ifndef AD_CHECK_H
#define AD_CHECK_H

#include "ad_rule.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
** Options: start from ad_check_defaults() and change what you need. Every value is
** used as given (an explicit 0 means 0); a NULL options pointer means the defaults.
*/
typedef struct ad_check_options {
    double rtol;              /* relative tolerance; default 1e-6; >= 0 */
    double atol;              /* absolute tolerance; default 1e-8; >= 0 */
    double eps;               /* finite-difference step; default 1e-5; > 0 */
    int64_t full_limit;       /* every coordinate up to this many elements, random
                                 directions above; default 256; >= 0 */
    int directions;           /* random directions for larger inputs; default 8; >= 1 */
    uint64_t seed;            /* for dy, pre-fills and directions; default 1; any value */
    ad_pullback_fn reference; /* overrides the rule's reference when set; default NULL */
    const void *attrs;        /* passed to fn, as ad_call_as would; default NULL */
    size_t attrs_size;        /* bytes at attrs; default 0 */
} ad_check_options;

/* The defaults above. */
ad_check_options ad_check_defaults(void);

typedef struct ad_check_report {
    int slots_checked;   /* input slots compared */
    double max_rel_err;  /* largest |got - want| / max(|got|, |want|, 1e-300) seen */
} ad_check_report;

/* Checks fn's registered rule at inputs in[0..n) (float64 except int32 leaves).
** opts (NULL: the defaults) and report may be NULL. Errors: AD_ERR_NULL, AD_ERR_ARITY,
** AD_ERR_INVALID (an option out of range or NaN; the message names it),
** AD_ERR_NO_RULE, AD_ERR_DTYPE, AD_ERR_NOMEM, fn's or the pullback's own status,
** AD_ERR_CHECK_FAILED (the message names the rule, the slot, the element and both
** values). Inputs are not modified. */
ad_status ad_rule_check_as(ad_primal_fn fn, const char *fn_name,
                           const ad_tensor *const in[], int n,
                           const ad_check_options *opts, ad_check_report *report);
#define ad_rule_check(fn, in, n, opts, report)                                          \
    ad_rule_check_as((fn), #fn, (in), (n), (opts), (report))

#ifdef __cplusplus
}
#endif
#endif /* AD_CHECK_H */
