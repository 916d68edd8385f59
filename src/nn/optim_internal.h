/*
** optim_internal.h (internal): the optimiser's object, shared by its updates
** (optim.c) and its state accessors (optim_state.c).
*/
#ifndef AD_OPTIM_INTERNAL_H
#define AD_OPTIM_INTERNAL_H

#include "../base/base.h"
#include "ad_nn.h"

/* At most three buffers per parameter (RMSprop: square average, momentum, gradient
** average). */
#define ADI_OPTIM_MAX_BUFFERS 3

typedef struct adi_optim_slot {
    /* The state buffers in ad_optim_state's order, back to back in one allocation
    ** starting at b[0]; NULL past the kind's count (and for descent). */
    void *b[ADI_OPTIM_MAX_BUFFERS];
    int64_t steps; /* updates this parameter has had (Adam's bias correction) */
} adi_optim_slot;

struct ad_optim {
    const ad_params *ps;   /* must outlive the optimiser */
    ad_optim_config cfg;   /* as given (validated); lr as last set */
    adi_optim_slot *slots; /* by parameter index, n of them */
    int n;
};

/* The buffers per parameter that configuration c keeps. */
int adi_optim_buffers(const ad_optim_config *c);

/* Makes state for parameters added to the set since the last call; allocates nothing
** when there are none. On failure the optimiser is as it was. */
ad_status adi_optim_ensure_state(ad_optim *o, const char *what);

#endif /* AD_OPTIM_INTERNAL_H */
