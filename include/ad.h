/*
** adtape: reverse-mode automatic differentiation with a rule table keyed by the
** primal function itself. The umbrella header; the manual is the topic headers:
**   ad_status.h  result codes, last error, allocation hooks
**   ad_tensor.h  tensors
**   ad_rule.h    primals, pullbacks, rules and the registry
**   ad_tape.h    recording calls on a tape
**   ad_grad.h    parameter sets, gradients, ad_gradient, descent
**   ad_ops.h     built-in ops
**   ad_ops_extra.h  more built-in ops (exp, log, softplus, leaky relu, ...)
**   ad_check.h   finite-difference checking of rules
**   ad_nn.h      generator, initialisers, optimisers
**   ad_feedback.h  feedback-learning layers (FA, sign symmetry, KP, DFA), angles
**   ad_io.h      data set readers (IDX)
**   ad_checkpoint.h  checkpoints (safetensors): save, validated load, exact resume
*/
#ifndef AD_H
#define AD_H

#define AD_VERSION_MAJOR 0
#define AD_VERSION_MINOR 1
#define AD_VERSION_PATCH 0
#define AD_VERSION_STRING "0.1.0"

#include "ad_status.h"
#include "ad_tensor.h"
#include "ad_rule.h"
#include "ad_tape.h"
#include "ad_grad.h"
#include "ad_ops.h"
#include "ad_ops_extra.h"
#include "ad_check.h"
#include "ad_nn.h"
#include "ad_feedback.h"
#include "ad_io.h"
#include "ad_checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version at run time ("0.1.0"), to compare with AD_VERSION_STRING. */
AD_API const char *ad_version(void);

#ifdef __cplusplus
}
#endif
#endif /* AD_H */
