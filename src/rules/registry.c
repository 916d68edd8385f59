/*
** registry.c: the process-wide rule table, keyed by the primal function pointer.
**
** uthash over a field typed as the function-pointer type (HASH_FIND/HASH_ADD with
** sizeof(ad_primal_fn)): ISO C defines no cast from a function pointer to void *, so
** HASH_ADD_PTR is not used. A reader-writer lock guards the table; a lookup holds the
** read lock for the find only. Entries are immutable once published and never freed,
** so tapes read them without a lock.
*/
#define _POSIX_C_SOURCE 200809L /* pthread_rwlock_t */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "../base/base.h"
#include "builtin.h"
#include "registry.h"

static bool table_oom;
#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) ad_malloc(sz)
#define uthash_free(ptr, sz) ad_free(ptr)
#define uthash_nonfatal_oom(elt) (table_oom = true)
#include <uthash.h>

/* One per function ever registered; survives unregistration so totals persist. */
typedef struct fn_slot {
    ad_primal_fn fn; /* hash key */
    adi_rule_entry *current; /* NULL once unregistered */
    adi_fn_stats stats;
    UT_hash_handle hh;
} fn_slot;

static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER;
static fn_slot *table;
static uint32_t slot_count;
static adi_rule_entry *all_entries; /* current, replaced and unregistered alike */
static atomic_int seeded;

static fn_slot *find_slot(ad_primal_fn fn)
{
    fn_slot *s = NULL;
    HASH_FIND(hh, table, &fn, sizeof(ad_primal_fn), s);
    return s;
}

static ad_status validate(const ad_rule *r, const char *fn_name)
{
    if (!r->pullback)
        return ad_fail(AD_ERR_BAD_RULE, "ad_rule_register: rule for %s has no pullback",
                       fn_name);
    if (r->n_inputs < 1 || r->n_inputs > AD_MAX_INPUTS)
        return ad_fail(AD_ERR_BAD_RULE,
                       "ad_rule_register: rule for %s takes %d inputs (1..%d allowed)",
                       fn_name, r->n_inputs, AD_MAX_INPUTS);
    unsigned slots = (1u << r->n_inputs) - 1u;
    if ((r->nondiff | r->not_gradient | (r->unread & ~AD_OUTPUT)) & ~slots)
        return ad_fail(AD_ERR_BAD_RULE,
                       "ad_rule_register: rule for %s names input slots past its %d inputs",
                       fn_name, r->n_inputs);
    if (r->flags & ~(AD_RULE_MIXED_DTYPES | AD_RULE_IGNORES_DY))
        return ad_fail(AD_ERR_BAD_RULE, "ad_rule_register: rule for %s has unknown flags "
                       "0x%x", fn_name, r->flags & ~(AD_RULE_MIXED_DTYPES | AD_RULE_IGNORES_DY));
    if (r->attrs_default && !r->attrs_size)
        return ad_fail(AD_ERR_BAD_RULE, "ad_rule_register: rule for %s has attrs_default "
                       "but attrs_size 0 (defaults of no size)", fn_name);
    if (r->signal && !(r->flags & AD_RULE_IGNORES_DY))
        return ad_fail(AD_ERR_BAD_RULE, "ad_rule_register: rule for %s has a signal hook "
                       "but not AD_RULE_IGNORES_DY (only a pullback that ignores dy reads "
                       "a signal)", fn_name);
    for (int i = 0; i < r->n_inputs; i++) {
        if (r->inputs[i].dtypes & ~(AD_ACCEPT_FLOAT | AD_ACCEPT_I32) ||
            r->inputs[i].ranks & ~((1u << (AD_MAX_RANK + 1)) - 1u))
            return ad_fail(AD_ERR_BAD_RULE,
                           "ad_rule_register: rule for %s: input %d accepts unknown "
                           "dtypes or ranks", fn_name, i);
    }
    return AD_OK;
}

/* Adds or replaces under the write lock. Nothing changes unless it all succeeds. */
static ad_status register_locked(ad_primal_fn fn, const char *fn_name, const ad_rule *rule,
                                 unsigned flags)
{
    fn_slot *slot = find_slot(fn);
    if (slot && slot->current && !(flags & AD_REPLACE))
        return ad_fail(AD_ERR_RULE_EXISTS,
                       "ad_rule_register: %s already has rule \"%s\" (pass AD_REPLACE, or "
                       "use ad_rule_replace, to replace it)",
                       fn_name, slot->current->rule.name);
    /* The defaults ride in the entry itself: freed with it, and never before it. */
    size_t bytes = sizeof(adi_rule_entry);
    if (rule->attrs_default && !adi_size_add(bytes, rule->attrs_size, &bytes))
        return ad_fail(AD_ERR_OVERFLOW, "ad_rule_register: rule for %s: attrs_size %zu "
                       "is too large to copy its defaults", fn_name, rule->attrs_size);
    adi_rule_entry *e = ad_malloc(bytes);
    if (!e)
        return ad_fail(AD_ERR_NOMEM, "ad_rule_register: out of memory for %s", fn_name);
    if (!slot) {
        slot = adi_calloc(1, sizeof *slot);
        if (!slot) {
            ad_free(e);
            return ad_fail(AD_ERR_NOMEM, "ad_rule_register: out of memory for %s", fn_name);
        }
        slot->fn = fn;
        slot->stats.fn_id = slot_count;
        table_oom = false;
        HASH_ADD(hh, table, fn, sizeof(ad_primal_fn), slot);
        if (table_oom) {
            ad_free(slot);
            ad_free(e);
            return ad_fail(AD_ERR_NOMEM, "ad_rule_register: out of memory for %s", fn_name);
        }
        slot_count++;
    }
    e->fn = fn;
    e->fn_name = fn_name;
    e->rule = *rule;
    if (!e->rule.name)
        e->rule.name = fn_name;
    if (rule->attrs_default) {
        memcpy(e->defaults, rule->attrs_default, rule->attrs_size);
        e->rule.attrs_default = e->defaults;
    }
    e->stats = &slot->stats;
    /* A replaced entry stays allocated (on all_entries): recorded tapes may still
    ** point at it and run its pullback. */
    e->next_all = all_entries;
    all_entries = e;
    slot->current = e;
    return AD_OK;
}

static ad_status seed_builtins_locked(void)
{
    for (int f = 0; f < adi_builtin_family_count; f++) {
        const adi_rule_family *family = adi_builtin_families[f];
        for (int i = 0; i < family->count; i++) {
            const adi_rule_seed *s = &family->seeds[i];
            fn_slot *slot = find_slot(s->fn);
            if (slot && slot->current)
                continue; /* seeded by an earlier, partly failed attempt */
            ad_status rc = register_locked(s->fn, s->fn_name, s->rule, 0);
            if (rc)
                return rc;
        }
    }
    atomic_store(&seeded, 1);
    return AD_OK;
}

/* Built-ins go in on first use; a failed attempt (out of memory) is retried later. */
static ad_status ensure_seeded(void)
{
    if (atomic_load_explicit(&seeded, memory_order_acquire))
        return AD_OK;
    pthread_rwlock_wrlock(&table_lock);
    ad_status rc = atomic_load(&seeded) ? AD_OK : seed_builtins_locked();
    pthread_rwlock_unlock(&table_lock);
    return rc;
}

/*
** At process exit the table and every entry are released, so leak checkers see a
** clean exit. Tapes must not be used from other destructors after this one.
*/
__attribute__((destructor)) static void release_registry(void)
{
    pthread_rwlock_wrlock(&table_lock);
    fn_slot *slot, *tmp;
    HASH_ITER(hh, table, slot, tmp) {
        HASH_DEL(table, slot);
        ad_free(slot);
    }
    for (adi_rule_entry *e = all_entries, *next; e; e = next) {
        next = e->next_all;
        ad_free(e);
    }
    all_entries = NULL;
    slot_count = 0;
    atomic_store(&seeded, 0);
    pthread_rwlock_unlock(&table_lock);
}

ad_status ad_rule_register_as(ad_primal_fn fn, const char *fn_name, const ad_rule *rule,
                              unsigned flags)
{
    if (!fn_name)
        fn_name = "(unnamed function)";
    if (!fn || !rule)
        return ad_fail(AD_ERR_NULL, "ad_rule_register: %s is NULL",
                       !fn ? "the function" : "the rule");
    ad_status rc = validate(rule, fn_name);
    if (rc)
        return rc;
    rc = ensure_seeded();
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&table_lock);
    rc = register_locked(fn, fn_name, rule, flags);
    pthread_rwlock_unlock(&table_lock);
    return rc;
}

ad_status (ad_rule_unregister)(ad_primal_fn fn)
{
    if (!fn)
        return ad_fail(AD_ERR_NULL, "ad_rule_unregister: the function is NULL");
    ad_status rc = ensure_seeded();
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&table_lock);
    fn_slot *slot = find_slot(fn);
    bool had = slot && slot->current;
    if (had)
        slot->current = NULL;
    pthread_rwlock_unlock(&table_lock);
    return had ? AD_OK
               : ad_fail(AD_ERR_NO_RULE, "ad_rule_unregister: the function has no rule");
}

ad_status adi_registry_lookup(ad_primal_fn fn, const adi_rule_entry **out)
{
    ad_status rc = ensure_seeded();
    if (rc)
        return rc;
    pthread_rwlock_rdlock(&table_lock);
    fn_slot *slot = find_slot(fn);
    *out = slot ? slot->current : NULL;
    pthread_rwlock_unlock(&table_lock);
    return AD_OK;
}

const ad_rule *(ad_rule_find)(ad_primal_fn fn)
{
    const adi_rule_entry *e = NULL;
    if (fn && adi_registry_lookup(fn, &e) != AD_OK)
        return NULL;
    return e ? &e->rule : NULL;
}

uint64_t (ad_rule_total_pullbacks)(ad_primal_fn fn)
{
    if (!fn || ensure_seeded())
        return 0;
    pthread_rwlock_rdlock(&table_lock);
    fn_slot *slot = find_slot(fn);
    uint64_t n = slot ? atomic_load(&slot->stats.pullbacks) : 0;
    pthread_rwlock_unlock(&table_lock);
    return n;
}
