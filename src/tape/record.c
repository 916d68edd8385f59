/*
** record.c: ad_call, where a call is checked against its rule and recorded.
**
** The rule is looked up by the same pointer that is then called, and every check
** (arity, dtypes, ranks, attributes) happens before the primal runs, so a call outside
** what its rule accepts never reaches arithmetic, and never falls through to another
** rule.
*/
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#include "../base/base.h"
#include "tape_internal.h"

static const ad_var poisoned = {NULL, 0};

/* ad_attrs promises the arena copy is aligned for any attribute struct. */
_Static_assert(AD_ARENA_ALIGN % _Alignof(max_align_t) == 0,
               "the arena's alignment must cover alignof(max_align_t)");

/* Lists the inputs' shapes ("60x50 f32, 64x50 f32") for messages. */
static void describe_inputs(const tape_value *const in[], int n, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < size; i++) {
        char one[64];
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
                                 ad_tensor_describe(in[i]->tensor, one, sizeof one));
    }
}

/*
** The spelled name is the key's name for every direct call, static functions
** included. When the call went through a pointer variable the spelling names the
** variable, so the dynamic symbol (if the function is exported) is added.
*/
static ad_status fail_no_rule(ad_primal_fn fn, const char *fn_name)
{
    void *addr;
    Dl_info info;
    memcpy(&addr, &fn, sizeof addr < sizeof fn ? sizeof addr : sizeof fn);
    if (dladdr(addr, &info) && info.dli_sname && info.dli_saddr == addr &&
        strcmp(info.dli_sname, fn_name) != 0)
        return ad_fail(AD_ERR_NO_RULE, "ad_call: no rule registered for %s (symbol %s)",
                       fn_name, info.dli_sname);
    return ad_fail(AD_ERR_NO_RULE, "ad_call: no rule registered for %s", fn_name);
}

static ad_status check_inputs(const adi_rule_entry *e, const char *fn_name,
                              const tape_value *const in[], int n)
{
    const ad_rule *r = &e->rule;
    char shapes[256];
    if (n != r->n_inputs) {
        describe_inputs(in, n, shapes, sizeof shapes);
        return ad_fail(AD_ERR_ARITY, "ad_call %s (rule \"%s\"): %d inputs given (%s), "
                       "the rule takes %d", fn_name, r->name, n, shapes, r->n_inputs);
    }
    ad_dtype float_dtype = 0;
    for (int i = 0; i < n; i++) {
        const ad_tensor *t = in[i]->tensor;
        unsigned dtypes = r->inputs[i].dtypes ? r->inputs[i].dtypes : AD_ACCEPT_FLOAT;
        unsigned ranks = r->inputs[i].ranks;
        if (!(dtypes & (1u << t->dtype))) {
            describe_inputs(in, n, shapes, sizeof shapes);
            return ad_fail(AD_ERR_DTYPE, "ad_call %s (rule \"%s\"): input %d has dtype %s, "
                           "which the rule does not accept (inputs: %s)", fn_name, r->name,
                           i, ad_dtype_name(t->dtype), shapes);
        }
        if (ranks && !(ranks & AD_RANK(t->ndim))) {
            describe_inputs(in, n, shapes, sizeof shapes);
            return ad_fail(AD_ERR_RANK, "ad_call %s (rule \"%s\"): input %d has rank %d, "
                           "which the rule does not accept (inputs: %s)", fn_name, r->name,
                           i, t->ndim, shapes);
        }
        if (t->dtype == AD_I32 || (r->flags & AD_RULE_MIXED_DTYPES))
            continue;
        if (float_dtype && t->dtype != float_dtype) {
            describe_inputs(in, n, shapes, sizeof shapes);
            return ad_fail(AD_ERR_DTYPE, "ad_call %s (rule \"%s\"): mixed float dtypes "
                           "(inputs: %s)", fn_name, r->name, shapes);
        }
        float_dtype = t->dtype;
    }
    return AD_OK;
}

/*
** Attributes are given when attrs is not NULL; given, they must be exactly the rule's
** attrs_size bytes, since a primal reads them through its struct and a short buffer
** would be read past its end. Not given, the rule's defaults stand in, or the call is
** refused when it has none. *bytes is what the node will copy (NULL: nothing).
*/
static ad_status check_attrs(const adi_rule_entry *e, const char *fn_name, const void *attrs,
                             size_t size, const void **bytes)
{
    const ad_rule *r = &e->rule;
    if (!attrs && size)
        return ad_fail(AD_ERR_NULL, "ad_call %s (rule \"%s\"): attrs is NULL but "
                       "attrs_size is %zu", fn_name, r->name, size);
    if (attrs && !r->attrs_size)
        return ad_fail(AD_ERR_ATTRS, "ad_call %s (rule \"%s\"): attributes of %zu bytes "
                       "given, but the rule takes none (its attrs_size is 0)", fn_name,
                       r->name, size);
    if (!attrs && !r->attrs_default && r->attrs_size)
        return ad_fail(AD_ERR_ATTRS, "ad_call %s (rule \"%s\"): no attributes given (0 "
                       "bytes), but the rule requires %zu bytes and has no defaults",
                       fn_name, r->name, r->attrs_size);
    if (attrs && size != r->attrs_size)
        return ad_fail(AD_ERR_ATTRS, "ad_call %s (rule \"%s\"): attributes of %zu bytes "
                       "given, but the rule's are %zu bytes", fn_name, r->name, size,
                       r->attrs_size);
    *bytes = attrs ? attrs : r->attrs_default;
    return AD_OK;
}

/* Per-tape counters are indexed by the function's dense id; they grow only when a
** function is first recorded on this tape, never in a steady-state step. */
static ad_status reserve_counter(ad_tape *tape, const adi_rule_entry *e)
{
    uint32_t id = e->stats->fn_id;
    if (id < tape->counts_cap) {
        tape->rule_of[id] = e;
        return AD_OK;
    }
    uint32_t cap = tape->counts_cap ? tape->counts_cap : 16;
    while (cap <= id)
        cap *= 2;
    uint64_t *counts = adi_calloc(cap, sizeof *counts);
    const adi_rule_entry **of = adi_calloc(cap, sizeof *of);
    if (!counts || !of) {
        ad_free(counts);
        ad_free(of);
        return ad_fail(AD_ERR_NOMEM, "ad_call %s: out of memory", e->fn_name);
    }
    if (tape->counts_cap) {
        memcpy(counts, tape->rule_counts, tape->counts_cap * sizeof *counts);
        memcpy(of, tape->rule_of, tape->counts_cap * sizeof *of);
    }
    ad_free(tape->rule_counts);
    ad_free(tape->rule_of);
    tape->rule_counts = counts;
    tape->rule_of = of;
    tape->counts_cap = cap;
    tape->heap_allocs += 2;
    tape->rule_of[id] = e;
    return AD_OK;
}

static ad_status resolve_inputs(ad_tape *tape, const char *fn_name, const ad_var *inputs,
                                int n, tape_value *out[])
{
    if (n < 1 || n > AD_MAX_INPUTS)
        return ad_fail(AD_ERR_ARITY, "ad_call %s: %d inputs (1..%d allowed)", fn_name, n,
                       AD_MAX_INPUTS);
    if (!inputs)
        return ad_fail(AD_ERR_NULL, "ad_call %s: inputs is NULL for %d inputs", fn_name, n);
    for (int i = 0; i < n; i++) {
        out[i] = adi_tape_resolve(tape, inputs[i]);
        if (!out[i])
            return ad_fail(AD_ERR_BAD_HANDLE, "ad_call %s: input %d is %s", fn_name, i,
                           inputs[i].v_ ? "from another tape or from before a reset"
                                        : "a poisoned handle from another tape");
        /* A sweep with memory saving handed this value's memory to a cotangent:
        ** the primal would read whatever the cotangent left there. */
        const tape_value *store = adi_value_storage(out[i]);
        if (store->value_reused)
            return ad_fail(AD_ERR_REUSED, "ad_call %s: input %d (value %u, %s) was reused "
                           "by a memory-saving sweep; mark it with ad_keep before the sweep",
                           fn_name, i, out[i]->index,
                           out[i]->producer ? out[i]->producer->fn_name : "a leaf");
    }
    return AD_OK;
}

/* Runs the primal in a fresh node; the node is linked only if it succeeds. */
static ad_status run_primal(ad_tape *tape, adi_node *node, ad_primal_fn fn)
{
    const ad_tensor *in[AD_MAX_INPUTS];
    for (int i = 0; i < node->n_in; i++)
        in[i] = node->in[i]->tensor;
    ad_ctx cx = {tape, node, true, NULL};
    ad_tensor *out = NULL;
    ad_status rc = fn(&cx, in, &out);
    if (rc == AD_OK && (!cx.out || out != cx.out))
        rc = ad_fail(AD_ERR_BAD_RULE, "did not return the tensor from ad_out");
    if (rc) {
        char msg[512], shapes[256];
        snprintf(msg, sizeof msg, "%s", ad_last_error());
        describe_inputs((const tape_value *const *)node->in, node->n_in, shapes, sizeof shapes);
        return ad_fail(rc, "ad_call %s (rule \"%s\"): %s (inputs: %s)", node->fn_name,
                       node->entry->rule.name, msg, shapes);
    }
    node->out->out = *cx.out;
    if (node->view_input)
        node->out->base = adi_value_storage(node->in[node->view_input - 1]);
    return AD_OK;
}

static ad_status record(ad_tape *tape, ad_primal_fn fn, const char *fn_name,
                        const ad_var *inputs, int n, const void *attrs, size_t attrs_size,
                        tape_value **result)
{
    tape_value *in[AD_MAX_INPUTS];
    const adi_rule_entry *e = NULL;
    const void *attrs_src = NULL;
    if (!fn)
        return ad_fail(AD_ERR_NULL, "ad_call: the function is NULL");
    ad_status rc = resolve_inputs(tape, fn_name, inputs, n, in);
    if (rc == AD_OK)
        rc = adi_registry_lookup(fn, &e);
    if (rc)
        return rc;
    if (!e)
        return fail_no_rule(fn, fn_name);
    if ((rc = check_inputs(e, fn_name, (const tape_value *const *)in, n)) ||
        (rc = check_attrs(e, fn_name, attrs, attrs_size, &attrs_src)) ||
        (rc = reserve_counter(tape, e)))
        return rc;
    size_t copy_size = attrs_src ? e->rule.attrs_size : 0;
    adi_node *node = adi_arena_alloc(&tape->arena, sizeof *node);
    tape_value *out = adi_arena_alloc(&tape->arena, sizeof *out);
    void *attrs_copy = copy_size ? adi_arena_alloc(&tape->arena, copy_size) : NULL;
    if (!node || !out || (copy_size && !attrs_copy))
        return ad_fail(AD_ERR_NOMEM, "ad_call %s: out of memory", fn_name);
    memset(node, 0, sizeof *node);
    memset(out, 0, sizeof *out);
    if (attrs_copy)
        memcpy(attrs_copy, attrs_src, copy_size);
    node->entry = e;
    node->fn_name = fn_name;
    node->out = out;
    node->n_in = n;
    memcpy(node->in, in, (size_t)n * sizeof in[0]);
    node->attrs = attrs_copy;
    node->saving = tape->grad_enabled;
    out->producer = node;
    out->tensor = &out->out;
    node->index = tape->n_nodes; /* its index once linked below; messages name it */
    if ((rc = run_primal(tape, node, fn)))
        return rc;
    if (tape->anomaly && (rc = adi_anomaly_check_value(node)))
        return rc;
    tape->n_nodes++;
    out->index = tape->n_values++;
    node->prev = tape->last;
    if (tape->last)
        tape->last->next = node;
    else
        tape->first = node;
    tape->last = node;
    tape->sweep_ready = tape->sweep_ready && node->saving;
    *result = out;
    return AD_OK;
}

ad_var ad_call_as(ad_tape *tape, ad_primal_fn fn, const char *fn_name,
                  const ad_var *inputs, int n, const void *attrs, size_t attrs_size)
{
    if (!fn_name)
        fn_name = "(unnamed function)";
    if (!tape) {
        ad_fail(AD_ERR_NULL, "ad_call %s: tape is NULL", fn_name);
        return poisoned;
    }
    if (tape->err)
        return poisoned; /* the first error stays the one reported */
    tape_value *out = NULL;
    ad_status rc = record(tape, fn, fn_name, inputs, n, attrs, attrs_size, &out);
    if (rc) {
        adi_tape_poison(tape, rc);
        return poisoned;
    }
    return (ad_var){out, tape->gen};
}

ad_status adi_node_pullback(ad_tape *tape, adi_node *node, ad_pullback_fn pullback,
                           const ad_tensor *dy, ad_tensor *const din[], const float beta[])
{
    const ad_tensor *in[AD_MAX_INPUTS];
    for (int i = 0; i < node->n_in; i++)
        in[i] = node->in[i]->tensor;
    ad_ctx cx = {tape, node, false, NULL};
    ad_status rc = pullback(&cx, dy, in, node->out->tensor, din, beta);
    if (rc) {
        char msg[512], shapes[256];
        snprintf(msg, sizeof msg, "%s", ad_last_error());
        describe_inputs((const tape_value *const *)node->in, node->n_in, shapes, sizeof shapes);
        return ad_fail(rc, "pullback of %s (rule \"%s\", node %u): %s (inputs: %s)",
                       node->fn_name, node->entry->rule.name, node->index, msg, shapes);
    }
    return AD_OK;
}

/* Searched on the tape itself, so counts outlive the function's registration. */
uint64_t (ad_tape_pullback_count)(const ad_tape *tape, ad_primal_fn fn)
{
    for (uint32_t id = 0; tape && fn && id < tape->counts_cap; id++)
        if (tape->rule_of[id] && tape->rule_of[id]->fn == fn)
            return tape->rule_counts[id];
    return 0;
}
