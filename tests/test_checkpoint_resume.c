/*
** test_checkpoint_resume.c: what a checkpoint carries besides the weights. Training
** resumed from a checkpoint (parameters, Adam's moments and step counts, the
** generator, the step) must continue bit for bit as the uninterrupted run; the
** optimiser's and generator's metadata are validated like the tensors, and a load that
** fails on them leaves parameters, optimiser and generator as they were.
*/
#include <criterion/criterion.h>
#include <string.h>

#include "ckpt_files.h"
#include "support.h"

TestSuite(checkpoint_resume, .init = cf_make_dir, .fini = cf_remove_dir);

static void assert_nets_equal(cf_net *a, cf_net *b)
{
    for (int i = 0; i < 4; i++) {
        cf_assert_bits_equal(ad_params_at(b->ps, i), ad_params_at(a->ps, i),
                             cf_net_names[i]);
        for (int k = 0; k < 2; k++) {
            ad_tensor va, vb;
            cr_assert_eq(ad_optim_state(a->opt, i, k, &va), AD_OK);
            cr_assert_eq(ad_optim_state(b->opt, i, k, &vb), AD_OK);
            cf_assert_bits_equal(&vb, &va, "optimiser state");
        }
    }
    cr_assert(!memcmp(&a->rng, &b->rng, sizeof a->rng), "generators differ");
    cr_assert_eq(a->step, b->step);
}

Test(checkpoint_resume, resumed_training_is_bit_identical_to_uninterrupted_training)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 99);
    const char *p = cf_path("resume.safetensors");
    cf_net_train(&a, 10);
    ad_checkpoint_extras xa = cf_net_extras(&a);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK, "%s",
                 ad_last_error());
    cf_net_train(&a, 10);

    ad_checkpoint_extras xb = cf_net_extras(&b);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_OK, "%s",
                 ad_last_error());
    cr_assert_eq(xb.step, 10);
    b.step = xb.step;
    int64_t steps;
    cr_assert_eq(ad_optim_get_steps(b.opt, 0, &steps), AD_OK);
    cr_assert_eq(steps, 10, "Adam's bias correction needs the step count");
    cf_net_train(&b, 10);
    assert_nets_equal(&a, &b);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* The control: the same resume without the generator's state draws other batches, so
** the comparison above could fail. */
Test(checkpoint_resume, resume_without_the_generator_diverges)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 99);
    const char *p = cf_path("resume.safetensors");
    cf_net_train(&a, 10);
    ad_checkpoint_extras xa = cf_net_extras(&a);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK);
    cf_net_train(&a, 10);
    ad_checkpoint_extras xb = {.optim = b.opt};
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_OK, "%s",
                 ad_last_error());
    cf_net_train(&b, 10);
    cr_assert(memcmp(a.w1->data, b.w1->data, 24 * sizeof(float)) != 0);
    cf_net_close(&a);
    cf_net_close(&b);
}

Test(checkpoint_resume, training_checkpoint_loads_weights_only_into_a_model_without_optimiser)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    const char *p = cf_path("train.safetensors");
    cf_net_train(&a, 3);
    ad_checkpoint_extras xa = cf_net_extras(&a);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK);
    cf_snapshot *s = cf_snap(b.ps, b.opt, &b.rng);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, NULL), AD_OK, "%s",
                 ad_last_error());
    for (int i = 0; i < 4; i++)
        cf_assert_bits_equal(ad_params_at(b.ps, i), ad_params_at(a.ps, i), cf_net_names[i]);
    cf_snap_free(s);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* Saves net a (3 steps) to a file, lets `edit` spoil it, loads into net b with
** optimiser and generator: expects `code` with `needle`, and b exactly as it was. */
static void resume_fails(const char *key, const char *value, ad_optim_kind kind,
                         ad_status code, const char *needle)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    if (kind != AD_OPT_ADAM) {
        ad_optim_free(b.opt);
        ad_optim_config c = {.kind = kind};
        cr_assert_eq(ad_optim_new(b.ps, &c, &b.opt), AD_OK);
    }
    cf_net_train(&a, 3);
    cf_net_train(&b, 2);
    const char *p = cf_path("spoiled.safetensors");
    ad_checkpoint_extras xa = cf_net_extras(&a), xb = cf_net_extras(&b);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK);
    if (key)
        cf_rewrite_meta(p, key, value);
    cf_snapshot *s = cf_snap(b.ps, b.opt, &b.rng);
    ad_status rc = ad_checkpoint_load(p, b.ps, cf_net_names, &xb);
    cr_assert_eq(rc, code, "got %s, expected %s (%s)", ad_status_str(rc),
                 ad_status_str(code), ad_last_error());
    cr_assert(strstr(ad_last_error(), needle), "message lacks \"%s\": %s", needle,
              ad_last_error());
    cf_assert_unchanged(s, b.ps, b.opt, &b.rng, "after a failed resume");
    cr_assert_eq(xb.step, 2, "the step must stay");
    cf_snap_free(s);
    cf_net_close(&a);
    cf_net_close(&b);
}

Test(checkpoint_resume, optimiser_of_another_kind_is_metadata_error)
{
    resume_fails(NULL, NULL, AD_OPT_MOMENTUM, AD_ERR_METADATA,
                 "adam optimiser state, but the optimiser is momentum");
}

Test(checkpoint_resume, file_without_optimiser_state_is_metadata_error)
{
    resume_fails("adtape.optim.kind", NULL, AD_OPT_ADAM, AD_ERR_METADATA,
                 "adtape.optim.kind is missing");
}

Test(checkpoint_resume, malformed_generator_state_is_metadata_error)
{
    resume_fails("adtape.rng", "12ab", AD_OPT_ADAM, AD_ERR_METADATA, "'12ab'");
    resume_fails("adtape.rng", "0000000000000000000000000000000000000000000000000000000000000000",
                 AD_OPT_ADAM, AD_ERR_METADATA, "adtape.rng");
    resume_fails("adtape.rng", NULL, AD_OPT_ADAM, AD_ERR_METADATA, "adtape.rng is missing");
}

Test(checkpoint_resume, malformed_step_counts_and_rate_are_metadata_error)
{
    resume_fails("adtape.step", "-1", AD_OPT_ADAM, AD_ERR_METADATA, "adtape.step");
    resume_fails("adtape.step", "18446744073709551616", AD_OPT_ADAM, AD_ERR_METADATA,
                 "adtape.step");
    resume_fails("adtape.optim.steps.fc2.bias", " 3", AD_OPT_ADAM, AD_ERR_METADATA,
                 "adtape.optim.steps.fc2.bias");
    resume_fails("adtape.optim.steps.fc1.weight", NULL, AD_OPT_ADAM, AD_ERR_METADATA,
                 "fc1.weight is missing");
    resume_fails("adtape.optim.lr", "7ff8000000000000", AD_OPT_ADAM, AD_ERR_METADATA,
                 "adtape.optim.lr"); /* a NaN */
}

Test(checkpoint_resume, weights_only_file_lacks_the_optimiser_buffers)
{
    /* The kind is there (written by hand) but not the buffers: each is missing. */
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    const char *p = cf_path("weights.safetensors");
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, NULL), AD_OK);
    cf_rewrite_meta(p, "adtape.optim.kind", "adam");
    cf_rewrite_meta(p, "adtape.optim.lr", "3f847ae147ae147b");
    for (int i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof key, "adtape.optim.steps.%s", cf_net_names[i]);
        cf_rewrite_meta(p, key, "0");
    }
    ad_checkpoint_extras xb = {.optim = b.opt};
    cf_snapshot *s = cf_snap(b.ps, b.opt, NULL);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_ERR_MISSING_TENSOR);
    cr_assert(strstr(ad_last_error(), "'__optim__.fc1.weight.m'"), "%s", ad_last_error());
    cf_assert_unchanged(s, b.ps, b.opt, NULL, "after a failed load");
    cf_snap_free(s);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* ---- the caller's metadata ---- */

typedef struct seen {
    int count;
    char run[32];
    ad_status veto;
} seen;

static ad_status on_meta(const char *key, const char *value, void *user)
{
    seen *s = user;
    s->count++;
    if (!strcmp(key, "run"))
        snprintf(s->run, sizeof s->run, "%s", value);
    if (s->veto && !strcmp(key, "run"))
        return ad_fail(s->veto, "run %s is not this model's", value);
    return AD_OK;
}

Test(checkpoint_resume, metadata_pairs_reach_the_callback_and_a_veto_changes_nothing)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    const char *p = cf_path("meta.safetensors");
    ad_checkpoint_meta m[] = {{"run", "r17"}, {"note", "caf\xc3\xa9"}};
    ad_checkpoint_extras xa = cf_net_extras(&a);
    xa.meta = m, xa.n_meta = 2;
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK, "%s",
                 ad_last_error());
    seen sn = {.veto = AD_ERR_INVALID};
    ad_checkpoint_extras xb = {.on_meta = on_meta, .user = &sn};
    cf_snapshot *s = cf_snap(b.ps, NULL, NULL);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_ERR_INVALID);
    cr_assert(strstr(ad_last_error(), "run r17 is not"), "%s", ad_last_error());
    cf_assert_unchanged(s, b.ps, NULL, NULL, "after a veto");
    sn = (seen){0};
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_OK, "%s",
                 ad_last_error());
    cr_assert_str_eq(sn.run, "r17");
    /* format, step, rng, kind, lr, four step counts, and the two of the caller */
    cr_assert_eq(sn.count, 11, "%d pairs", sn.count);
    cf_snap_free(s);
    cf_net_close(&a);
    cf_net_close(&b);
}
