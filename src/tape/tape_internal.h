/*
** tape_internal.h (internal): the tape's records, shared by recording, the sweep,
** memory saving, anomaly checks and printing. Parts above the tape use tape_client.h.
*/
#ifndef AD_TAPE_INTERNAL_H
#define AD_TAPE_INTERNAL_H

#include <stdbool.h>

#include "ad_grad.h"
#include "arena.h"
#include "tape_client.h"
#include "../rules/registry.h"

/* A value on the tape: a leaf (a user tensor) or the output of a node. */
struct ad_value {
    const ad_tensor *tensor; /* what primals and pullbacks read: &out, or the user's */
    ad_tensor out;           /* storage descriptor of an op output */
    adi_node *producer;       /* NULL for a leaf */
    const char *leaf_name;   /* leaves: the spelled expression given to ad_use */
    uint64_t leaf_version;   /* leaves: the tensor's version when recorded */
    struct ad_value *next_leaf;
    struct ad_value *base;   /* a view (ad_out_view): the value owning its memory, itself
                                never a view; NULL for a value with memory of its own */
    uint32_t index;          /* position among the tape's values, for prints */
    /* sweep state, rebuilt by every sweep */
    int32_t param;           /* dense parameter index, or -1 */
    bool needs_grad;         /* depends on a parameter */
    bool has_cot;            /* cot holds at least one contribution */
    bool live;               /* the loss depends on it */
    ad_tensor *cot;          /* cotangent: arena buffer, or the gradient set's */
    /* memory saving (reuse.c) */
    bool keep;               /* ad_keep: never reused */
    bool value_reused;       /* the value's memory went to a cotangent */
    bool cot_reused;         /* the cotangent's memory went to another cotangent */
    struct adi_node *last_reader; /* the last pullback of the sweep to read the value */
};
typedef struct ad_value tape_value;

struct adi_node {
    const adi_rule_entry *entry; /* the rule that served this call */
    const char *fn_name;
    tape_value *out;
    tape_value *in[AD_MAX_INPUTS];
    int n_in;
    const void *attrs;          /* arena copy, or NULL */
    ad_tensor *saved;           /* ad_save's tensor, or NULL */
    bool saving;                /* recorded with pullback state */
    int view_input;             /* 1 + the input whose memory ad_out_view shared, or 0 */
    int32_t ready_head;         /* first parameter whose gradient is final after this */
    adi_node *prev, *next;
    uint32_t index;
};

struct ad_ctx {
    ad_tape *tape;
    adi_node *node;
    bool in_primal;
    ad_tensor *out; /* set by ad_out during the primal */
};

struct ad_tape {
    adi_arena arena;
    uint64_t gen;          /* unique per tape and recording (process-wide counter) */
    adi_node *first, *last;
    uint32_t n_nodes, n_values;
    tape_value *leaves, *last_leaf;
    bool grad_enabled;
    bool anomaly;           /* anomaly mode: NaN/Inf checks (anomaly.c); survives resets */
    bool sweep_ready;       /* nodes recorded since the last reset all kept state */
    bool memory_saving;     /* sweeps reuse dead memory (reuse.c); survives resets */
    bool reused;            /* a sweep of this recording reused memory: no second one */
    void *reuse_pool;       /* dead buffers, linked through their first bytes */
    ad_var loss;            /* what ad_gradient's loss_fn returned on this recording */
    ad_status err;          /* first error since the last reset */
    char err_msg[512];
    uint64_t heap_allocs;   /* allocations besides arena blocks */
    uint64_t *rule_counts;  /* pullback runs by fn_id */
    const adi_rule_entry **rule_of; /* latest entry seen for each fn_id */
    uint32_t counts_cap;
};

/* The value owning v's memory: v, or the base of a view. */
static inline tape_value *adi_value_storage(tape_value *v)
{
    return v->base ? v->base : v;
}

/* The value behind v if v belongs to this tape's current recording, else NULL. */
tape_value *adi_tape_resolve(const ad_tape *tape, ad_var v);

/* Records a tape's first error from the thread's last message; returns code. */
ad_status adi_tape_poison(ad_tape *tape, ad_status code);

/* Anomaly mode (anomaly.c), called only when tape->anomaly is set: AD_ERR_NONFINITE
** naming the node if its output (a primal just ran) or one of the cotangent buffers
** din[] (its pullback just ran) holds a NaN or an Inf; AD_OK otherwise. */
ad_status adi_anomaly_check_value(const adi_node *node);
ad_status adi_anomaly_check_cotangents(const adi_node *node, ad_tensor *const din[]);

/* Memory saving (reuse.c). Before a saving sweep: which pullback reads each value
** last, and the values none reads go dead. During it: a tensor shaped like `like` on
** a dead buffer if one fits exactly (else fresh arena memory); and after node n's
** pullback, n's cotangent and what only n still read go dead. */
void adi_reuse_plan(ad_tape *tape, adi_node *last, const tape_value *loss);
ad_status adi_reuse_tensor_like(ad_tape *tape, const ad_tensor *like, ad_tensor **out);
void adi_reuse_after(ad_tape *tape, adi_node *n, const tape_value *loss);

#endif /* AD_TAPE_INTERNAL_H */
