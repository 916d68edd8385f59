/*
** reuse.c: memory saving (ad_tape_set_memory_saving). A sweep hands the memory of
** values no pullback still to run reads, and of cotangents already consumed, to the
** cotangents still to come.
**
** Why it is safe: the sweep runs pullbacks in reverse recording order, so the last
** pullback to read a value is its earliest reader on the tape. The producer comes
** before every consumer, so if its pullback reads its output it is that reader; else
** it is the first consumer whose rule does not declare the slot unread. Once that
** pullback has run, nothing reads the memory again: a cotangent may take it. A value
** no pullback reads is free from the start (a matmul output under a fused bias_relu).
** Only a node's data buffer is reused; its descriptor (shape, dtype) stays readable.
**
** A view (ad_out_view: reshape, flatten) shares its base's memory, so everything is
** counted on the base: a pullback reading the view reads the base's buffer, the base
** dies after the last reader of any of its views, and a view is never given itself.
**
** Dead buffers form a list linked through their own first bytes (the arena pads every
** allocation to 64 bytes, more than the link needs), so reuse allocates nothing. A
** buffer is taken only by a cotangent of exactly its padded size.
*/
#include <string.h>

#include "../base/base.h"
#include "tape_internal.h"

typedef struct dead_buffer {
    struct dead_buffer *next;
    size_t bytes; /* padded, as the arena handed it out */
} dead_buffer;

static size_t padded_bytes(const ad_tensor *t)
{
    size_t bytes = (size_t)t->size * ad_dtype_size(t->dtype);
    return (bytes + AD_ARENA_ALIGN - 1) & ~(size_t)(AD_ARENA_ALIGN - 1);
}

/* Puts t's data on the dead list. In anomaly mode the buffer is first filled with NaN
** (all bits set), so a pullback that reads memory its rule declared unread computes
** NaN and the sweep's anomaly check names it. */
static void give(ad_tape *tape, ad_tensor *t)
{
    if (!t || !t->data || t->size == 0)
        return;
    size_t bytes = padded_bytes(t);
    if (tape->anomaly)
        memset(t->data, 0xff, bytes);
    dead_buffer *d = t->data;
    d->next = tape->reuse_pool;
    d->bytes = bytes;
    tape->reuse_pool = d;
}

/* The loss and what ad_keep marked, directly or through a view of it, stay. */
static bool reusable(const tape_value *v, const tape_value *loss)
{
    return v->producer && !v->base && v != loss && (!loss || loss->base != v) && !v->keep &&
           !v->value_reused;
}

/* Marks n as a reader of v's memory if no earlier node on the tape read it. */
static void note_reader(tape_value *v, adi_node *n)
{
    tape_value *s = adi_value_storage(v);
    if (!s->last_reader)
        s->last_reader = n;
}

static void give_value(ad_tape *tape, tape_value *v, const tape_value *loss)
{
    if (!reusable(v, loss))
        return;
    give(tape, &v->out);
    v->value_reused = true;
}

void adi_reuse_plan(ad_tape *tape, adi_node *last, const tape_value *loss)
{
    tape->reuse_pool = NULL;
    for (adi_node *n = tape->first; n; n = n->next) {
        n->out->last_reader = NULL;
        n->out->value_reused = n->out->cot_reused = false;
        if (n == last)
            break;
    }
    for (adi_node *n = tape->first; n; n = n->next) {
        const ad_rule *r = &n->entry->rule;
        if (n->out->live && n->out->needs_grad) { /* its pullback may run */
            if (!(r->unread & AD_OUTPUT))
                note_reader(n->out, n);
            for (int i = 0; i < n->n_in; i++)
                if (!(r->unread & AD_INPUT(i)))
                    note_reader(n->in[i], n);
        }
        if (n == last)
            break;
    }
    for (adi_node *n = tape->first; n; n = n->next) {
        if (n->out->live && !n->out->last_reader)
            give_value(tape, n->out, loss);
        if (n == last)
            break;
    }
}

void adi_reuse_after(ad_tape *tape, adi_node *n, const tape_value *loss)
{
    tape_value *out = n->out;
    if (out->cot && out->has_cot && out != loss && !out->keep) {
        give(tape, out->cot);
        out->cot = NULL;
        out->cot_reused = true;
    }
    for (int i = 0; i < n->n_in; i++) {
        tape_value *s = adi_value_storage(n->in[i]);
        if (s->last_reader == n)
            give_value(tape, s, loss);
    }
    if (adi_value_storage(out)->last_reader == n)
        give_value(tape, adi_value_storage(out), loss);
}

ad_status adi_reuse_tensor_like(ad_tape *tape, const ad_tensor *like, ad_tensor **out)
{
    size_t bytes = padded_bytes(like);
    dead_buffer **link = (dead_buffer **)&tape->reuse_pool;
    while (bytes && *link && (*link)->bytes != bytes)
        link = &(*link)->next;
    if (!bytes || !*link)
        return adi_tape_alloc_tensor(tape, "ad_backward", like->dtype, like->ndim,
                                    like->shape, out);
    ad_tensor *t = adi_arena_alloc(&tape->arena, sizeof *t);
    if (!t)
        return ad_fail(AD_ERR_NOMEM, "ad_backward: out of memory for a tensor descriptor");
    void *data = *link;
    *link = (*link)->next;
    adi_tensor_describe_into(t, like->dtype, like->ndim, like->shape, like->size, data);
    *out = t;
    return AD_OK;
}

void ad_tape_set_memory_saving(ad_tape *tape, int enabled)
{
    if (tape)
        tape->memory_saving = enabled != 0;
}

ad_status ad_keep(ad_tape *tape, ad_var v)
{
    if (!tape)
        return ad_fail(AD_ERR_NULL, "ad_keep: tape is NULL");
    tape_value *val = adi_tape_resolve(tape, v);
    if (!val)
        return ad_fail(AD_ERR_BAD_HANDLE, "ad_keep: the handle is %s",
                       v.v_ ? "from another tape or before a reset" : "poisoned");
    val->keep = true;
    adi_value_storage(val)->keep = true; /* a view keeps its base's memory */
    return AD_OK;
}
