/*
** seed_model.h: the seed scenario as the tests use it: the user's own my_matmul
** with a Feedback Alignment rule, a 50 -> 60 -> 40 -> 2 model without bias or
** nonlinearity, MSE, and naive reference computations written independently of both
** the library and the user's pullback.
*/
#ifndef TEST_SEED_MODEL_H
#define TEST_SEED_MODEL_H

#include "ad.h"

enum { SEED_LAYERS = 3, SEED_BATCH = 64 };
extern const int64_t seed_widths[SEED_LAYERS + 1];

/* The user's primal: Y = X W' (W out x in, X batch x in); B only rides along. */
ad_status my_matmul(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out);
/* FA:  dW = dY' X;  dX = dY B. Counts its calls in seed_pullback_log. */
ad_status my_matmul_pullback(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                             const ad_tensor *y, ad_tensor *const din[], const float beta[]);
extern const ad_rule my_matmul_rule;

/* What my_matmul_pullback saw, to show which slots the sweep asked for. */
typedef struct seed_pullback_log {
    int calls;
    int dx_requested;           /* din[1] != NULL */
    int dx_requested_for_data;  /* din[1] != NULL while X was the data tensor */
    const ad_tensor *data;      /* set by the test: the model's input tensor */
} seed_pullback_log;
extern _Thread_local seed_pullback_log seed_log;

typedef struct seed_model {
    ad_tensor *W[SEED_LAYERS], *B[SEED_LAYERS];
    ad_tensor *x, *y;
    ad_params *ps;
    ad_grads *gs;
} seed_model;

/* Glorot-uniform W and B, uniform x and y in [-1, 1), all from `seed`; W in ps. */
void seed_model_make(seed_model *m, ad_dtype dtype, uint64_t seed);
void seed_model_free(seed_model *m);

/* The ad_gradient loss callback: mse(model(x), y) with my_matmul layers. */
ad_var seed_loss(ad_tape *t, void *model);
/* The same model through the built-in ad_matmul (plain backprop). */
ad_var seed_loss_backprop(ad_tape *t, void *model);

/* Naive float64 reference of every layer's dW: feedback through B (fa != 0) or W. */
void seed_reference_grads(const seed_model *m, int fa, double *dW[SEED_LAYERS]);

#endif /* TEST_SEED_MODEL_H */
