/*
** ad_tape.h: recording op calls on a tape.
**
** A tape owns a bump arena and an ordered list of nodes, one per op call. Handles
** (ad_var) name values on the tape: leaves made by ad_use, outputs made by ad_call.
** ad_tape_reset rewinds the arena and keeps one block of the high-water size, so the
** second and later recordings of the same model allocate nothing.
**
** Errors poison: a failing call returns a poisoned handle and records the first error
** on the tape; later calls given a poisoned handle return one too, doing nothing.
** ad_tape_status and ad_backward/ad_gradient report that first error and its message.
**
** A tape is used by one thread at a time; several tapes may run at once.
*/
#ifndef AD_TAPE_H
#define AD_TAPE_H

#include <stdio.h>
#include "ad_rule.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ad_tape ad_tape;
struct ad_value;

/* A handle to a value on a tape. Valid until the tape's next reset; a handle from
** another tape, or from before a reset, is refused with AD_ERR_BAD_HANDLE. */
typedef struct ad_var {
    struct ad_value *v_; /* private; NULL when poisoned */
    uint64_t gen_;       /* private: the tape recording it came from */
} ad_var;

/* Creates an empty tape (*out, owned by the caller). Errors: AD_ERR_NULL, AD_ERR_NOMEM. */
AD_API ad_status ad_tape_new(ad_tape **out);

/* Frees the tape, its arena and its counters. NULL is accepted. */
AD_API void ad_tape_free(ad_tape *tape);

/* Forgets every node and value (handles become invalid), clears the first error,
** and keeps the arena's high-water capacity in one block. Never fails. */
AD_API void ad_tape_reset(ad_tape *tape);

/* With enabled == 0, later calls record no pullback state (forward-only
** evaluation, like torch.no_grad); a sweep over such nodes fails with AD_ERR_NO_GRAD.
** The setting survives resets. */
AD_API void ad_tape_set_grad_enabled(ad_tape *tape, int enabled);

/*
** Anomaly mode (like torch.autograd.set_detect_anomaly): with enabled != 0, every
** float32/float64 output a primal computes is checked for NaN and Inf before its node
** is recorded, and so is every cotangent buffer a pullback writes during a sweep.
** The first non-finite element is an error, AD_ERR_NONFINITE, whose message names the
** op, its rule, the node's index on the tape, the element, and whether it was the
** forward value or the cotangent of input i:
**   ad_call fails and poisons the tape (the node is not recorded), as any record-time
**   error does; ad_backward / ad_gradient stop at that pullback and return it (the
**   gradient set's contents are then unspecified, parameters untouched).
** A non-finite leaf is not itself checked; it is reported at the first op whose output
** it makes non-finite. int32 values are never checked. Checking reads every element
** once; it changes no value, so gradients are bitwise the same with it on or off.
** Off by default; when off it costs one branch per node. The setting survives resets;
** a NULL tape is ignored.
*/
AD_API void ad_tape_set_anomaly_mode(ad_tape *tape, int enabled);

/*
** Memory saving (like PyTorch freeing a graph's buffers as backward goes): with
** enabled != 0, a sweep reuses memory it no longer needs for the cotangents still to
** come. An intermediate value's memory is reused once no pullback still to run reads
** it, which each rule declares (ad_rule.unread with its AD_INPUT and AD_OUTPUT bits; a rule that
** declares nothing finds all it recorded intact when its pullback runs); a
** cotangent's, once its node's pullback has run. Gradients are bitwise the same as
** without it. After such a sweep:
**   ad_value and ad_cotangent return NULL for a reused value or cotangent, with
**   AD_ERR_REUSED as the last error; the loss and values marked with ad_keep before
**   the sweep stay readable; an op recorded on with a reused input fails with
**   AD_ERR_REUSED at record time (kept values and their views can be used);
**   a second sweep of the same recording fails with AD_ERR_REUSED (record again).
** Reference sweeps (ad_sweep_options.use_reference) reuse nothing. In anomaly mode a
** released buffer is filled with NaN, so a rule that reads what it declared unread
** usually fails with AD_ERR_NONFINITE; not always: a cotangent may have taken the
** buffer and written finite values before the read. Declare only what is true.
** Off by default; the setting survives resets; a NULL tape is ignored.
*/
AD_API void ad_tape_set_memory_saving(ad_tape *tape, int enabled);

/* Keeps v's value and cotangent readable through a memory-saving sweep (logits to
** score, a pre-activation to inspect). Errors: AD_ERR_NULL, AD_ERR_BAD_HANDLE. */
AD_API ad_status ad_keep(ad_tape *tape, ad_var v);

/* A leaf for a user tensor: constant data, a feedback matrix, or a parameter (it gets
** a gradient when ad_backward is given a parameter set holding it). The tensor is not
** copied: it must stay alive and unchanged until the sweep (its version is checked).
** `name` labels the leaf in prints; the macro passes the spelled expression.
** A NULL or malformed t (rank, dtype, size not its shape's, NULL data with elements)
** poisons the tape: AD_ERR_NULL, AD_ERR_RANK, AD_ERR_INVALID or AD_ERR_OVERFLOW. */
AD_API ad_var ad_use_named(ad_tape *tape, const ad_tensor *t, const char *name);
#define ad_use(tape, t) ad_use_named((tape), (t), #t)

/*
** Records a call of `fn` on `inputs[0..n)`: looks up fn's rule, checks arity, dtypes,
** ranks and attributes against it, runs fn, and appends a node. `attrs` points at
** attrs_size bytes of attributes, or is NULL (with attrs_size 0) for none: they must
** be the rule's attrs_size exactly, and a rule with attrs_size > 0 and no
** attrs_default requires them (see ad_rule). They are copied to the tape's arena,
** from the rule's defaults when none are given, and fn and its pullback read the copy
** with ad_attrs: the caller's struct need only live during this call, the copy until
** ad_tape_reset. Every check runs before fn; on a failed one fn never runs.
** Returns the output's handle, or a poisoned handle with the tape's first error set:
** AD_ERR_NO_RULE ("no rule registered for my_matmul"), AD_ERR_ARITY, AD_ERR_DTYPE,
** AD_ERR_RANK, AD_ERR_ATTRS (attributes given to a rule that takes none, missing when
** required, or of another size; the message names fn, the rule and both sizes),
** AD_ERR_BAD_HANDLE, AD_ERR_NULL (tape, fn, inputs, or attrs with attrs_size > 0),
** AD_ERR_NOMEM, AD_ERR_BAD_RULE (fn returned without its tensor from ad_out),
** AD_ERR_NONFINITE (anomaly mode), or whatever fn returned. A NULL tape sets only the
** thread's error.
*/
AD_API ad_var ad_call_as(ad_tape *tape, ad_primal_fn fn, const char *fn_name,
                  const ad_var *inputs, int n, const void *attrs, size_t attrs_size);

/*
** ad_call(tape, fn, x, y, ...): the recording form model code uses.
**
** The order of nested calls is the compiler's. C leaves unspecified the order in which
** a function's arguments are evaluated, and the elements of ad_call's argument list
** (an array initializer) are indeterminately sequenced too; compilers differ: for
** ad_mul(t, ad_tanh(t, x), ad_sigmoid(t, x)), GCC on x86-64 records the sigmoid first
** and clang the tanh. Values are the same either way. What can change: the nodes'
** indices on the tape (ad_tape_print), the order the sweep runs their pullbacks, and so
** the order in which contributions to a cotangent they share (x's, here) are added;
** floating-point addition is not associative, and kernels fuse the add into their own
** sums (beta = 1), so the last bits of a gradient may differ from one compiler, or
** one build, to another. For the same bits everywhere, record each argument in a
** statement of its own, so the order is the program's:
** Example (fragment):
**     ad_var u = ad_tanh(t, x);     // recorded first, whatever the compiler
**     ad_var v = ad_sigmoid(t, x);
**     ad_var z = ad_mul(t, u, v);   // not ad_mul(t, ad_tanh(t, x), ad_sigmoid(t, x))
** Leaves (ad_use) have no pullback: nesting them changes only the leaves' indices.
*/
#define ad_call(tape, fn, ...)                                                          \
    ad_call_as((tape), AD_PRIMAL(fn), #fn, (const ad_var[]){__VA_ARGS__},               \
               (int)(sizeof((ad_var[]){__VA_ARGS__}) / sizeof(ad_var)), NULL, 0)
/* ad_call_attrs(tape, fn, &attrs, x, ...): the same with an attribute struct, passed
** with sizeof *(&attrs) as its size, so a struct of the wrong type is AD_ERR_ATTRS
** whenever its size differs from the rule's. The struct may be a local or a compound
** literal (it is copied); parenthesise a literal with commas, which would otherwise
** split the macro's arguments: ad_call_attrs(t, fn, (&(my_attrs){1, 2}), x). */
#define ad_call_attrs(tape, fn, attrs_ptr, ...)                                         \
    ad_call_as((tape), AD_PRIMAL(fn), #fn, (const ad_var[]){__VA_ARGS__},               \
               (int)(sizeof((ad_var[]){__VA_ARGS__}) / sizeof(ad_var)), (attrs_ptr),    \
               sizeof *(attrs_ptr))

/* Nonzero unless v is poisoned. */
AD_API int ad_var_ok(ad_var v);

/* The value behind v (owned by the tape or, for leaves, the user), or NULL if v is
** poisoned, stale or from another tape. Read-only. */
AD_API const ad_tensor *ad_value(const ad_tape *tape, ad_var v);

/* The tape's first error since the last reset (AD_OK if none) and its message. */
AD_API ad_status ad_tape_status(const ad_tape *tape);
AD_API const char *ad_tape_error(const ad_tape *tape);

/* Memory figures: arena bytes in use now, the most ever in use, and how many heap
** allocations this tape has made in its life (arena blocks, counters, everything). */
typedef struct ad_tape_stats {
    size_t bytes_used;
    size_t high_water;
    uint64_t heap_allocs;
    size_t nodes;
} ad_tape_stats;
AD_API ad_tape_stats ad_tape_get_stats(const ad_tape *tape);

/* Writes one line per leaf and node: index, op, the rule that served it, input and
** output shapes. Returns AD_ERR_NULL for a NULL tape or stream. */
AD_API ad_status ad_tape_print(const ad_tape *tape, FILE *stream);

/* How many times fn's rule pullback ran on this tape since it was created. fn is the
** primal (ad_op_dense_fa, not the wrapper ad_dense_fa): anything else does not compile
** (AD_PRIMAL in ad_rule.h). */
AD_API uint64_t ad_tape_pullback_count(const ad_tape *tape, ad_primal_fn fn);
#define ad_tape_pullback_count(tape, fn) ad_tape_pullback_count((tape), AD_PRIMAL(fn))

/* One line per rule that ran on this tape: rule name, this tape's count, process total. */
AD_API ad_status ad_tape_print_rule_counts(const ad_tape *tape, FILE *stream);

#ifdef __cplusplus
}
#endif
#endif /* AD_TAPE_H */
