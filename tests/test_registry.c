/*
** test_registry.c: the process-wide rule table: built-ins present without an init
** call, registration by function pointer, refusal of second registrations and of
** malformed rules, replacement, unregistration, counters, and out-of-memory.
**
** Criterion forks a fresh process per test, so every test starts from a table that
** holds only the built-ins.
*/
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* ---- a user function with two candidate rules ---- */

static int ran_a, ran_b;

/* y = x (any rank, float64). */
static ad_status ident_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    if (in[0]->dtype != AD_F64)
        return ad_fail(AD_ERR_DTYPE, "ident_fn: float64 only");
    ad_status rc = ad_out(cx, AD_F64, in[0]->ndim, in[0]->shape, out);
    if (rc)
        return rc;
    memcpy((*out)->data, in[0]->data, (size_t)in[0]->size * sizeof(double));
    return AD_OK;
}

/* A second primal with a different body, so no linker can fold it into ident_fn. */
static ad_status negate_fn(ad_ctx *cx, const ad_tensor *const in[], ad_tensor **out)
{
    ad_status rc = ad_out(cx, AD_F64, in[0]->ndim, in[0]->shape, out);
    for (int64_t i = 0; rc == AD_OK && i < in[0]->size; i++)
        ((double *)(*out)->data)[i] = -((const double *)in[0]->data)[i];
    return rc;
}

/* din = k dy, honouring beta. */
static void put_times(ad_tensor *din, float beta, const ad_tensor *dy, double k)
{
    double *d = din->data;
    const double *g = dy->data;
    for (int64_t i = 0; i < din->size; i++)
        d[i] = (beta != 0.0f ? d[i] : 0.0) + k * g[i];
}

/* Rule A, the true gradient of ident_fn:  dx = dy */
static ad_status pullback_a(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                            const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    ran_a++;
    if (din[0])
        put_times(din[0], beta[0], dy, 1.0);
    return AD_OK;
}

/* Rule B, recognisably different:  dx = 2 dy */
static ad_status pullback_b(ad_ctx *cx, const ad_tensor *dy, const ad_tensor *const in[],
                            const ad_tensor *y, ad_tensor *const din[], const float beta[])
{
    (void)cx, (void)in, (void)y;
    ran_b++;
    if (din[0])
        put_times(din[0], beta[0], dy, 2.0);
    return AD_OK;
}

static const ad_rule rule_a = {.name = "ident (rule A)", .pullback = pullback_a, .n_inputs = 1};
static const ad_rule rule_b = {.name = "ident (rule B)", .pullback = pullback_b, .n_inputs = 1};

/* ---- a small rig: one float64 parameter w (4 elements), loss = sum(ident(w)) ---- */

typedef struct rig {
    ad_tape *t;
    ad_tensor *w;
    ad_params *ps;
    ad_grads *gs;
} rig;

static void rig_open(rig *r)
{
    cr_assert_eq(ad_tape_new(&r->t), AD_OK);
    r->w = ts_tensor(AD_F64, 1, TS_SHAPE(4));
    for (int i = 0; i < 4; i++)
        ts_set(r->w, i, 0.5 * (i + 1));
    cr_assert_eq(ad_params_new(&r->ps), AD_OK);
    cr_assert_eq(ad_params_add(r->ps, r->w, NULL), AD_OK);
    cr_assert_eq(ad_grads_new(r->ps, &r->gs), AD_OK);
}

static void rig_close(rig *r)
{
    ad_grads_free(r->gs);
    ad_params_free(r->ps);
    ad_tensor_free(r->w);
    ad_tape_free(r->t);
}

/* Records `depth` nested ident_fn calls on w, summed to a scalar. */
static ad_var record_ident(rig *r, int depth)
{
    ad_var v = ad_use(r->t, r->w);
    for (int i = 0; i < depth; i++)
        v = ad_call(r->t, ident_fn, v);
    return ad_sum(r->t, v);
}

/* Every element of w's gradient equals want. */
static void expect_grad(const rig *r, double want)
{
    const ad_tensor *g = ad_grads_get(r->gs, r->w);
    cr_assert_not_null(g, "w got no gradient");
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ts_get(g, i), want, "dw[%d] = %g, want %g", i, ts_get(g, i), want);
}

/* ---- built-ins ---- */

Test(registry, builtin_rules_are_present_before_any_registration)
{
    const ad_rule *mm = ad_rule_find(ad_op_matmul);
    cr_assert_not_null(mm, "the matmul rule is missing in a fresh process");
    cr_expect_str_eq(mm->name, "matmul");
    cr_expect_not_null(mm->pullback);
    cr_expect_eq(mm->n_inputs, 2);
    ad_primal_fn others[] = {ad_op_add, ad_op_sub, ad_op_mul, ad_op_scale, ad_op_bias_add,
                             ad_op_tanh, ad_op_relu, ad_op_sigmoid, ad_op_sum, ad_op_mean,
                             ad_op_mse, ad_op_softmax_cross_entropy};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        cr_expect_not_null(ad_rule_find(others[i]), "built-in %zu has no rule", i);
    cr_expect_null(ad_rule_find(ident_fn), "a user function has a rule nobody registered");
    cr_expect_null(ad_rule_find((ad_primal_fn)NULL));
}

/* ---- registration ---- */

Test(registry, registering_a_user_function_stores_a_copy_with_its_name)
{
    ad_rule mine = rule_a;
    cr_assert_eq(ad_rule_register(ident_fn, &mine), AD_OK, "%s", ad_last_error());
    mine.name = "changed after registration";
    mine.pullback = pullback_b;
    const ad_rule *found = ad_rule_find(ident_fn);
    cr_assert_not_null(found);
    cr_expect_neq((void *)found, (void *)&mine, "the registry kept the caller's struct");
    cr_expect_str_eq(found->name, "ident (rule A)");
    cr_expect(found->pullback == pullback_a, "the stored pullback changed with the caller's");
    cr_expect_eq(found->n_inputs, 1);
    cr_expect_null(ad_rule_find(negate_fn), "registering one function gave another a rule");
}

Test(registry, null_rule_name_defaults_to_the_spelled_function_name)
{
    ad_rule unnamed = rule_a;
    unnamed.name = NULL;
    cr_assert_eq(ad_rule_register(ident_fn, &unnamed), AD_OK, "%s", ad_last_error());
    const ad_rule *found = ad_rule_find(ident_fn);
    cr_assert_not_null(found);
    cr_assert_not_null(found->name);
    cr_expect_str_eq(found->name, "ident_fn");
}

Test(registry, second_registration_without_replace_fails_and_keeps_the_first)
{
    cr_assert_eq(ad_rule_register(ident_fn, &rule_a), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_rule_register(ident_fn, &rule_b), AD_ERR_RULE_EXISTS);
    cr_expect(strstr(ad_last_error(), "ident_fn") != NULL,
              "the message does not name the function: %s", ad_last_error());
    cr_expect(strstr(ad_last_error(), "ident (rule A)") != NULL,
              "the message does not name the rule in force: %s", ad_last_error());
    cr_expect(ad_rule_find(ident_fn)->pullback == pullback_a);

    rig r;
    rig_open(&r);
    ad_var loss = record_ident(&r, 1);
    cr_assert_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ran_a, 1, "the first rule's pullback ran %d times", ran_a);
    cr_expect_eq(ran_b, 0, "the refused rule's pullback ran");
    expect_grad(&r, 1.0);
    rig_close(&r);
}

Test(registry, replace_serves_new_recordings_and_old_tapes_keep_their_rule)
{
    cr_assert_eq(ad_rule_register(ident_fn, &rule_a), AD_OK, "%s", ad_last_error());
    const ad_rule *old = ad_rule_find(ident_fn);
    rig before, after;
    rig_open(&before);
    rig_open(&after);
    ad_var loss_before = record_ident(&before, 1);

    cr_assert_eq(ad_rule_replace(ident_fn, &rule_b), AD_OK, "%s", ad_last_error());
    cr_expect_str_eq(ad_rule_find(ident_fn)->name, "ident (rule B)");
    cr_expect(old->pullback == pullback_a, "a replaced rule's copy was overwritten");
    ad_var loss_after = record_ident(&after, 1);

    cr_assert_eq(ad_backward(after.t, loss_after, after.ps, after.gs), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(ran_b, 1, "the new rule did not serve a call recorded after the replace");
    cr_expect_eq(ran_a, 0, "the old rule served a call recorded after the replace");
    expect_grad(&after, 2.0);

    cr_assert_eq(ad_backward(before.t, loss_before, before.ps, before.gs), AD_OK, "%s",
                 ad_last_error());
    cr_expect_eq(ran_a, 1, "a tape recorded before the replace did not run its own rule");
    cr_expect_eq(ran_b, 1);
    expect_grad(&before, 1.0);
    rig_close(&before);
    rig_close(&after);
}

Test(registry, registering_null_function_or_rule_fails_with_null)
{
    cr_expect_eq(ad_rule_register_as(NULL, "nothing", &rule_a, 0), AD_ERR_NULL);
    cr_expect(strstr(ad_last_error(), "function") != NULL, "message: %s", ad_last_error());
    cr_expect_eq(ad_rule_register(ident_fn, NULL), AD_ERR_NULL);
    cr_expect(strstr(ad_last_error(), "rule") != NULL, "message: %s", ad_last_error());
    cr_expect_null(ad_rule_find(ident_fn), "a failed registration left a rule behind");
}

/* Malformed rules, each refused with AD_ERR_BAD_RULE. */
static ad_rule bad_rules(int i)
{
    ad_rule r = rule_a;
    switch (i) {
    case 0: r.pullback = NULL; break;
    case 1: r.n_inputs = 0; break;
    case 2: r.n_inputs = AD_MAX_INPUTS + 1; break;
    case 3: r.n_inputs = -1; break;
    case 4: r.nondiff = AD_INPUT(1); break;
    case 5: r.n_inputs = 2; r.not_gradient = AD_INPUT(2); break;
    case 6: r.n_inputs = AD_MAX_INPUTS; r.nondiff = AD_INPUT(AD_MAX_INPUTS); break;
    case 7: r.flags = 2u; break;         /* the retired AD_RULE_NOT_A_GRADIENT */
    case 8: r.flags = 8u | 16u; break;   /* retired TRAINS_FEEDBACK and OUTPUT_UNREAD */
    case 9: r.not_gradient = AD_OUTPUT; break; /* the output bit is only for unread */
    }
    return r;
}
enum { N_BAD_RULES = 10 };

Test(registry, malformed_rules_fail_with_bad_rule_and_leave_the_table_unchanged)
{
    for (int i = 0; i < N_BAD_RULES; i++) {
        ad_rule bad = bad_rules(i);
        cr_expect_eq(ad_rule_register(ident_fn, &bad), AD_ERR_BAD_RULE, "bad rule %d", i);
        cr_expect(strstr(ad_last_error(), "ident_fn") != NULL, "bad rule %d: message %s", i,
                  ad_last_error());
        cr_expect_null(ad_rule_find(ident_fn), "bad rule %d was registered", i);
    }
    cr_assert_eq(ad_rule_register(ident_fn, &rule_a), AD_OK, "%s", ad_last_error());
    for (int i = 0; i < N_BAD_RULES; i++) {
        ad_rule bad = bad_rules(i);
        cr_expect_eq(ad_rule_replace(ident_fn, &bad), AD_ERR_BAD_RULE, "bad rule %d", i);
        const ad_rule *kept = ad_rule_find(ident_fn);
        cr_assert_not_null(kept);
        cr_expect(kept->pullback == pullback_a && kept->n_inputs == 1,
                  "bad rule %d replaced the good one", i);
    }
}

Test(registry, rule_with_eight_inputs_and_full_masks_is_accepted)
{
    ad_rule wide = rule_a;
    wide.n_inputs = AD_MAX_INPUTS;
    wide.nondiff = AD_INPUT(AD_MAX_INPUTS - 1);
    wide.not_gradient = AD_INPUT(0);
    wide.unread = AD_INPUT(AD_MAX_INPUTS) - 1u + AD_OUTPUT; /* every input and the output */
    wide.flags = AD_RULE_MIXED_DTYPES | AD_RULE_IGNORES_DY;
    cr_expect_eq(ad_rule_register(negate_fn, &wide), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ad_rule_find(negate_fn)->n_inputs, AD_MAX_INPUTS);
}

/* ---- unregistration ---- */

Test(registry, unregistered_function_cannot_be_recorded)
{
    cr_assert_eq(ad_rule_register(ident_fn, &rule_a), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_rule_unregister(ident_fn), AD_OK, "%s", ad_last_error());
    cr_expect_null(ad_rule_find(ident_fn));

    rig r;
    rig_open(&r);
    ad_var out = ad_call(r.t, ident_fn, ad_use(r.t, r.w));
    cr_expect_not(ad_var_ok(out));
    cr_expect_eq(ad_tape_status(r.t), AD_ERR_NO_RULE);
    cr_expect(strstr(ad_tape_error(r.t), "no rule registered for ident_fn") != NULL,
              "tape error: %s", ad_tape_error(r.t));
    cr_expect_eq(ad_rule_unregister(ident_fn), AD_ERR_NO_RULE, "unregistered twice");
    cr_expect_eq(ad_rule_unregister(negate_fn), AD_ERR_NO_RULE, "never registered");
    cr_expect_eq(ad_rule_register(ident_fn, &rule_b), AD_OK,
                 "registering again after unregistering: %s", ad_last_error());
    rig_close(&r);
}

Test(registry, tape_recorded_before_unregister_still_runs_its_rule)
{
    cr_assert_eq(ad_rule_register(ident_fn, &rule_a), AD_OK, "%s", ad_last_error());
    rig r;
    rig_open(&r);
    ad_var loss = record_ident(&r, 1);
    cr_assert_eq(ad_rule_unregister(ident_fn), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ran_a, 1);
    expect_grad(&r, 1.0);
    rig_close(&r);
}

/* ---- counters ---- */

Test(registry, pullback_counts_are_kept_per_tape_and_per_process)
{
    cr_expect_eq(ad_rule_total_pullbacks(ident_fn), 0u);
    cr_assert_eq(ad_rule_register(ident_fn, &rule_a), AD_OK, "%s", ad_last_error());
    rig one, two;
    rig_open(&one);
    rig_open(&two);
    uint64_t sums_before = ad_rule_total_pullbacks(ad_op_sum);

    ad_var l1 = record_ident(&one, 1);
    ad_var l2 = record_ident(&two, 2);
    cr_expect_eq(ad_tape_pullback_count(one.t, ident_fn), 0u, "counted before any sweep");
    cr_assert_eq(ad_backward(one.t, l1, one.ps, one.gs), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_backward(two.t, l2, two.ps, two.gs), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ad_tape_pullback_count(one.t, ident_fn), 1u);
    cr_expect_eq(ad_tape_pullback_count(two.t, ident_fn), 2u);
    cr_expect_eq(ad_rule_total_pullbacks(ident_fn), 3u);
    cr_expect_eq(ad_tape_pullback_count(two.t, ad_op_sum), 1u);
    cr_expect_eq(ad_rule_total_pullbacks(ad_op_sum), sums_before + 2);

    /* A replaced rule's runs and the new one's add up to one total per function. */
    cr_assert_eq(ad_rule_replace(ident_fn, &rule_b), AD_OK, "%s", ad_last_error());
    ad_tape_reset(one.t);
    l1 = record_ident(&one, 1);
    cr_assert_eq(ad_backward(one.t, l1, one.ps, one.gs), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ad_tape_pullback_count(one.t, ident_fn), 2u, "a reset cleared the count");
    cr_expect_eq(ad_rule_total_pullbacks(ident_fn), 4u);
    cr_expect_eq(ran_a, 3);
    cr_expect_eq(ran_b, 1);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cr_expect_eq(ad_tape_print_rule_counts(one.t, f), AD_OK);
    fclose(f);
    cr_expect(strstr(text, "ident (rule B)") != NULL, "rule counts:\n%s", text);
    free(text);
    rig_close(&one);
    rig_close(&two);
}

Test(registry, counts_survive_unregistration)
{
    cr_assert_eq(ad_rule_register(ident_fn, &rule_a), AD_OK, "%s", ad_last_error());
    rig r;
    rig_open(&r);
    ad_var loss = record_ident(&r, 2);
    cr_assert_eq(ad_backward(r.t, loss, r.ps, r.gs), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_rule_unregister(ident_fn), AD_OK, "%s", ad_last_error());
    cr_expect_eq(ad_rule_total_pullbacks(ident_fn), 2u);
    cr_expect_eq(ad_tape_pullback_count(r.t, ident_fn), 2u,
                 "the tape forgot its runs of a rule that was unregistered later");
    rig_close(&r);
}

/* ---- out of memory ---- */

Test(registry, out_of_memory_during_registration_is_clean)
{
    ts_alloc_install();
    cr_assert_not_null(ad_rule_find(ad_op_matmul)); /* seeds the built-ins first */
    uint64_t n = 1;
    for (;; n++) {
        int64_t before = ts_alloc_outstanding();
        ts_alloc_fail_at(n);
        ad_status rc = ad_rule_register(ident_fn, &rule_a);
        ts_alloc_fail_at(0);
        if (rc == AD_OK)
            break;
        cr_assert_eq(rc, AD_ERR_NOMEM, "allocation %llu: %s", (unsigned long long)n,
                     ad_last_error());
        cr_expect(strstr(ad_last_error(), "ident_fn") != NULL, "message: %s",
                  ad_last_error());
        cr_assert_eq(ts_alloc_outstanding(), before, "failing allocation %llu leaked",
                     (unsigned long long)n);
        cr_assert_null(ad_rule_find(ident_fn), "failing allocation %llu left a rule",
                       (unsigned long long)n);
        cr_assert_lt(n, 100u, "registration never succeeds");
    }
    cr_expect_gt(n, 1u, "registration allocated nothing, so no failure was tested");
    const ad_rule *found = ad_rule_find(ident_fn);
    cr_assert_not_null(found);
    cr_expect(found->pullback == pullback_a);
    ts_alloc_uninstall();
}
