/*
** mlp.h: the model the MPI tests train: 20 -> 16 -> 12 -> 4, bias and tanh,
** softmax cross-entropy with int32 labels, recorded through the public API with one of
** three learning rules: backprop (ad_matmul), feedback alignment (ad_dense_fa with a
** fixed B per layer, not a parameter) or DFA (ad_dfa_*, B_l hidden x outputs).
**
** Parameter order (the index in ps): U, W0, b0, W1, b1, W2, b2. U is a 3-element
** parameter of the other float dtype that the loss never uses: it must stay without a
** gradient, and it puts a second dtype into the bucket plan.
*/
#ifndef MPI_MLP_H
#define MPI_MLP_H

#include "ad.h"

enum { MLP_BP, MLP_FA, MLP_DFA };
enum { MLP_LAYERS = 3, MLP_IN = 20, MLP_OUT = 4, MLP_ROWS = 16, MLP_PARAMS = 7 };

/* What the loss records on top of the model, to make a step fail on purpose. */
enum { MLP_GOOD, MLP_FAIL_PULLBACK, MLP_FAIL_RECORD };

typedef struct mlp {
    int rule;
    ad_dtype dtype;
    ad_tensor *U;
    ad_tensor *W[MLP_LAYERS], *b[MLP_LAYERS];
    ad_tensor *B[MLP_LAYERS]; /* FA: all three (W's shapes); DFA: B[0], B[1] */
    ad_params *ps;
    ad_grads *gs;
    ad_optim *opt; /* SGD with momentum 0.9, lr 0.1 */
    ad_tape *tape;
    ad_dfa dfa;
} mlp;

/* Weights from `seed`, feedback matrices from `feedback_seed`. Aborts the job if it
** cannot be made (REQUIRE). */
void mlp_new(mlp *m, int rule, ad_dtype dtype, uint64_t seed, uint64_t feedback_seed);
void mlp_free(mlp *m);
const char *mlp_rule_name(int rule);

/* The data of the global batch: MLP_ROWS x MLP_IN inputs in m's dtype, and labels. */
typedef struct mlp_data {
    ad_tensor *x, *y;
} mlp_data;
void mlp_data_new(mlp_data *d, ad_dtype dtype, uint64_t seed);
void mlp_data_free(mlp_data *d);

/* What the loss function gets: the model and views of rows [row0, row0 + rows). */
typedef struct mlp_batch {
    mlp *m;
    ad_tensor x, y;
    int fail;
} mlp_batch;
void mlp_batch_init(mlp_batch *bt, mlp *m, const mlp_data *d, int row0, int rows);
ad_var mlp_loss(ad_tape *t, void *user);

/* Registers fail_identity's rule (an identity whose pullback fails with
** AD_ERR_INVALID, "failing on purpose"); once, before the first failing step. */
void mlp_register_failing_rule(void);

/* Nonzero when every parameter of a and b is bitwise the same. */
int mlp_params_equal(const mlp *a, const mlp *b);

#endif /* MPI_MLP_H */
