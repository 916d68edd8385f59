/*
** builtin_rules.c: the table the registry seeds itself from on first use.
** Adding a built-in op adds one line here.
*/
#include "../rules/registry.h"
#include "ops_internal.h"

#define SEED(fn, rule) {fn, #fn, &rule}

const ad_rule_seed ad_builtin_rule_seeds[] = {
    SEED(ad_op_matmul, ad_rule_matmul),
    SEED(ad_op_add, ad_rule_add),
    SEED(ad_op_sub, ad_rule_sub),
    SEED(ad_op_mul, ad_rule_mul),
    SEED(ad_op_scale, ad_rule_scale),
    SEED(ad_op_bias_add, ad_rule_bias_add),
    SEED(ad_op_tanh, ad_rule_tanh),
    SEED(ad_op_relu, ad_rule_relu),
    SEED(ad_op_sigmoid, ad_rule_sigmoid),
    SEED(ad_op_sum, ad_rule_sum),
    SEED(ad_op_mean, ad_rule_mean),
    SEED(ad_op_mse, ad_rule_mse),
    SEED(ad_op_softmax_cross_entropy, ad_rule_softmax_cross_entropy),
};

const int ad_builtin_rule_seed_count =
    (int)(sizeof ad_builtin_rule_seeds / sizeof ad_builtin_rule_seeds[0]);
