/*
** builtin_rules.c: the table the registry seeds itself from on first use: the op
** families' rules and the learning rules. Adding a built-in rule adds one line here.
*/
#include "ad_feedback.h"
#include "nn/nn_rules.h"
#include "ops/ops_internal.h"
#include "rules/registry.h"

#define SEED(fn, rule) {fn, #fn, &rule}

const adi_rule_seed adi_builtin_rule_seeds[] = {
    SEED(ad_op_matmul, ad_rule_matmul),
    SEED(ad_op_add, ad_rule_add),
    SEED(ad_op_sub, ad_rule_sub),
    SEED(ad_op_mul, ad_rule_mul),
    SEED(ad_op_scale, ad_rule_scale),
    SEED(ad_op_bias_add, ad_rule_bias_add),
    SEED(ad_op_tanh, ad_rule_tanh),
    SEED(ad_op_relu, ad_rule_relu),
    SEED(ad_op_sigmoid, ad_rule_sigmoid),
    SEED(ad_op_bias_relu, ad_rule_bias_relu),
    SEED(ad_op_bias_tanh, ad_rule_bias_tanh),
    SEED(ad_op_sum, ad_rule_sum),
    SEED(ad_op_mean, ad_rule_mean),
    SEED(ad_op_mse, ad_rule_mse),
    SEED(ad_op_softmax_cross_entropy, ad_rule_softmax_cross_entropy),
    SEED(ad_op_dense_fa, ad_rule_dense_fa),
    SEED(ad_op_dense_usf, ad_rule_dense_usf),
    SEED(ad_op_dense_sf, ad_rule_dense_sf),
    SEED(ad_op_dense_kp, ad_rule_dense_kp),
    SEED(ad_op_dfa_output, ad_rule_dfa_output),
    SEED(ad_op_dfa_hidden, ad_rule_dfa_hidden),
};

const int adi_builtin_rule_seed_count =
    (int)(sizeof adi_builtin_rule_seeds / sizeof adi_builtin_rule_seeds[0]);
