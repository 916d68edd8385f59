/*
** ad_rule.h: primal functions, pullbacks, rules and the process-wide rule registry.
**
** A primal function computes an op's forward value. A rule says how to pull a
** cotangent back through it. The registry maps the primal's function pointer to its
** rule: recording a call (ad_call) looks the rule up by the very pointer it calls, so
** the rule that runs in the sweep is always the one registered for the function that
** ran forward. A call to a function with no rule fails at record time.
**
** Function identity has one trap: linkers that fold identical code (gold or lld with
** --icf=all) can merge two distinct functions with the same body into one address,
** and then into one registry key. Two rules for one forward computation need two
** functions whose bodies differ, or a build without identical-code folding.
**
** Thread safety: registration, lookup and the counters may be used from any thread.
*/
#ifndef AD_RULE_H
#define AD_RULE_H

#include <stddef.h>
#include <stdint.h>
#include "ad_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AD_MAX_INPUTS 8
#define AD_INPUT(i) (1u << (i)) /* bit for input slot i in the masks below */

/* What a primal or pullback is given: access to the tape's arena and to the node. */
typedef struct ad_ctx ad_ctx;

/*
** A primal reads in[0..n), asks ad_out for its output (exactly once), may save one
** tensor for its pullback with ad_save, and returns AD_OK or a status it set with
** ad_fail. It must not write its inputs.
*/
typedef ad_status (*ad_primal_fn)(ad_ctx *cx, const ad_tensor *const in[],
                                  ad_tensor **out);

/*
** AD_PRIMAL(fn) is fn when it is an ad_primal_fn and a compile error otherwise. The
** registry is keyed by the primal (ad_op_dense_fa), never by the wrapper that records
** it (ad_dense_fa): the lookups below would take a wrapper with only a warning and
** answer "no rule" or 0, so their macros pass fn through AD_PRIMAL. The error names
** _Generic and the wrong type. The functions stay callable with a real ad_primal_fn in
** parentheses, (ad_rule_find)(fn), and NULL is (ad_primal_fn)NULL. Before C11, and
** in C++ (which refuses the wrong pointer type by itself), AD_PRIMAL(fn) is just fn.
*/
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__cplusplus)
#define AD_PRIMAL(fn) _Generic((fn), ad_primal_fn: (fn)) /* pass ad_op_x, not ad_x */
#else
#define AD_PRIMAL(fn) (fn)
#endif

/*
** A pullback receives the output cotangent dy (y's shape and dtype), the recorded
** inputs and output, and per input slot i a cotangent buffer din[i] of in[i]'s shape:
**   din[i] == NULL   the slot's cotangent is not needed: do not compute it;
**   beta[i] == 0     din[i] is fresh and holds garbage: overwrite it;
**   beta[i] == 1     din[i] holds another path's contribution: add to it.
** It must write every non-NULL slot, and nothing else.
*/
typedef ad_status (*ad_pullback_fn)(ad_ctx *cx, const ad_tensor *dy,
                                    const ad_tensor *const in[], const ad_tensor *y,
                                    ad_tensor *const din[], const float beta[]);

/* Accepted dtypes per input, as a mask; 0 means AD_ACCEPT_FLOAT. */
#define AD_ACCEPT_F32 (1u << AD_F32)
#define AD_ACCEPT_F64 (1u << AD_F64)
#define AD_ACCEPT_I32 (1u << AD_I32)
#define AD_ACCEPT_FLOAT (AD_ACCEPT_F32 | AD_ACCEPT_F64)
/* Accepted ranks per input, as a mask; 0 means any rank 0..4. */
#define AD_RANK(r) (1u << (r))

typedef struct ad_input_spec {
    unsigned dtypes; /* AD_ACCEPT_* mask; 0 = float32 or float64 */
    unsigned ranks;  /* AD_RANK(r) mask; 0 = any */
} ad_input_spec;

/* Rule flags. */
#define AD_RULE_MIXED_DTYPES 1u   /* float inputs may differ in dtype (default: one) */
/* The pullback never reads dy (DFA's hidden layers take the output error instead): it
** runs whenever the loss depends on its output, dy may be NULL, and the sweep does not
** compute its output's cotangent, so the layer above skips that product. */
#define AD_RULE_IGNORES_DY 4u

/*
** The signal hook of an AD_RULE_IGNORES_DY rule whose pullback reads a cotangent from
** elsewhere instead of dy (DFA's hidden rule reads the output error e that the output
** rule's pullback published through the caller's ad_dfa). It lets ad_rule_check seed
** that signal, so the rule can be checked alone and its linearity in the signal shown;
** no sweep calls it. It gets the checked node's context (ad_attrs and ad_scratch work
** as in the pullback) and inputs, and is called twice:
**   *signal == NULL: allocate the signal with ad_scratch, in the shape and dtype the
**     pullback reads, make the pullback read it (as the output rule would), set
**     *signal and return AD_OK; the checker writes its own values into it before the
**     pullback runs, varies them, and never changes the tensor's shape;
**   *signal set (the tensor it gave), when the check ends, success or not: make the
**     pullback stop reading it (its memory goes with the checker's tape).
** A failing first call must leave *signal NULL and publish nothing.
*/
typedef ad_status (*ad_signal_fn)(ad_ctx *cx, const ad_tensor *const in[],
                                  ad_tensor **signal);

/* Bit for the output in ad_rule.unread: the pullback never reads the output's values,
** only its shape, so a memory-saving sweep may reuse its memory. */
#define AD_OUTPUT (1u << AD_MAX_INPUTS)

/*
** A rule: plain data the caller fills in; zero fields mean defaults. The registry
** copies the struct, and attrs_default's bytes with it; `name` must stay valid while
** the rule is registered.
**
** Attributes are an op's non-tensor arguments (matmul's transpose flags), one struct
** the caller passes to ad_call_attrs. A rule states their size in attrs_size, and
** recording holds every call to it (AD_ERR_ATTRS): attributes given to a rule with
** attrs_size 0, or of a size other than attrs_size, or none given when the rule has
** attrs_size > 0 and no attrs_default. With attrs_default, a call without attributes
** gets a copy of those defaults, so a primal or pullback of a rule with attrs_size > 0
** always finds attrs_size bytes at ad_attrs, never NULL.
*/
typedef struct ad_rule {
    const char *name;          /* shown in tape prints and messages; NULL: the fn name */
    ad_pullback_fn pullback;   /* required */
    ad_pullback_fn reference;  /* optional: the true gradient, for feedback rules */
    int n_inputs;              /* exact input count, 1..AD_MAX_INPUTS */
    ad_input_spec inputs[AD_MAX_INPUTS];
    unsigned nondiff;          /* AD_INPUT mask: never differentiated, din always NULL */
    unsigned not_gradient;     /* AD_INPUT mask: deliberately not the true gradient
                                  (feedback); the only way to say so. A trained
                                  feedback input (Kolen-Pollack's B) is one of them */
    unsigned flags;            /* AD_RULE_* */
    unsigned unread;           /* AD_INPUT and AD_OUTPUT mask: values the pullback
                                  never reads, only their shapes; a memory-saving sweep
                                  may reuse that memory before this node's pullback
                                  runs. 0: all read (always safe). The reference may
                                  read anything: reference sweeps reuse nothing */
    size_t attrs_size;         /* bytes of the op's attribute struct; 0: it takes none */
    const void *attrs_default; /* optional, attrs_size bytes (copied at registration):
                                  what a call without attributes gets. NULL with
                                  attrs_size > 0: attributes are required */
    ad_signal_fn signal;       /* optional, AD_RULE_IGNORES_DY rules only: seeds what
                                  the pullback reads instead of dy, for ad_rule_check */
} ad_rule;

/*
** The defaults convention. Every public attribute struct ad_<op>_attrs whose op has
** defaults comes with AD_<OP>_ATTRS_DEFAULT, a compound literal of them. Start from it
** and set the fields you mean, so that no field's zero has to mean "default" (a
** convolution's stride and dilation default to 1):
** Example (fragment):
**     ad_matmul_attrs at = AD_MATMUL_ATTRS_DEFAULT;
**     at.trans_b = 1;
**     ad_var y = ad_call_attrs(t, ad_op_matmul, &at, x, w);
** A rule's own defaults are the same literal's address, which ISO C allows in a static
** initialiser: `.attrs_default = &AD_MATMUL_ATTRS_DEFAULT`. Attributes that are
** required (no sensible default, like ad_scale_attrs' alpha) have no such macro.
*/

#define AD_REPLACE 1u /* ad_rule_register_as flag: replace an existing rule */

/*
** Registers `rule` (copied) for `fn`. `fn_name` names fn in messages (the macros pass
** the spelled name). Errors: AD_ERR_NULL (fn or rule), AD_ERR_BAD_RULE (no pullback,
** n_inputs outside 1..8, masks naming slots past n_inputs, unknown flags, attrs_default
** without attrs_size, a signal hook without AD_RULE_IGNORES_DY), AD_ERR_RULE_EXISTS (fn
** has a rule and AD_REPLACE was not given), AD_ERR_OVERFLOW (attrs_size too large to
** copy its defaults), AD_ERR_NOMEM.
** On error the table is unchanged.
** A replaced rule stays valid for tapes that recorded with it; new calls use the new.
*/
AD_API ad_status ad_rule_register_as(ad_primal_fn fn, const char *fn_name, const ad_rule *rule,
                              unsigned flags);
#define ad_rule_register(fn, rule) ad_rule_register_as(AD_PRIMAL(fn), #fn, (rule), 0u)
#define ad_rule_replace(fn, rule)                                                       \
    ad_rule_register_as(AD_PRIMAL(fn), #fn, (rule), AD_REPLACE)

/* Removes fn's rule. AD_ERR_NO_RULE if it has none. Recorded tapes keep working. */
AD_API ad_status ad_rule_unregister(ad_primal_fn fn);
#define ad_rule_unregister(fn) ad_rule_unregister(AD_PRIMAL(fn))

/* The rule registered for fn (a stable copy, valid for the process, its attrs_default
** pointing at the registry's copy of the defaults), or NULL. */
AD_API const ad_rule *ad_rule_find(ad_primal_fn fn);
#define ad_rule_find(fn) ad_rule_find(AD_PRIMAL(fn))

/* How many times fn's rule pullbacks have run in this process, across every tape
** and every rule ever registered for fn (atomic). 0 for an unknown fn. fn is the
** primal (ad_op_dense_fa, not ad_dense_fa): anything else does not compile. */
AD_API uint64_t ad_rule_total_pullbacks(ad_primal_fn fn);
#define ad_rule_total_pullbacks(fn) ad_rule_total_pullbacks(AD_PRIMAL(fn))

/* ---- for primals and pullbacks ---- */

/*
** One kernel for both float dtypes. AD_DISPATCH_FLOAT(dtype, T, statements) runs the
** statements with T a typedef for float when dtype is AD_F32, for double otherwise
** (AD_F64: the only other dtype a rule's default accepts). AD_PUT_EACH(d, n, beta, i,
** v) is the pullback contract over n elements: d[i] = v under beta 0 (d is never
** read: it may hold garbage, NaN included), d[i] += v under beta 1, v an expression
** of the index i (int64_t). It tests beta outside its loops, so they vectorise (under
** -ftrapping-math a select between d[i] + v and v inside the loop stays a branch).
** The library's own kernels are written with these two. A pullback for y = x^3:
** Example (declarations):
**     static ad_status cube_pullback(ad_ctx *cx, const ad_tensor *dy,
**                                    const ad_tensor *const in[], const ad_tensor *y,
**                                    ad_tensor *const din[], const float beta[])
**     {
**         (void)cx, (void)y;
**         if (!din[0])  // not needed
**             return AD_OK;
**         AD_DISPATCH_FLOAT(dy->dtype, T, {
**             const T *g = dy->data, *x = in[0]->data;
**             T *dx = din[0]->data;
**             AD_PUT_EACH(dx, dy->size, beta[0], i, 3 * x[i] * x[i] * g[i]);
**         });
**         return AD_OK;
**     }
*/
#define AD_DISPATCH_FLOAT(dtype, T, ...)                                                \
    do {                                                                                \
        if ((dtype) == AD_F32) {                                                        \
            typedef float T;                                                            \
            __VA_ARGS__                                                                 \
        } else {                                                                        \
            typedef double T;                                                           \
            __VA_ARGS__                                                                 \
        }                                                                               \
    } while (0)

#define AD_PUT_EACH(d, n, beta, i, v)                                                   \
    do {                                                                                \
        if ((beta) != 0.0f)                                                             \
            for (int64_t i = 0; i < (n); i++)                                           \
                (d)[i] += (v);                                                          \
        else                                                                            \
            for (int64_t i = 0; i < (n); i++)                                           \
                (d)[i] = (v);                                                           \
    } while (0)

/* The output of the running primal, carved from the tape's arena (owned by the tape,
** valid until ad_tape_reset). Call once per primal. Errors: AD_ERR_RANK,
** AD_ERR_INVALID, AD_ERR_OVERFLOW, AD_ERR_NOMEM. */
AD_API ad_status ad_out(ad_ctx *cx, ad_dtype dtype, int ndim, const int64_t *shape,
                 ad_tensor **out);

/*
** The output of the running primal as a view of input `input`'s memory: the same
** elements in the same order, under a new shape of as many elements (a reshape), and
** no copy. Instead of ad_out (one of the two, once). The tape knows the output aliases
** the input: memory saving keeps the buffer while either is still read, ad_keep on
** either keeps it, and ad_value on either reads AD_ERR_REUSED once it went. Neither the
** primal nor anything later may write through the view. Errors: AD_ERR_INVALID (no such
** input; outside a primal; twice), AD_ERR_SHAPE (another element count, both named),
** AD_ERR_RANK, AD_ERR_OVERFLOW, AD_ERR_NOMEM (for the descriptor).
*/
AD_API ad_status ad_out_view(ad_ctx *cx, int input, int ndim, const int64_t *shape,
                             ad_tensor **out);

/* A tensor kept for the pullback (one per node), read back with ad_saved. In forward-
** only mode (ad_ctx_saving returns 0) primals should skip saving. Same errors as ad_out. */
AD_API ad_status ad_save(ad_ctx *cx, ad_dtype dtype, int ndim, const int64_t *shape,
                  ad_tensor **out);
AD_API const ad_tensor *ad_saved(const ad_ctx *cx);
AD_API int ad_ctx_saving(const ad_ctx *cx);

/* Scratch memory from the arena, valid until the tape resets. Same errors as ad_out. */
AD_API ad_status ad_scratch(ad_ctx *cx, ad_dtype dtype, int ndim, const int64_t *shape,
                     ad_tensor **out);

/*
** The attributes of the node being run: the rule's attrs_size bytes, copied at record
** time from the caller's struct or from the rule's attrs_default. The copy lives in the
** tape's arena (owned by the tape, valid until ad_tape_reset; the caller's struct need
** only live during ad_call_as) and is aligned to at least alignof(max_align_t), so it
** may be read through a pointer to the attribute struct. Never NULL in a primal or
** pullback of a rule with attrs_size > 0; NULL for a rule that takes none, or cx NULL.
*/
AD_API const void *ad_attrs(const ad_ctx *cx);

/* The spelled name of the function being run ("my_matmul"). */
AD_API const char *ad_ctx_op_name(const ad_ctx *cx);

#ifdef __cplusplus
}
#endif
#endif /* AD_RULE_H */
