/*
** tape_client.h (internal): what the parts built on the tape (the rule checker) may
** use of it beyond the public API: arena tensors, the node behind a handle, one
** node's pullback run with buffers the client chose, and a rule's signal hook. Nodes
** stay opaque here, so a client cannot come to depend on the tape's records;
** tape_internal.h includes this.
*/
#ifndef AD_TAPE_CLIENT_H
#define AD_TAPE_CLIENT_H

#include "ad_tape.h"

typedef struct adi_node adi_node;

/* Arena memory for a tensor of the given shape (owned by the tape, valid until its
** reset); errors name `what`: AD_ERR_RANK, AD_ERR_INVALID, AD_ERR_OVERFLOW, AD_ERR_NOMEM. */
ad_status adi_tape_alloc_tensor(ad_tape *tape, const char *what, ad_dtype dtype, int ndim,
                               const int64_t *shape, ad_tensor **out);

/* The node that produced v, or NULL (leaf or invalid handle). */
adi_node *adi_tape_node_of(const ad_tape *tape, ad_var v);

/* Runs `pullback` for node with explicit buffers (the sweep and the rule checker); a
** failure's message is prefixed with the op, the rule, the node and the input shapes. */
ad_status adi_node_pullback(ad_tape *tape, adi_node *node, ad_pullback_fn pullback,
                           const ad_tensor *dy, ad_tensor *const din[], const float beta[]);

/* Calls an AD_RULE_IGNORES_DY rule's signal hook with the node's context and inputs
** (see ad_signal_fn); a failure's message is prefixed with the op and the rule. */
ad_status adi_node_signal(ad_tape *tape, adi_node *node, ad_signal_fn hook,
                         ad_tensor **signal);

#endif /* AD_TAPE_CLIENT_H */
