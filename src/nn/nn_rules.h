/*
** nn_rules.h (internal): the rules src/nn registers as built-ins, gathered by
** src/builtin_rules.c.
*/
#ifndef AD_NN_RULES_H
#define AD_NN_RULES_H

#include "ad_rule.h"

extern const ad_rule ad_rule_dense_fa, ad_rule_dense_usf, ad_rule_dense_sf,
    ad_rule_dense_kp;
extern const ad_rule ad_rule_dfa_output, ad_rule_dfa_hidden;

#endif /* AD_NN_RULES_H */
