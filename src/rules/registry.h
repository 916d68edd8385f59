/*
** registry.h (internal): what the tape sees of the rule table.
**
** An entry is one registered rule version. Entries are never freed while the process
** runs (a replaced or unregistered rule moves to a retired list), so a tape node may
** keep a pointer to the entry that served it and read it without a lock.
*/
#ifndef AD_REGISTRY_H
#define AD_REGISTRY_H

#include <stdatomic.h>
#include "ad_rule.h"

/* Per function, shared by every rule version registered for it. */
typedef struct adi_fn_stats {
    _Atomic uint64_t pullbacks; /* process total of pullback runs */
    uint32_t fn_id;             /* dense id: index of per-tape counters */
} adi_fn_stats;

typedef struct adi_rule_entry {
    ad_primal_fn fn;      /* the key */
    const char *fn_name;  /* as spelled at registration */
    ad_rule rule;         /* the caller's rule, copied; rule.name never NULL */
    adi_fn_stats *stats;
    struct adi_rule_entry *next_all; /* every entry ever made, for the exit-time release */
} adi_rule_entry;

/* *out = the current entry for fn, or NULL when fn has none. Holds the read lock only
** for the find. Fails only with AD_ERR_NOMEM, when the built-ins could not be seeded. */
ad_status adi_registry_lookup(ad_primal_fn fn, const adi_rule_entry **out);

/* Counts one pullback run (atomic). */
static inline void adi_registry_count(const adi_rule_entry *e)
{
    atomic_fetch_add_explicit(&e->stats->pullbacks, 1, memory_order_relaxed);
}

/*
** The built-in rules, supplied by the library's op families and registered on the
** first use of the table (pthread_once), so no user can forget an init call. The
** registry only sees this array; it includes nothing from the ops.
*/
typedef struct adi_rule_seed {
    ad_primal_fn fn;
    const char *fn_name;
    const ad_rule *rule;
} adi_rule_seed;
extern const adi_rule_seed adi_builtin_rule_seeds[];
extern const int adi_builtin_rule_seed_count;

#endif /* AD_REGISTRY_H */
