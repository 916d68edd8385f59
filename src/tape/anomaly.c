/*
** anomaly.c: anomaly mode's checks for NaN and Inf (ad_tape_set_anomaly_mode).
**
** Recording and the sweep call these only when the tape's anomaly flag is set, so a
** tape without it pays one predictable branch per node and nothing here.
*/
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "../base/base.h"
#include "tape_internal.h"

/*
** An element is NaN or Inf exactly when every bit of its exponent is set. Or-ing that
** test over the buffer is integer work that vectorises (isfinite under strict IEEE
** flags does not), so a clean buffer costs one pass at memory speed; the first
** offending index is searched for only once the buffer is known to hold one.
*/
static int64_t first_nonfinite_f32(const float *x, int64_t n)
{
    unsigned bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof b);
        bad |= (unsigned)((b & 0x7f800000u) == 0x7f800000u);
    }
    for (int64_t i = 0; bad && i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

static int64_t first_nonfinite_f64(const double *x, int64_t n)
{
    uint64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t b;
        memcpy(&b, &x[i], sizeof b);
        /* exponent 0x7ff, and only it, carries into the sign bit: no 64-bit compare */
        bad |= ((b & 0x7ff0000000000000u) + (UINT64_C(1) << 52)) >> 63;
    }
    for (int64_t i = 0; bad && i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

/* The first non-finite element of t, or -1; int32 tensors are never checked. */
static int64_t first_nonfinite(const ad_tensor *t)
{
    if (t->dtype == AD_F32)
        return first_nonfinite_f32(t->data, t->size);
    if (t->dtype == AD_F64)
        return first_nonfinite_f64(t->data, t->size);
    return -1;
}

/* `where` is "ad_call" or "pullback of"; `what` names the buffer. */
static ad_status fail_at(const adi_node *n, const char *where, const char *what,
                         const ad_tensor *t, int64_t k)
{
    char d[64];
    return ad_fail(AD_ERR_NONFINITE, "anomaly mode: %s %s (rule \"%s\", node %u): %s holds "
                   "a non-finite element: [%" PRId64 "] = %g (%s)", where, n->fn_name,
                   n->entry->rule.name, n->index, what, k, ad_tensor_get(t, k),
                   ad_tensor_describe(t, d, sizeof d));
}

ad_status adi_anomaly_check_value(const adi_node *node)
{
    const ad_tensor *y = node->out->tensor;
    int64_t k = first_nonfinite(y);
    return k < 0 ? AD_OK : fail_at(node, "ad_call", "the forward value", y, k);
}

ad_status adi_anomaly_check_cotangents(const adi_node *node, ad_tensor *const din[])
{
    for (int i = 0; i < node->n_in; i++) {
        int64_t k = din[i] ? first_nonfinite(din[i]) : -1;
        if (k >= 0) {
            char what[40];
            snprintf(what, sizeof what, "the cotangent of input %d", i);
            return fail_at(node, "pullback of", what, din[i], k);
        }
    }
    return AD_OK;
}
