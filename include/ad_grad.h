/*
** ad_grad.h: parameter sets, gradient sets, the reverse sweep and plain descent.
**
** Like Zygote's Params, a parameter set holds the identities of the trainable tensors
** (W, never a fixed feedback matrix B). A leaf whose tensor is in the set gets a
** gradient; every other leaf is a constant. Each parameter gets a dense index when
** added, so gradients (and optimiser state) are arrays by index.
**
** Example (fragment):
**     ad_params *ps; ad_params_new(&ps); ad_params_add(ps, &W, NULL);
**     ad_grads *gs;  ad_grads_new(ps, &gs);
**     double loss;
**     ad_gradient(tape, ps, model_loss, &data, gs, &loss);  // gradient(() -> ..., ps)
**     ad_descent_step(ps, gs, 0.1);                            // Descent(0.1)
*/
#ifndef AD_GRAD_H
#define AD_GRAD_H

#include "ad_tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ad_params ad_params;
typedef struct ad_grads ad_grads;

/* Creates an empty parameter set (*out). Errors: AD_ERR_NULL, AD_ERR_NOMEM. */
AD_API ad_status ad_params_new(ad_params **out);
AD_API void ad_params_free(ad_params *ps); /* NULL accepted; the tensors are not freed */

/* Adds t (by identity; it must outlive the set). Adding a tensor already present is
** not an error and keeps its index. *index (optional out) gets t's dense index.
** Errors: AD_ERR_NULL, AD_ERR_DTYPE (not float32/float64), AD_ERR_NOMEM. */
AD_API ad_status ad_params_add(ad_params *ps, ad_tensor *t, int *index);

/* Adds t as ad_params_add does, under name (copied into the set), which checkpoints
** save and load it by when they are given no array of names (ad_checkpoint.h). A
** tensor already present keeps its index and gets the name if it had none.
** Errors: AD_ERR_NULL, AD_ERR_DTYPE (not f32 or f64), AD_ERR_DUPLICATE_NAME (another
** parameter has that name), AD_ERR_INVALID (t is present under another name),
** AD_ERR_NOMEM. A failed call leaves the set as it was. */
AD_API ad_status ad_params_add_named(ad_params *ps, ad_tensor *t, const char *name,
                                     int *index);

AD_API int ad_params_count(const ad_params *ps);
/* The name of parameter i, or NULL when it has none or i is out of range. Owned by the
** set; valid until ad_params_free. */
AD_API const char *ad_params_name(const ad_params *ps, int i);
/* The dense index of t, or -1 if t is not in the set. */
AD_API int ad_params_index(const ad_params *ps, const ad_tensor *t);
/* The tensor at index i, or NULL when i is out of range. */
AD_API ad_tensor *ad_params_at(const ad_params *ps, int i);

/* A gradient set for ps: one buffer per parameter, same shape and dtype, allocated
** now (and grown by the sweep if ps grows). Errors: AD_ERR_NULL, AD_ERR_NOMEM. */
AD_API ad_status ad_grads_new(const ad_params *ps, ad_grads **out);
AD_API void ad_grads_free(ad_grads *gs); /* NULL accepted */

/* The parameter set gs was made for. */
AD_API const ad_params *ad_grads_params(const ad_grads *gs);

/* The gradient of param from the last successful sweep, or NULL when param is not in
** the set or got no gradient (the loss does not depend on it, like Zygote's nothing). */
AD_API const ad_tensor *ad_grads_get(const ad_grads *gs, const ad_tensor *param);
AD_API const ad_tensor *ad_grads_at(const ad_grads *gs, int index);

/* Called during the sweep as soon as a parameter's gradient is final, so a reduction
** or an optimiser step can start before the sweep ends. A nonzero return stops the
** sweep with AD_ERR_PULLBACK. Pass NULL to remove. */
typedef int (*ad_grad_ready_fn)(int index, const ad_tensor *param, const ad_tensor *grad,
                                void *user);
AD_API void ad_grads_on_ready(ad_grads *gs, ad_grad_ready_fn fn, void *user);

/*
** The reverse sweep from `loss` (a rank-0 float value recorded on tape), filling gs
** with the gradients of the parameters in ps. Only inputs on a path from a parameter
** to the loss get cotangent buffers; a pullback sees NULL for the others.
** Errors: the tape's first recording error (with its message), AD_ERR_NULL,
** AD_ERR_BAD_HANDLE, AD_ERR_NOT_SCALAR, AD_ERR_NO_GRAD, AD_ERR_STALE_INPUT (a recorded
** tensor was written after recording; the message names op and input), AD_ERR_NOMEM,
** AD_ERR_NONFINITE (anomaly mode: a pullback wrote NaN or Inf; see ad_tape.h), or a
** pullback's own status. After a failure gs is valid but its contents are
** unspecified; parameters are never touched by the sweep.
*/
AD_API ad_status ad_backward(ad_tape *tape, ad_var loss, const ad_params *ps, ad_grads *gs);

/* Sweep options; zero means the ordinary training sweep. */
typedef struct ad_sweep_options {
    int use_reference; /* run each rule's reference (true-gradient) pullback where it
                          has one, and honour no AD_RULE_IGNORES_DY: backprop's answer on
                          the same tape, for alignment metrics. Counters and the
                          gradient-ready callback are left alone. */
} ad_sweep_options;

/* ad_backward with options (NULL: as ad_backward). The tape may be swept several
** times between resets; each sweep makes fresh cotangent buffers, so cotangents read
** after one sweep stay valid through the next until the tape resets. */
AD_API ad_status ad_backward_ex(ad_tape *tape, ad_var loss, const ad_params *ps, ad_grads *gs,
                         const ad_sweep_options *opts);

/* The cotangent of an intermediate value (not a leaf) from the last sweep, or NULL
** when that sweep did not compute it (not needed, not reached). Owned by the tape;
** valid until ad_tape_reset. The gradient of a parameter is in the gradient set. */
AD_API const ad_tensor *ad_cotangent(const ad_tape *tape, ad_var v);

/* Records the model: called by ad_gradient on a freshly reset tape; returns the loss. */
typedef ad_var (*ad_loss_fn)(ad_tape *tape, void *user);

/*
** gradient(() -> loss(...), ps): resets tape, calls loss_fn(tape, user), runs the
** sweep into gs and stores the loss in *loss_value (optional out). Errors and what a
** failure leaves behind: as ad_backward; a NULL tape, ps, loss_fn or gs is AD_ERR_NULL
** before the tape is reset or loss_fn runs. The tape may be reused for the next step.
*/
AD_API ad_status ad_gradient(ad_tape *tape, const ad_params *ps, ad_loss_fn loss_fn, void *user,
                      ad_grads *gs, double *loss_value);

/*
** The loss handle the last ad_gradient (or ad_mpi_gradient) on tape recorded: what its
** loss_fn returned, poisoned or not. For a second sweep of the same recording, such
** as backprop's answer by a reference sweep for alignment metrics:
** Example (fragment):
**     ad_gradient(tape, ps, model_loss, &data, gs, NULL);
**     ad_sweep_options ref = {.use_reference = 1};
**     ad_backward_ex(tape, ad_tape_loss(tape), ps, ref_gs, &ref);
** A poisoned handle when no ad_gradient has recorded since the tape was made or last
** reset, or for a NULL tape. Valid, like any handle, until the next reset.
*/
AD_API ad_var ad_tape_loss(const ad_tape *tape);

/* Descent(lr): p -= lr * grad for every parameter that got a gradient; bumps their
** versions. Computed as BLAS ?axpy(-lr, grad, p), spread over OpenBLAS's threads for
** large parameters; its kernels may fuse the multiply and add (one rounding), so code
** that must match it bit for bit calls ?axpy the same way.
** Errors: AD_ERR_NULL, AD_ERR_INVALID (gs made for another set). */
AD_API ad_status ad_descent_step(const ad_params *ps, const ad_grads *gs, double lr);

#ifdef __cplusplus
}
#endif
#endif /* AD_GRAD_H */
