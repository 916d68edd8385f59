/*
** builtin.h (internal): how the library's own rules reach the registry. Each op family
** (one source file in src/ops or src/nn) ends with the table of the rules it brings,
** so adding an op to a family touches that file alone (and its test); the registry
** seeds itself from the list of families in src/builtin_rules.c on first use. Only the
** public ad_rule.h is needed to write a family: the families know nothing of the
** registry's internals, and the registry nothing of the ops.
*/
#ifndef AD_BUILTIN_H
#define AD_BUILTIN_H

#include "ad_rule.h"

/* One built-in rule: the primal (the registry's key), its spelled name, its rule. */
typedef struct adi_rule_seed {
    ad_primal_fn fn;
    const char *fn_name;
    const ad_rule *rule;
} adi_rule_seed;

typedef struct adi_rule_family {
    const char *name; /* the family, for messages */
    const adi_rule_seed *seeds;
    int count;
} adi_rule_family;

#define ADI_SEED(fn, rule) {(fn), #fn, &(rule)}

/* ADI_RULE_FAMILY(adi_family_x, "x", ADI_SEED(ad_op_a, rule_a), ...): defines the
** family object src/builtin_rules.c lists. */
#define ADI_RULE_FAMILY(var, label, ...)                                                \
    static const adi_rule_seed var##_seeds[] = {__VA_ARGS__};                           \
    const adi_rule_family var = {(label), var##_seeds,                                  \
                                 (int)(sizeof var##_seeds / sizeof var##_seeds[0])}

/* Every family, defined in src/builtin_rules.c. */
extern const adi_rule_family *const adi_builtin_families[];
extern const int adi_builtin_family_count;

#endif /* AD_BUILTIN_H */
