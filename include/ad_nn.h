/*
** ad_nn.h: learning: a seeded generator, initialisers and optimisers.
**
** Randomness is a value the caller owns and seeds (ad_rng): there is no global
** generator, so runs are reproducible per seed and threads never share state.
** Optimiser state lives outside the tape, in arrays by parameter index, so a tape
** reset never touches it.
*/
#ifndef AD_NN_H
#define AD_NN_H

#include "ad_grad.h"

#ifdef __cplusplus
extern "C" {
#endif

/* xoshiro256** (Blackman and Vigna, 2018), seeded through splitmix64. */
typedef struct ad_rng {
    uint64_t s[4];
} ad_rng;

AD_API void ad_rng_seed(ad_rng *r, uint64_t seed);
AD_API uint64_t ad_rng_u64(ad_rng *r);
AD_API double ad_rng_uniform(ad_rng *r); /* in [0, 1), 53 random bits */
AD_API double ad_rng_normal(ad_rng *r);  /* standard normal (Box-Muller, no cached pair) */

/*
** Initialisers fill a float32 or float64 tensor and bump its version. For a rank-2
** weight W (out x in), fan_in = in and fan_out = out; for rank 1, both are the length.
** Glorot (Xavier) uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); normal: N(0,
** 2 / (fan_in + fan_out)). He (Kaiming, for relu) uniform: a = sqrt(6 / fan_in); normal:
** N(0, 2 / fan_in). Ranks 3 and 4 multiply the fans by the trailing extents, as
** torch.nn.init does; a scalar counts 1 and 1. Errors: AD_ERR_NULL, AD_ERR_DTYPE (not a
** float tensor), and for ad_init_uniform AD_ERR_INVALID (lo > hi, or a bound not
** finite). A failed call leaves the tensor as it was.
*/
AD_API ad_status ad_init_glorot_uniform(ad_tensor *t, ad_rng *r);
AD_API ad_status ad_init_glorot_normal(ad_tensor *t, ad_rng *r);
AD_API ad_status ad_init_he_uniform(ad_tensor *t, ad_rng *r);
AD_API ad_status ad_init_he_normal(ad_tensor *t, ad_rng *r);
AD_API ad_status ad_init_uniform(ad_tensor *t, ad_rng *r, double lo, double hi);
AD_API ad_status ad_init_zeros(ad_tensor *t);

typedef enum ad_optim_kind {
    AD_OPT_DESCENT = 0, /* p -= lr g */
    AD_OPT_MOMENTUM,    /* v = mu v + g; p -= lr v   (PyTorch SGD momentum) */
    AD_OPT_NESTEROV,    /* v = mu v + g; p -= lr (g + mu v) */
    AD_OPT_ADAM,        /* Kingma and Ba, with bias correction; decay added to g */
    AD_OPT_ADAMW,       /* Adam with decoupled decay: p -= lr wd p */
    AD_OPT_RMSPROP      /* torch.optim.RMSprop: v = alpha v + (1-alpha) g^2;
                        ** p -= lr g / (sqrt(v) + eps), or through a momentum buffer
                        ** b = mu b + g / (sqrt(v) + eps); p -= lr b when momentum > 0;
                        ** centered: sqrt(v - a^2), a = alpha a + (1-alpha) g */
} ad_optim_kind;

/*
** Plain data, read as given: 0 means 0 (momentum 0 is plain SGD, beta1 0 an Adam
** without a first-moment average, lr 0 no motion). Start from ad_optim_defaults and
** change what you need:
** Example (fragment):
**     ad_optim_config c = ad_optim_defaults(AD_OPT_ADAM);
**     c.lr = 1e-3;
**     ad_optim_new(ps, &c, &opt);
** Every field is validated whatever the kind: lr, weight_decay, clip_norm in
** [0, inf); momentum, beta1, beta2, alpha in [0, 1); eps in (0, inf) for Adam and
** AdamW (it divides), [0, inf) otherwise (RMSprop's sqrt(v) + eps with eps 0 divides by
** zero where a gradient has been 0 throughout, as PyTorch's does). Non-finite values
** are refused; centered is true when not 0.
*/
typedef struct ad_optim_config { /* ad_optim_defaults' values in brackets */
    ad_optim_kind kind;
    double lr;           /* learning rate [0.01] */
    double momentum;     /* momentum, Nesterov, RMSprop's (0: none) [0.9; RMSprop 0] */
    double beta1, beta2; /* Adam's moment decays [0.9, 0.999] */
    double eps;          /* Adam's and RMSprop's denominator term [1e-8] */
    double weight_decay; /* L2 added to the gradient (AdamW: decoupled) [0] */
    double clip_norm;    /* clip the global gradient norm to this; 0: no clipping [0] */
    double alpha;        /* RMSprop's smoothing constant [0.99] */
    int centered;        /* RMSprop: normalise by the gradient's variance estimate [0] */
} ad_optim_config;

/* The defaults above for `kind` (every field set, whatever the kind reads; an unknown
** kind is kept, for ad_optim_new to refuse). */
AD_API ad_optim_config ad_optim_defaults(ad_optim_kind kind);

typedef struct ad_optim ad_optim;

/* Optimiser state for ps (*out, owned by the caller; ps must outlive it) with the
** configuration *cfg (copied). Errors: AD_ERR_NULL (ps, cfg or out), AD_ERR_INVALID
** (a field outside its range above, named in the message), AD_ERR_NOMEM. */
AD_API ad_status ad_optim_new(const ad_params *ps, const ad_optim_config *cfg, ad_optim **out);
AD_API void ad_optim_free(ad_optim *o); /* NULL accepted */

/*
** One step from the gradients in gs (made for the same parameter set): clips by the
** global norm if asked, applies weight decay, updates every parameter that has a
** gradient, bumps their versions. Parameters without a gradient are left alone (their
** state too). Errors: AD_ERR_NULL, AD_ERR_INVALID (gs for another set), AD_ERR_NOMEM
** (state for parameters added since), each leaving every parameter untouched.
*/
AD_API ad_status ad_optim_step(ad_optim *o, const ad_grads *gs);

/* Changes the learning rate for later steps (schedules). AD_ERR_INVALID if < 0. */
AD_API ad_status ad_optim_set_lr(ad_optim *o, double lr);

/*
** Reading and restoring optimiser state, as checkpoints do (ad_checkpoint.h). The
** state of parameter `index` is ad_optim_state_count buffers of the parameter's dtype
** and shape (momentum, Nesterov: the velocity; Adam, AdamW: the first moment, then the
** second; RMSprop: the square average, then the momentum buffer if momentum > 0, then
** the gradient average if centered) and a step count: the updates that parameter has
** had, which Adam's bias correction reads.
*/

/* The parameter set o was made for (NULL for a NULL o). */
AD_API const ad_params *ad_optim_params(const ad_optim *o);

/* The configuration in force: as given to ad_optim_new, the learning rate as last set.
** Errors: AD_ERR_NULL. */
AD_API ad_status ad_optim_get_config(const ad_optim *o, ad_optim_config *out);

/* State buffers per parameter: 0 (descent), 1 (momentum, Nesterov), 2 (Adam, AdamW),
** 1 to 3 (RMSprop, as above); -1 for a NULL o. */
AD_API int ad_optim_state_count(const ad_optim *o);

/*
** Fills *view (out) with a descriptor of state buffer k of parameter `index`. Its data
** is the optimiser's own memory: writing elements through view->data changes the
** state; the view's version means nothing. Valid until ad_optim_free. State for
** parameters added to the set since the last step is made first (zeros, as a step
** would make it). Errors: AD_ERR_NULL, AD_ERR_INVALID (index or k out of range),
** AD_ERR_NOMEM; *view and the state are unchanged on error.
*/
AD_API ad_status ad_optim_state(ad_optim *o, int index, int k, ad_tensor *view);

/* The step count of parameter `index` into *steps (0 before its first update).
** Errors: AD_ERR_NULL, AD_ERR_INVALID (index out of range). */
AD_API ad_status ad_optim_get_steps(const ad_optim *o, int index, int64_t *steps);

/* Sets the step count of parameter `index`. Errors: AD_ERR_NULL, AD_ERR_INVALID (index
** out of range, steps < 0), AD_ERR_NOMEM (making state for new parameters); the
** optimiser is unchanged on error. */
AD_API ad_status ad_optim_set_steps(ad_optim *o, int index, int64_t steps);

/*
** A multi-step learning-rate schedule, as torch.optim.lr_scheduler.MultiStepLR: the
** rate for epoch `epoch` (0-based) is base_lr multiplied by gamma once for each
** milestone <= epoch, the products taken in turn as torch's chained steps take them (so
** the value is torch's bit for bit). A pure function; the schedule's position is the
** epoch, which the caller keeps (a checkpoint's step or metadata).
** Example (fragment):
**     static const int ms[] = {50, 75};
**     ad_lr_multistep_config s = {.base_lr = 0.1, .milestones = ms, .n_milestones = 2,
**                                 .gamma = 0.1};
**     double lr;
**     if (ad_lr_multistep(&s, 60, &lr) == AD_OK) // lr = 0.1 * 0.1
**         ad_optim_set_lr(opt, lr);
*/
typedef struct ad_lr_multistep_config {
    double base_lr;        /* in [0, inf) */
    const int *milestones; /* n_milestones epochs, >= 0, strictly increasing; the
                              caller's array, read during the call only */
    int n_milestones;      /* >= 0 (0: the rate is base_lr throughout) */
    double gamma;          /* the factor at each milestone, in (0, inf) */
} ad_lr_multistep_config;

/* The rate for epoch into *lr (out). Errors: AD_ERR_NULL (cfg or lr; milestones with
** n_milestones > 0), AD_ERR_INVALID (a field outside its range above or epoch < 0,
** named in the message); *lr is unchanged on error. */
AD_API ad_status ad_lr_multistep(const ad_lr_multistep_config *cfg, int epoch, double *lr);

/*
** Weight-norm constraint (BioTorch's constrain_weights): each weight is rescaled, after
** every optimiser step, to the Frobenius norm it had at the start. The initial norms
** are a float64 rank-1 tensor of n elements the caller owns, so a checkpoint carries
** them as a buffer (ad_checkpoint_extras.buffers) and a resumed run rescales to the
** same norms.
** Example (fragment):
**     ad_tensor *ws[] = {&W}, *norms;
**     ad_tensor_new(AD_F64, 1, (int64_t[]){1}, &norms);
**     ad_weight_norms_record(ws, 1, norms);          // once, after initialisation
**     ad_constrain_weights(ws, 1, norms);            // after every ad_optim_step
** Norms are computed in double whatever the dtype. ad_weight_norms_record writes
** norms[i] = ||weights[i]|| and bumps norms' version; ad_constrain_weights multiplies
** every element of weights[i] by norms[i] / ||weights[i]|| (rounded to the weight's
** dtype) and bumps its version, leaving a weight whose norm is 0 or not finite as it
** is (there is no direction to rescale). Errors: AD_ERR_NULL (weights, norms or a
** weight), AD_ERR_INVALID (n < 0; a saved norm negative or not finite), AD_ERR_DTYPE (a
** weight not float32 or float64, norms not float64), AD_ERR_SHAPE (norms not rank 1 of
** n elements); a failed call changes nothing.
*/
AD_API ad_status ad_weight_norms_record(ad_tensor *const weights[], int n,
                                        ad_tensor *norms);
AD_API ad_status ad_constrain_weights(ad_tensor *const weights[], int n,
                                      const ad_tensor *norms);

/* The global L2 norm of every present gradient in gs (0 if none). */
AD_API double ad_grads_global_norm(const ad_grads *gs);

#ifdef __cplusplus
}
#endif
#endif /* AD_NN_H */
