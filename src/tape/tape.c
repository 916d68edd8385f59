/*
** tape.c: the tape's life cycle, leaves, and what primals and pullbacks may ask of
** their context (ad_out, ad_save, ad_scratch, ad_attrs).
*/
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

#include "../base/base.h"
#include "tape_internal.h"

/* Generations are unique across tapes and resets, so a handle's generation alone
** tells whether it belongs to this tape's current recording. */
static _Atomic uint64_t next_generation = 1;

ad_status ad_tape_new(ad_tape **out)
{
    if (!out)
        return ad_fail(AD_ERR_NULL, "ad_tape_new: out is NULL");
    ad_tape *t = adi_calloc(1, sizeof *t);
    if (!t)
        return ad_fail(AD_ERR_NOMEM, "ad_tape_new: out of memory");
    adi_arena_init(&t->arena);
    t->heap_allocs = 1;
    t->grad_enabled = true;
    ad_tape_reset(t);
    *out = t;
    return AD_OK;
}

void ad_tape_free(ad_tape *tape)
{
    if (!tape)
        return;
    adi_arena_release(&tape->arena);
    ad_free(tape->rule_counts);
    ad_free(tape->rule_of);
    ad_free(tape);
}

void ad_tape_reset(ad_tape *tape)
{
    if (!tape)
        return;
    adi_arena_reset(&tape->arena);
    tape->gen = atomic_fetch_add(&next_generation, 1);
    tape->first = tape->last = NULL;
    tape->leaves = tape->last_leaf = NULL;
    tape->n_nodes = tape->n_values = 0;
    tape->sweep_ready = true;
    tape->reused = false;
    tape->reuse_pool = NULL;
    tape->loss = (ad_var){NULL, 0};
    tape->err = AD_OK;
    tape->err_msg[0] = '\0';
}

void ad_tape_set_grad_enabled(ad_tape *tape, int enabled)
{
    if (tape)
        tape->grad_enabled = enabled != 0;
}

void ad_tape_set_anomaly_mode(ad_tape *tape, int enabled)
{
    if (tape)
        tape->anomaly = enabled != 0;
}

ad_status adi_tape_poison(ad_tape *tape, ad_status code)
{
    if (tape && tape->err == AD_OK) {
        tape->err = code;
        snprintf(tape->err_msg, sizeof tape->err_msg, "%s", ad_last_error());
    }
    return code;
}

tape_value *adi_tape_resolve(const ad_tape *tape, ad_var v)
{
    return v.v_ && tape && v.gen_ == tape->gen ? v.v_ : NULL;
}

adi_node *adi_tape_node_of(const ad_tape *tape, ad_var v)
{
    tape_value *val = adi_tape_resolve(tape, v);
    return val ? val->producer : NULL;
}

ad_status adi_tape_alloc_tensor(ad_tape *tape, const char *what, ad_dtype dtype, int ndim,
                               const int64_t *shape, ad_tensor **out)
{
    int64_t count;
    size_t bytes;
    ad_status rc = adi_shape_check(what, dtype, ndim, shape, &count, &bytes);
    if (rc)
        return rc;
    ad_tensor *t = adi_arena_alloc(&tape->arena, sizeof *t);
    void *data = t ? adi_arena_alloc(&tape->arena, bytes) : NULL;
    if (!data)
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory for %zu bytes", what, bytes);
    adi_tensor_describe_into(t, dtype, ndim, shape, count, data);
    *out = t;
    return AD_OK;
}

static const ad_var poisoned = {NULL, 0};

ad_var ad_use_named(ad_tape *tape, const ad_tensor *t, const char *name)
{
    if (!tape) {
        ad_fail(AD_ERR_NULL, "ad_use: tape is NULL");
        return poisoned;
    }
    if (tape->err)
        return poisoned;
    int64_t count;
    size_t bytes;
    if (!t) {
        adi_tape_poison(tape, ad_fail(AD_ERR_NULL, "ad_use: tensor %s is NULL",
                                     name ? name : ""));
        return poisoned;
    }
    ad_status rc = adi_shape_check("ad_use", t->dtype, t->ndim, t->shape, &count, &bytes);
    if (rc || count != t->size) {
        adi_tape_poison(tape, rc ? rc : ad_fail(AD_ERR_INVALID,
                                               "ad_use: %s has a size that does not match "
                                               "its shape", name ? name : "tensor"));
        return poisoned;
    }
    if (!t->data && count > 0) { /* primals would read through it */
        adi_tape_poison(tape, ad_fail(AD_ERR_NULL, "ad_use: %s has %" PRId64 " elements and "
                                     "NULL data", name ? name : "tensor", count));
        return poisoned;
    }
    tape_value *v = adi_arena_alloc(&tape->arena, sizeof *v);
    if (!v) {
        adi_tape_poison(tape, ad_fail(AD_ERR_NOMEM, "ad_use: out of memory"));
        return poisoned;
    }
    memset(v, 0, sizeof *v);
    v->tensor = t;
    v->leaf_name = name && name[0] == '&' ? name + 1 : name;
    v->leaf_version = t->version;
    v->index = tape->n_values++;
    if (tape->last_leaf)
        tape->last_leaf->next_leaf = v;
    else
        tape->leaves = v;
    tape->last_leaf = v;
    return (ad_var){v, tape->gen};
}

int ad_var_ok(ad_var v)
{
    return v.v_ != NULL;
}

const ad_tensor *ad_value(const ad_tape *tape, ad_var v)
{
    tape_value *val = adi_tape_resolve(tape, v);
    if (val && adi_value_storage(val)->value_reused) {
        ad_fail(AD_ERR_REUSED, "ad_value: value %u (%s) was reused by a memory-saving "
                "sweep; mark it with ad_keep before the sweep", val->index,
                val->producer->fn_name);
        return NULL;
    }
    return val ? val->tensor : NULL;
}

ad_status ad_tape_status(const ad_tape *tape)
{
    return tape ? tape->err : AD_ERR_NULL;
}

const char *ad_tape_error(const ad_tape *tape)
{
    return tape ? tape->err_msg : "";
}

ad_tape_stats ad_tape_get_stats(const ad_tape *tape)
{
    ad_tape_stats s = {0, 0, 0, 0};
    if (tape) {
        s.bytes_used = tape->arena.used;
        s.high_water = tape->arena.high_water;
        s.heap_allocs = tape->heap_allocs + tape->arena.heap_allocs;
        s.nodes = tape->n_nodes;
    }
    return s;
}

/* ---- the context given to primals and pullbacks ---- */

ad_status ad_out(ad_ctx *cx, ad_dtype dtype, int ndim, const int64_t *shape,
                 ad_tensor **out)
{
    if (!cx || !out)
        return ad_fail(AD_ERR_NULL, "ad_out: NULL argument");
    if (!cx->in_primal || cx->out)
        return ad_fail(AD_ERR_INVALID, "ad_out: %s asked for its output %s",
                       cx->node->fn_name, cx->out ? "twice" : "outside its primal");
    ad_tensor *t;
    ad_status rc = adi_tape_alloc_tensor(cx->tape, cx->node->fn_name, dtype, ndim, shape, &t);
    if (rc)
        return rc;
    cx->out = t;
    *out = t;
    return AD_OK;
}

ad_status ad_out_view(ad_ctx *cx, int input, int ndim, const int64_t *shape,
                      ad_tensor **out)
{
    if (!cx || !out)
        return ad_fail(AD_ERR_NULL, "ad_out_view: NULL argument");
    if (!cx->in_primal || cx->out)
        return ad_fail(AD_ERR_INVALID, "ad_out_view: %s asked for its output %s",
                       cx->node->fn_name, cx->out ? "twice" : "outside its primal");
    if (input < 0 || input >= cx->node->n_in)
        return ad_fail(AD_ERR_INVALID, "ad_out_view: %s has no input %d (it has %d)",
                       cx->node->fn_name, input, cx->node->n_in);
    const ad_tensor *src = cx->node->in[input]->tensor;
    int64_t count;
    size_t bytes;
    char ds[64];
    ad_status rc = adi_shape_check(cx->node->fn_name, src->dtype, ndim, shape, &count, &bytes);
    if (rc)
        return rc;
    if (count != src->size)
        return ad_fail(AD_ERR_SHAPE, "ad_out_view: %s: a view of %lld elements of input %d "
                       "%s, which has %lld", cx->node->fn_name, (long long)count, input,
                       ad_tensor_describe(src, ds, sizeof ds), (long long)src->size);
    ad_tensor *t = adi_arena_alloc(&cx->tape->arena, sizeof *t);
    if (!t)
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory for a tensor descriptor",
                       cx->node->fn_name);
    adi_tensor_describe_into(t, src->dtype, ndim, shape, count, src->data);
    cx->node->view_input = input + 1;
    cx->out = t;
    *out = t;
    return AD_OK;
}

ad_status ad_save(ad_ctx *cx, ad_dtype dtype, int ndim, const int64_t *shape,
                  ad_tensor **out)
{
    if (!cx || !out)
        return ad_fail(AD_ERR_NULL, "ad_save: NULL argument");
    if (!cx->in_primal)
        return ad_fail(AD_ERR_INVALID, "ad_save: called outside a primal");
    ad_status rc = adi_tape_alloc_tensor(cx->tape, cx->node->fn_name, dtype, ndim, shape,
                                        &cx->node->saved);
    if (rc == AD_OK)
        *out = cx->node->saved;
    return rc;
}

const ad_tensor *ad_saved(const ad_ctx *cx)
{
    return cx ? cx->node->saved : NULL;
}

int ad_ctx_saving(const ad_ctx *cx)
{
    return cx && cx->node->saving;
}

ad_status ad_scratch(ad_ctx *cx, ad_dtype dtype, int ndim, const int64_t *shape,
                     ad_tensor **out)
{
    if (!cx || !out)
        return ad_fail(AD_ERR_NULL, "ad_scratch: NULL argument");
    return adi_tape_alloc_tensor(cx->tape, cx->node->fn_name, dtype, ndim, shape, out);
}

const void *ad_attrs(const ad_ctx *cx)
{
    return cx ? cx->node->attrs : NULL;
}

const char *ad_ctx_op_name(const ad_ctx *cx)
{
    return cx ? cx->node->fn_name : "";
}

/* The checker's way into a rule's signal hook: the same context a pullback gets. */
ad_status adi_node_signal(ad_tape *tape, adi_node *node, ad_signal_fn hook,
                         ad_tensor **signal)
{
    const ad_tensor *in[AD_MAX_INPUTS];
    for (int i = 0; i < node->n_in; i++)
        in[i] = node->in[i]->tensor;
    ad_ctx cx = {tape, node, false, NULL};
    ad_status rc = hook(&cx, in, signal);
    if (rc) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", ad_last_error());
        return ad_fail(rc, "signal hook of %s (rule \"%s\"): %s", node->fn_name,
                       node->entry->rule.name, msg);
    }
    return AD_OK;
}
