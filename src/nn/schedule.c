/*
** schedule.c: learning-rate schedules, as pure functions of the epoch, so resuming a
** run needs no schedule state beyond the epoch it is at.
*/
#include <math.h>

#include "../base/base.h"
#include "ad_nn.h"

/* Milestones >= 0 and strictly increasing (torch's Counter would accept repeats and
** unsorted lists; we refuse them as the likely typo they are). */
static ad_status check_milestones(const ad_lr_multistep_config *c)
{
    if (c->n_milestones < 0)
        return ad_fail(AD_ERR_INVALID, "ad_lr_multistep: n_milestones = %d is negative",
                       c->n_milestones);
    if (c->n_milestones > 0 && !c->milestones)
        return ad_fail(AD_ERR_NULL, "ad_lr_multistep: milestones is NULL with "
                       "n_milestones = %d", c->n_milestones);
    for (int i = 0; i < c->n_milestones; i++) {
        if (c->milestones[i] < 0)
            return ad_fail(AD_ERR_INVALID, "ad_lr_multistep: milestones[%d] = %d is "
                           "negative", i, c->milestones[i]);
        if (i > 0 && c->milestones[i] <= c->milestones[i - 1])
            return ad_fail(AD_ERR_INVALID, "ad_lr_multistep: milestones[%d] = %d does "
                           "not exceed milestones[%d] = %d (they must increase strictly)",
                           i, c->milestones[i], i - 1, c->milestones[i - 1]);
    }
    return AD_OK;
}

/*
** lr = base_lr gamma^k, k the milestones <= epoch, as k multiplications in turn: torch
** multiplies the group's rate by gamma ** 1 at each milestone epoch, and
** base_lr * pow(gamma, k) can differ from that in the last bit.
*/
ad_status ad_lr_multistep(const ad_lr_multistep_config *cfg, int epoch, double *lr)
{
    if (!cfg || !lr)
        return ad_fail(AD_ERR_NULL, "ad_lr_multistep: %s is NULL", cfg ? "lr" : "cfg");
    if (!(cfg->base_lr >= 0.0 && isfinite(cfg->base_lr)))
        return ad_fail(AD_ERR_INVALID, "ad_lr_multistep: base_lr = %g is outside [0, inf)",
                       cfg->base_lr);
    if (!(cfg->gamma > 0.0 && isfinite(cfg->gamma)))
        return ad_fail(AD_ERR_INVALID, "ad_lr_multistep: gamma = %g is outside (0, inf)",
                       cfg->gamma);
    if (epoch < 0)
        return ad_fail(AD_ERR_INVALID, "ad_lr_multistep: epoch = %d is negative", epoch);
    ad_status rc = check_milestones(cfg);
    if (rc)
        return rc;
    double r = cfg->base_lr;
    for (int i = 0; i < cfg->n_milestones && cfg->milestones[i] <= epoch; i++)
        r *= cfg->gamma;
    *lr = r;
    return AD_OK;
}
