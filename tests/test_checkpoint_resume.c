/*
** test_checkpoint_resume.c: what a checkpoint carries besides the weights. Training
** resumed from a checkpoint (parameters, Adam's moments and step counts, the
** generator, the step) must continue bit for bit as the uninterrupted run; the
** optimiser's and generator's metadata are validated like the tensors, and a load that
** fails on them leaves parameters, optimiser and generator as they were. The caller's
** own metadata pairs are checked in test_checkpoint_args.c.
*/
#include <criterion/criterion.h>
#include <string.h>

#include "ckpt_files.h"
#include "support.h"

TestSuite(checkpoint_resume, .init = cf_make_dir, .fini = cf_remove_dir);

/* Parameters, optimiser (buffers, step counts, rate), generator and step. */
static void assert_nets_equal(cf_net *a, cf_net *b)
{
    cr_assert_eq(ad_optim_state_count(b->opt), ad_optim_state_count(a->opt));
    for (int i = 0; i < 4; i++) {
        cf_assert_bits_equal(ad_params_at(b->ps, i), ad_params_at(a->ps, i),
                             cf_net_names[i]);
        for (int k = 0; k < ad_optim_state_count(a->opt); k++) {
            ad_tensor va, vb;
            cr_assert_eq(ad_optim_state(a->opt, i, k, &va), AD_OK);
            cr_assert_eq(ad_optim_state(b->opt, i, k, &vb), AD_OK);
            cf_assert_bits_equal(&vb, &va, "optimiser state");
        }
        int64_t sa, sb;
        cr_assert_eq(ad_optim_get_steps(a->opt, i, &sa), AD_OK);
        cr_assert_eq(ad_optim_get_steps(b->opt, i, &sb), AD_OK);
        cr_assert_eq(sb, sa, "step counts of %s differ", cf_net_names[i]);
    }
    ad_optim_config ca, cb;
    ad_optim_get_config(a->opt, &ca);
    ad_optim_get_config(b->opt, &cb);
    cr_assert(!memcmp(&ca.lr, &cb.lr, sizeof ca.lr), "learning rates differ");
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

/* Gives the net a fresh optimiser of that kind (its other settings the defaults). */
static void set_kind(cf_net *n, ad_optim_kind kind, double lr)
{
    ad_optim_free(n->opt);
    ad_optim_config c = ad_optim_defaults(kind);
    c.lr = lr;
    cr_assert_eq(ad_optim_new(n->ps, &c, &n->opt), AD_OK);
}

/* Saves net a (3 steps) to a file, sets its metadata key to value (NULL: removed),
** loads into net b with optimiser and generator: expects `code` with `needle`, and b
** exactly as it was. */
static void resume_fails(const char *key, const char *value, ad_optim_kind kind,
                         ad_status code, const char *needle)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    if (kind != AD_OPT_ADAM)
        set_kind(&b, kind, 0.0);
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

/* Net a trains with Adam's defaults (beta1 0.9 is 3feccccccccccccd): a file that says
** another beta1, or momentum, eps, ... than the optimiser it is loaded into names the
** setting and both values, and changes nothing. */
Test(checkpoint_resume, optimiser_with_other_settings_is_metadata_error)
{
    resume_fails("adtape.optim.beta1", "3fe0000000000000", AD_OPT_ADAM, AD_ERR_METADATA,
                 "beta1 = 0.5, but this one has beta1 = 0.90000000000000002");
    resume_fails("adtape.optim.eps", "0000000000000000", AD_OPT_ADAM, AD_ERR_METADATA,
                 "eps = 0, but this one has eps");
    resume_fails("adtape.optim.weight_decay", "3f847ae147ae147b", AD_OPT_ADAM,
                 AD_ERR_METADATA, "weight_decay = 0.01");
    resume_fails("adtape.optim.clip_norm", "not hex", AD_OPT_ADAM, AD_ERR_METADATA,
                 "adtape.optim.clip_norm is 'not hex'");
}

/* Every setting is in the file, as the bits of the optimiser's own value; a file from
** before settings were saved (none of the keys) still loads. */
Test(checkpoint_resume, settings_are_saved_and_a_file_without_them_loads)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    cf_net_train(&a, 3);
    const char *p = cf_path("settings.safetensors");
    ad_checkpoint_extras xa = cf_net_extras(&a), xb = cf_net_extras(&b);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK, "%s",
                 ad_last_error());
    const char *keys[] = {"adtape.optim.momentum", "adtape.optim.beta1", "adtape.optim.beta2",
                          "adtape.optim.eps", "adtape.optim.weight_decay",
                          "adtape.optim.clip_norm", "adtape.optim.alpha",
                          "adtape.optim.centered"};
    const char *want[] = {"3feccccccccccccd", "3feccccccccccccd", "3feff7ced916872b",
                          "3e45798ee2308c3a", "0000000000000000", "0000000000000000",
                          "3fefae147ae147ae", "0000000000000000"};
    ad_checkpoint_info *info = NULL;
    cr_assert_eq(ad_checkpoint_inspect(p, &info), AD_OK, "%s", ad_last_error());
    for (int k = 0; k < 8; k++) {
        const char *got = NULL;
        for (int m = 0; m < info->n_meta; m++)
            if (!strcmp(info->meta[m].key, keys[k]))
                got = info->meta[m].value;
        cr_expect(got && !strcmp(got, want[k]), "%s is %s, not %s", keys[k],
                  got ? got : "missing", want[k]);
    }
    ad_checkpoint_info_free(info);
    for (int k = 0; k < 8; k++)
        cf_rewrite_meta(p, keys[k], NULL);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_OK, "%s",
                 ad_last_error());
    for (int i = 0; i < 4; i++)
        cf_assert_bits_equal(ad_params_at(b.ps, i), ad_params_at(a.ps, i), cf_net_names[i]);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* Gives the net a fresh RMSprop with every buffer (momentum, centered). */
static void set_rmsprop(cf_net *n, int centered)
{
    ad_optim_free(n->opt);
    ad_optim_config c = ad_optim_defaults(AD_OPT_RMSPROP);
    c.momentum = 0.5;
    c.centered = centered;
    cr_assert_eq(ad_optim_new(n->ps, &c, &n->opt), AD_OK);
}

/* RMSprop's square average, momentum buffer and gradient average travel under torch's
** names, and the resumed run continues bit for bit. */
Test(checkpoint_resume, rmsprop_state_round_trips_and_resumes_bit_identically)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 99);
    set_rmsprop(&a, 1);
    set_rmsprop(&b, 1);
    const char *p = cf_path("rmsprop.safetensors");
    cf_net_train(&a, 6);
    ad_checkpoint_extras xa = cf_net_extras(&a);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK, "%s",
                 ad_last_error());
    ad_checkpoint_info *info = NULL;
    cr_assert_eq(ad_checkpoint_inspect(p, &info), AD_OK, "%s", ad_last_error());
    const char *want[3] = {"__optim__.fc1.weight.square_avg",
                           "__optim__.fc1.weight.momentum_buffer",
                           "__optim__.fc1.weight.grad_avg"};
    for (int k = 0; k < 3; k++) {
        bool found = false;
        for (int i = 0; i < info->n_tensors; i++)
            found = found || !strcmp(info->tensors[i].name, want[k]);
        cr_expect(found, "the file lacks %s", want[k]);
    }
    ad_checkpoint_info_free(info);
    cf_net_train(&a, 6);
    ad_checkpoint_extras xb = cf_net_extras(&b);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_OK, "%s",
                 ad_last_error());
    b.step = xb.step;
    cf_net_train(&b, 6);
    assert_nets_equal(&a, &b);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* A centered RMSprop's file does not resume an uncentered one: the setting is checked
** (before the missing buffer would be), and nothing changes. */
Test(checkpoint_resume, rmsprop_of_other_centered_is_metadata_error)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    set_rmsprop(&a, 1);
    set_rmsprop(&b, 0);
    cf_net_train(&a, 2);
    const char *p = cf_path("centered.safetensors");
    ad_checkpoint_extras xa = cf_net_extras(&a), xb = cf_net_extras(&b);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK);
    cf_snapshot *s = cf_snap(b.ps, b.opt, &b.rng);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_ERR_METADATA);
    cr_expect(strstr(ad_last_error(), "centered = 1, but this one has centered = 0"), "%s",
              ad_last_error());
    cf_assert_unchanged(s, b.ps, b.opt, &b.rng, "after a failed resume");
    cf_snap_free(s);
    cf_net_close(&a);
    cf_net_close(&b);
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
    resume_fails("adtape.rng", "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
                 AD_OPT_ADAM, AD_ERR_METADATA, "adtape.rng"); /* upper case */
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
    resume_fails("adtape.step", "000000000000000000001", AD_OPT_ADAM, AD_ERR_METADATA,
                 "adtape.step"); /* 21 digits */
    resume_fails("adtape.step", "1a", AD_OPT_ADAM, AD_ERR_METADATA, "adtape.step");
    resume_fails("adtape.optim.steps.fc1.bias", "9223372036854775808", AD_OPT_ADAM,
                 AD_ERR_METADATA, "adtape.optim.steps.fc1.bias"); /* INT64_MAX + 1 */
}

/* The rate is the 16 lowercase hex digits of a finite double >= 0. */
Test(checkpoint_resume, learning_rate_not_the_bits_of_a_rate_is_metadata_error)
{
    /* 15 digits, upper case, not hex, -1.0, +Inf */
    static const char *const bad[] = {"3f847ae147ae147", "3F847AE147AE147B",
                                      "3f847ae147ae147g", "bff0000000000000",
                                      "7ff0000000000000"};
    for (int i = 0; i < 5; i++)
        resume_fails("adtape.optim.lr", bad[i], AD_OPT_ADAM, AD_ERR_METADATA, bad[i]);
}

/* Adam's file read by momentum, its kind rewritten to match: the first moments serve
** as velocities, and the second moments are buffers this optimiser does not have. */
Test(checkpoint_resume, optimiser_buffer_the_optimiser_lacks_is_extra_tensor)
{
    resume_fails("adtape.optim.kind", "momentum", AD_OPT_MOMENTUM, AD_ERR_EXTRA_TENSOR,
                 "'__optim__.fc1.weight.v', which is not a buffer of the optimiser");
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

/* A checkpoint of no parameters (names may then be NULL) still carries the generator
** and the step. */
Test(checkpoint_resume, checkpoint_without_parameters_carries_generator_and_step)
{
    ad_params *ps;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    ad_rng r, r2;
    ad_rng_seed(&r, 5);
    ad_rng_seed(&r2, 6);
    ad_checkpoint_extras x = {.rng = &r, .step = 7}, y = {.rng = &r2};
    const char *p = cf_path("empty.safetensors");
    cr_assert_eq(ad_checkpoint_save(p, ps, NULL, &x), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_checkpoint_load(p, ps, NULL, &y), AD_OK, "%s", ad_last_error());
    cr_assert(!memcmp(&r, &r2, sizeof r), "the generator was not restored");
    cr_assert_eq(y.step, 7);
    ad_params_free(ps);
}

/* ---- every optimiser ---- */

static ad_status kind_of(const char *key, const char *value, void *user)
{
    if (!strcmp(key, "adtape.optim.kind"))
        snprintf(user, 16, "%s", value);
    return AD_OK;
}

/* Each kind is stored under its name and restores its buffers, step counts and rate
** (b's rate differs from a's until the load). */
Test(checkpoint_resume, every_optimiser_kind_restores_its_state)
{
    static const char *const names[] = {"descent", "momentum", "nesterov", "adam", "adamw"};
    ad_optim_kind kinds[] = {AD_OPT_DESCENT, AD_OPT_MOMENTUM, AD_OPT_NESTEROV, AD_OPT_ADAM,
                             AD_OPT_ADAMW};
    for (int i = 0; i < 5; i++) {
        cf_net a, b;
        cf_net_open(&a, 1);
        cf_net_open(&b, 2);
        set_kind(&a, kinds[i], 0.05);
        set_kind(&b, kinds[i], 0.01);
        cf_net_train(&a, 2);
        const char *p = cf_path("kind.safetensors");
        ad_checkpoint_extras xa = cf_net_extras(&a);
        cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &xa), AD_OK, "%s",
                     ad_last_error());
        char kind[16] = "";
        ad_checkpoint_extras xb = cf_net_extras(&b);
        xb.on_meta = kind_of, xb.user = kind;
        cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, &xb), AD_OK, "%s: %s",
                     names[i], ad_last_error());
        cr_assert_str_eq(kind, names[i]);
        b.step = xb.step;
        assert_nets_equal(&a, &b);
        cf_net_close(&a);
        cf_net_close(&b);
    }
}
