/*
** tape_print.c: the tape describing itself, so a user can see which rule served
** each call (the Julia user's println, without editing the rule).
*/
#include <inttypes.h>

#include "tape_internal.h"

static void print_leaf(const tape_value *v, FILE *f)
{
    char d[64];
    fprintf(f, "  %%%-3u leaf  %-28s %s\n", v->index, v->leaf_name ? v->leaf_name : "",
            ad_tensor_describe(v->tensor, d, sizeof d));
}

static void print_node(const adi_node *n, FILE *f)
{
    char d[64];
    fprintf(f, "  %%%-3u %-16s rule \"%s\"  (", n->out->index, n->fn_name,
            n->entry->rule.name);
    for (int i = 0; i < n->n_in; i++)
        fprintf(f, "%s%%%u %s", i ? ", " : "", n->in[i]->index,
                ad_tensor_describe(n->in[i]->tensor, d, sizeof d));
    fprintf(f, ") -> %s%s\n", ad_tensor_describe(n->out->tensor, d, sizeof d),
            n->saving ? "" : "  [forward only]");
}

ad_status ad_tape_print(const ad_tape *tape, FILE *f)
{
    if (!tape || !f)
        return ad_fail(AD_ERR_NULL, "ad_tape_print: NULL argument");
    ad_tape_stats s = ad_tape_get_stats(tape);
    fprintf(f, "tape: %u values, %zu nodes; arena %zu bytes in use, %zu high water; "
            "%" PRIu64 " heap allocations\n", tape->n_values, s.nodes, s.bytes_used,
            s.high_water, s.heap_allocs);
    /* Leaves and nodes share one numbering; merge the two lists by it. */
    const tape_value *leaf = tape->leaves;
    const adi_node *node = tape->first;
    while (leaf || node) {
        if (leaf && (!node || leaf->index < node->out->index)) {
            print_leaf(leaf, f);
            leaf = leaf->next_leaf;
        } else {
            print_node(node, f);
            node = node->next;
        }
    }
    if (tape->err)
        fprintf(f, "  error: %s\n", tape->err_msg);
    return AD_OK;
}

ad_status ad_tape_print_rule_counts(const ad_tape *tape, FILE *f)
{
    if (!tape || !f)
        return ad_fail(AD_ERR_NULL, "ad_tape_print_rule_counts: NULL argument");
    fprintf(f, "%-48s %10s %14s\n", "rule (function)", "this tape", "process total");
    for (uint32_t id = 0; id < tape->counts_cap; id++) {
        const adi_rule_entry *e = tape->rule_of[id];
        if (!e || tape->rule_counts[id] == 0)
            continue;
        char label[128];
        snprintf(label, sizeof label, "%s (%s)", e->rule.name, e->fn_name);
        fprintf(f, "%-48s %10" PRIu64 " %14" PRIu64 "\n", label, tape->rule_counts[id],
                (uint64_t)atomic_load(&e->stats->pullbacks));
    }
    return AD_OK;
}
