/*
** builtin_rules.c: the op families whose rules the registry seeds itself with on
** first use. Each family file holds its own table (ADI_RULE_FAMILY); a new family file
** adds one line here, a new op in an existing family adds nothing here.
*/
#include "rules/builtin.h"

extern const adi_rule_family adi_family_matmul, adi_family_elementwise,
    adi_family_activations, adi_family_bias_act, adi_family_reductions, adi_family_losses,
    adi_family_feedback, adi_family_dfa, adi_family_dfa_conv, adi_family_conv,
    adi_family_conv_feedback, adi_family_shape, adi_family_max_pool, adi_family_avg_pool,
    adi_family_usf_scaled, adi_family_clamp_grad, adi_family_unary, adi_family_bce;

const adi_rule_family *const adi_builtin_families[] = {
    &adi_family_matmul,     &adi_family_elementwise, &adi_family_activations,
    &adi_family_bias_act,   &adi_family_reductions,  &adi_family_losses,
    &adi_family_feedback,   &adi_family_dfa,         &adi_family_dfa_conv,
    &adi_family_conv,       &adi_family_conv_feedback, &adi_family_shape,
    &adi_family_max_pool,   &adi_family_avg_pool,    &adi_family_usf_scaled,
    &adi_family_clamp_grad,  &adi_family_unary,      &adi_family_bce,
};

const int adi_builtin_family_count =
    (int)(sizeof adi_builtin_families / sizeof adi_builtin_families[0]);
