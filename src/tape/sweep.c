/*
** sweep.c: the reverse sweep (ad_backward), ad_gradient and Descent.
**
** The tape is already in execution order, so the sweep is two loops, no recursion:
** forward over the nodes to mark which values depend on a parameter, then backward
** from the loss, giving each pullback a buffer only for inputs that both depend on a
** parameter and were reached from the loss. Buffers are written with beta = 0 on the
** first contribution and beta = 1 after, so nothing is zero-filled or summed twice.
*/
#include <inttypes.h>
#include <string.h>

#include "../base/base.h"
#include "grads_internal.h"
#include "tape_internal.h"

static bool slot_differentiable(const adi_node *n, int i)
{
    return !(n->entry->rule.nondiff & AD_INPUT(i)) && n->in[i]->tensor->dtype != AD_I32;
}

/* Marks parameters, dependence on them and liveness (the loss depends on the value),
** and lists for each node the parameters whose gradient is final once that node's
** pullback has run (their first use). */
static void analyse(ad_tape *tape, const ad_params *ps, ad_grads *gs, adi_node *last)
{
    for (int p = 0; p < gs->n; p++) {
        gs->present[p] = false;
        gs->ready_node[p] = NULL;
    }
    for (tape_value *v = tape->leaves; v; v = v->next_leaf) {
        v->param = ad_params_index(ps, v->tensor);
        v->needs_grad = v->param >= 0;
        v->has_cot = false;
        v->cot = NULL;
    }
    for (adi_node *n = tape->first; n; n = n->next) {
        n->ready_head = -1;
        n->out->param = -1;
        n->out->needs_grad = n->out->has_cot = n->out->live = false;
        n->out->cot = NULL;
        bool float_out = n->out->tensor->dtype != AD_I32; /* int outputs are constants */
        for (int i = 0; i < n->n_in; i++) {
            tape_value *in = n->in[i];
            if (!in->needs_grad || !slot_differentiable(n, i))
                continue;
            n->out->needs_grad = float_out;
            if (in->param >= 0 && !gs->ready_node[in->param])
                gs->ready_node[in->param] = n;
        }
        if (n == last)
            break;
    }
    for (tape_value *v = tape->leaves; v; v = v->next_leaf)
        v->live = false;
    if (last)
        last->out->live = true;
    for (adi_node *n = last; n; n = n->prev)
        for (int i = 0; n->out->live && i < n->n_in; i++)
            n->in[i]->live = true;
    for (int p = 0; p < gs->n; p++) {
        adi_node *n = gs->ready_node[p];
        if (n) {
            gs->ready_next[p] = n->ready_head;
            n->ready_head = p;
        }
    }
}

/* The buffer where v's cotangent accumulates, and the beta for the next write. */
static ad_status cotangent_slot(ad_tape *tape, ad_grads *gs, tape_value *v, ad_tensor **buf,
                                float *beta)
{
    if (v->param >= 0) {
        *buf = gs->grad[v->param];
        *beta = gs->present[v->param] ? 1.0f : 0.0f;
        return AD_OK;
    }
    if (!v->cot) {
        const ad_tensor *t = v->tensor;
        ad_status rc = tape->reused ? adi_reuse_tensor_like(tape, t, &v->cot)
                                    : adi_tape_alloc_tensor(tape, "ad_backward", t->dtype,
                                                           t->ndim, t->shape, &v->cot);
        if (rc)
            return rc;
    }
    *buf = v->cot;
    *beta = v->has_cot ? 1.0f : 0.0f;
    return AD_OK;
}

static void mark_written(ad_grads *gs, tape_value *v)
{
    if (v->param >= 0)
        gs->present[v->param] = true;
    else
        v->has_cot = true;
}

static ad_status check_fresh(const adi_node *n)
{
    for (int i = 0; i < n->n_in; i++) {
        const tape_value *v = n->in[i];
        if (!v->producer && v->tensor->version != v->leaf_version)
            return ad_fail(AD_ERR_STALE_INPUT,
                           "ad_backward: input %d (%s) of node %u (%s) was modified after "
                           "it was recorded (version %" PRIu64 ", now %" PRIu64 ")",
                           i, v->leaf_name ? v->leaf_name : "leaf", n->index, n->fn_name,
                           v->leaf_version, v->tensor->version);
    }
    return AD_OK;
}

/* x += y, elementwise, for a duplicated input's second contribution. */
static void add_into(ad_tensor *x, const ad_tensor *y)
{
    if (x->dtype == AD_F32)
        for (int64_t k = 0; k < x->size; k++)
            ((float *)x->data)[k] += ((const float *)y->data)[k];
    else
        for (int64_t k = 0; k < x->size; k++)
            ((double *)x->data)[k] += ((const double *)y->data)[k];
}

/* A rule that ignores its incoming cotangent (DFA's hidden layers) makes its output's
** cotangent unwanted, so the layer above skips that product. Not in reference sweeps,
** whose pullbacks are true gradients and read dy. */
static bool ignores_dy(const adi_node *producer)
{
    return producer && (producer->entry->rule.flags & AD_RULE_IGNORES_DY);
}

/* Two slots write one buffer when they hold one value, or two leaves of one param. */
static bool shares_cotangent(const tape_value *a, const tape_value *b)
{
    return a == b || (a->param >= 0 && a->param == b->param);
}

/*
** One node's pullback. An input passed in two slots (mul(x, x)) would alias one
** buffer under two betas; the later slot gets a scratch buffer, added afterwards.
*/
static ad_status pull_node(ad_tape *tape, ad_grads *gs, adi_node *n, bool reference)
{
    ad_tensor *din[AD_MAX_INPUTS] = {0};
    float beta[AD_MAX_INPUTS] = {0};
    int dup_of[AD_MAX_INPUTS];
    ad_status rc = check_fresh(n);
    for (int i = 0; rc == AD_OK && i < n->n_in; i++) {
        dup_of[i] = -1;
        if (!n->in[i]->needs_grad || !slot_differentiable(n, i) ||
            (!reference && ignores_dy(n->in[i]->producer)))
            continue;
        for (int j = 0; j < i; j++)
            if (din[j] && shares_cotangent(n->in[j], n->in[i]))
                dup_of[i] = j;
        if (dup_of[i] < 0) {
            rc = cotangent_slot(tape, gs, n->in[i], &din[i], &beta[i]);
        } else {
            const ad_tensor *t = n->in[i]->tensor;
            rc = adi_tape_alloc_tensor(tape, "ad_backward", t->dtype, t->ndim, t->shape,
                                      &din[i]);
        }
    }
    const ad_rule *r = &n->entry->rule;
    ad_pullback_fn pullback = reference && r->reference ? r->reference : r->pullback;
    if (rc == AD_OK)
        rc = adi_node_pullback(tape, n, pullback, n->out->cot, din, beta);
    if (rc == AD_OK && tape->anomaly)
        rc = adi_anomaly_check_cotangents(n, din);
    if (rc)
        return rc;
    if (!reference) {
        adi_registry_count(n->entry);
        tape->rule_counts[n->entry->stats->fn_id]++;
    }
    for (int i = 0; i < n->n_in; i++) {
        if (!din[i])
            continue;
        if (dup_of[i] >= 0)
            add_into(din[dup_of[i]], din[i]);
        else
            mark_written(gs, n->in[i]);
    }
    return AD_OK;
}

static ad_status fire_ready(ad_grads *gs, int p)
{
    if (!gs->present[p] || !gs->ready_node[p])
        return AD_OK;
    gs->ready_node[p] = NULL; /* fired */
    if (gs->on_ready &&
        gs->on_ready(p, ad_params_at(gs->ps, p), gs->grad[p], gs->on_ready_user))
        return ad_fail(AD_ERR_PULLBACK, "ad_backward: the gradient-ready callback for "
                       "parameter %d returned nonzero", p);
    return AD_OK;
}

static ad_status seed_loss(ad_tape *tape, ad_grads *gs, tape_value *loss)
{
    ad_tensor *buf;
    float beta;
    ad_status rc = cotangent_slot(tape, gs, loss, &buf, &beta);
    if (rc)
        return rc;
    if (buf->dtype == AD_F32)
        *(float *)buf->data = 1.0f;
    else
        *(double *)buf->data = 1.0;
    mark_written(gs, loss);
    return AD_OK;
}

static ad_status sweep_checks(ad_tape *tape, ad_var loss, const ad_params *ps,
                              ad_grads *gs, tape_value **lv)
{
    if (!tape || !ps || !gs)
        return ad_fail(AD_ERR_NULL, "ad_backward: NULL argument");
    if (tape->err)
        return ad_fail(tape->err, "%s", tape->err_msg);
    if (tape->reused)
        return ad_fail(AD_ERR_REUSED, "ad_backward: a memory-saving sweep has reused this "
                       "recording's memory; record it again to sweep again");
    if (gs->ps != ps)
        return ad_fail(AD_ERR_INVALID, "ad_backward: the gradient set was made for "
                       "another parameter set");
    *lv = adi_tape_resolve(tape, loss);
    if (!*lv)
        return ad_fail(AD_ERR_BAD_HANDLE, "ad_backward: the loss handle is %s",
                       loss.v_ ? "from another tape or before a reset" : "poisoned");
    const ad_tensor *t = (*lv)->tensor;
    if (t->ndim != 0 || (t->dtype != AD_F32 && t->dtype != AD_F64)) {
        char d[64];
        return ad_fail(AD_ERR_NOT_SCALAR, "ad_backward: the loss is %s, not a rank-0 float",
                       ad_tensor_describe(t, d, sizeof d));
    }
    if (!tape->sweep_ready)
        return ad_fail(AD_ERR_NO_GRAD, "ad_backward: the tape recorded calls in "
                       "forward-only mode (ad_tape_set_grad_enabled(tape, 0))");
    return adi_grads_sync(gs);
}

ad_status ad_backward(ad_tape *tape, ad_var loss, const ad_params *ps, ad_grads *gs)
{
    return ad_backward_ex(tape, loss, ps, gs, NULL);
}

ad_status ad_backward_ex(ad_tape *tape, ad_var loss, const ad_params *ps, ad_grads *gs,
                         const ad_sweep_options *opts)
{
    bool reference = opts && opts->use_reference;
    tape_value *lv = NULL;
    ad_status rc = sweep_checks(tape, loss, ps, gs, &lv);
    if (rc)
        return rc;
    adi_node *last = lv->producer;
    analyse(tape, ps, gs, last);
    if (!lv->needs_grad)
        return AD_OK; /* the loss depends on no parameter: every gradient is absent */
    if (tape->memory_saving && !reference) { /* reuse.c; tape->reused marks this sweep */
        tape->reused = true;
        adi_reuse_plan(tape, last, lv);
    }
    rc = seed_loss(tape, gs, lv);
    for (adi_node *n = last; rc == AD_OK && n; n = n->prev) {
        bool runs_without_dy = !reference && ignores_dy(n);
        if (!n->out->live || !n->out->needs_grad || !(n->out->has_cot || runs_without_dy))
            continue;
        rc = pull_node(tape, gs, n, reference);
        if (rc == AD_OK && tape->reused)
            adi_reuse_after(tape, n, lv);
        for (int p = n->ready_head; !reference && rc == AD_OK && p >= 0; p = gs->ready_next[p])
            rc = fire_ready(gs, p);
    }
    /* Parameters whose first use was never reached got their last write elsewhere. */
    for (int p = 0; !reference && rc == AD_OK && p < gs->n; p++)
        rc = fire_ready(gs, p);
    return rc;
}

const ad_tensor *ad_cotangent(const ad_tape *tape, ad_var v)
{
    const tape_value *val = adi_tape_resolve(tape, v);
    if (val && val->cot_reused) {
        ad_fail(AD_ERR_REUSED, "ad_cotangent: the cotangent of value %u was reused by a "
                "memory-saving sweep; mark the value with ad_keep before the sweep",
                val->index);
        return NULL;
    }
    return val && val->param < 0 && val->has_cot ? val->cot : NULL;
}

ad_status ad_gradient(ad_tape *tape, const ad_params *ps, ad_loss_fn loss_fn, void *user,
                      ad_grads *gs, double *loss_value)
{
    if (!tape || !loss_fn || !ps || !gs) /* before the reset: the tape is kept too */
        return ad_fail(AD_ERR_NULL, "ad_gradient: %s is NULL",
                       !tape ? "tape" : !loss_fn ? "loss_fn" : !ps ? "ps" : "gs");
    ad_tape_reset(tape);
    ad_var loss = loss_fn(tape, user);
    tape->loss = loss;
    ad_status rc = ad_backward(tape, loss, ps, gs);
    if (rc == AD_OK && loss_value)
        *loss_value = ad_tensor_get(ad_value(tape, loss), 0);
    return rc;
}

/* Kept on the tape rather than returned, so ad_gradient's signature (and every
** caller, ad_mpi_gradient's too) stays as it is. */
ad_var ad_tape_loss(const ad_tape *tape)
{
    return tape ? tape->loss : (ad_var){NULL, 0};
}
