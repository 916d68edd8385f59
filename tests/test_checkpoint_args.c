/*
** test_checkpoint_args.c: what the caller passes besides the file. Parameter names
** that break a rule and metadata pairs that break a rule are refused by a save before
** any file is made, and names also by a load, which then changes nothing; an optimiser
** of another parameter set is refused; the caller's metadata pairs reach its callback,
** whose veto fails the load and changes nothing.
*/
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_files.h"
#include "support.h"

/* w (f32 2x2) and b (f64 2), named "w" and "b". */
static ad_tensor *w, *b;
static ad_params *ps;
static const char *const *const wb = cf_wb_names;

static void setup(void)
{
    cf_make_dir();
    cf_wb_open(&w, &b, &ps);
}

static void teardown(void)
{
    cf_wb_close(w, b, ps);
    cf_remove_dir();
}

TestSuite(checkpoint_args, .init = setup, .fini = teardown);

/* ---- parameter names ---- */

/* Names that break a rule, given first of two; the caller's metadata keys are checked
** below. */
static const struct bad_name {
    const char *name, *why;
    ad_status code;
} bad_names[] = {
    {"", "empty", AD_ERR_BAD_NAME},
    {"__metadata__", "reserved", AD_ERR_BAD_NAME},
    {"__optim__.w.m", "reserved", AD_ERR_BAD_NAME},
    {"w\xe9", "not UTF-8", AD_ERR_BAD_NAME},                /* Latin-1: a lead, no tail */
    {"\x80w", "not UTF-8", AD_ERR_BAD_NAME},                /* a continuation byte first */
    {"\xc0\xaf", "not UTF-8", AD_ERR_BAD_NAME},             /* '/' in an overlong form */
    {"\xed\xa0\x80", "not UTF-8", AD_ERR_BAD_NAME},         /* a UTF-16 surrogate */
    {"\xf4\x90\x80\x80", "not UTF-8", AD_ERR_BAD_NAME},     /* above U+10FFFF */
    {"\xf8\x88\x80\x80\x80", "not UTF-8", AD_ERR_BAD_NAME}, /* a five-byte form */
    {NULL, "is NULL", AD_ERR_NULL},
};

/* Each bad name is refused by a save, which makes no file, and by the load of a valid
** file, which changes nothing; a name with a four-byte character is fine. */
Test(checkpoint_args, names_breaking_a_rule_are_refused_by_save_and_load)
{
    const char *p = cf_path("args.safetensors"), *valid = cf_path("valid.safetensors");
    cr_assert_eq(ad_checkpoint_save(valid, ps, wb, NULL), AD_OK, "%s", ad_last_error());
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        const struct bad_name *b = &bad_names[i];
        const char *const names[] = {b->name, "b"};
        cr_assert_eq(ad_checkpoint_save(p, ps, names, NULL), b->code, "name %zu: %s", i,
                     ad_last_error());
        cr_assert(strstr(ad_last_error(), b->why), "name %zu: %s", i, ad_last_error());
        cf_load_fails(valid, ps, names, b->code, b->why);
    }
    const char *const dup[] = {"w", "w"};
    cr_assert_eq(ad_checkpoint_save(p, ps, dup, NULL), AD_ERR_DUPLICATE_NAME);
    cr_assert(strstr(ad_last_error(), "'w' is given twice"), "%s", ad_last_error());
    cf_load_fails(valid, ps, dup, AD_ERR_DUPLICATE_NAME, "'w' is given twice");
    cr_assert_eq(ad_checkpoint_save(p, ps, NULL, NULL), AD_ERR_NULL);
    cr_assert_eq(ad_checkpoint_save(NULL, ps, wb, NULL), AD_ERR_NULL);
    cr_assert_eq(access(p, F_OK), -1, "no file may be made");
    cr_assert_eq(cf_count_temp(), 0);
    const char *const four_byte[] = {"w\xf0\x9f\x98\x80", "b"}; /* U+1F600 is valid */
    cr_assert_eq(ad_checkpoint_save(p, ps, four_byte, NULL), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_checkpoint_load(p, ps, four_byte, NULL), AD_OK, "%s", ad_last_error());
}

Test(checkpoint_args, optimiser_of_another_parameter_set_is_invalid)
{
    ad_params *other;
    ad_optim *o;
    cr_assert_eq(ad_params_new(&other), AD_OK);
    ad_params_add(other, w, NULL);
    ad_optim_config adam = ad_optim_defaults(AD_OPT_ADAM);
    cr_assert_eq(ad_optim_new(other, &adam, &o), AD_OK);
    ad_checkpoint_extras x = {.optim = o};
    cr_assert_eq(ad_checkpoint_save(cf_path("o"), ps, wb, &x), AD_ERR_INVALID);
    cr_assert_eq(ad_checkpoint_load(cf_path("o"), ps, wb, &x), AD_ERR_INVALID);
    ad_optim_free(o);
    ad_params_free(other);
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

Test(checkpoint_args, metadata_pairs_reach_the_callback_and_a_veto_changes_nothing)
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
    /* format, step, rng, kind, lr, the eight other settings, four step counts, and the
    ** two of the caller */
    cr_assert_eq(sn.count, 19, "%d pairs", sn.count);
    cf_snap_free(s);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* Metadata pairs that break a rule, each given alone. */
static const struct bad_pair {
    ad_checkpoint_meta m;
    ad_status code;
    const char *why;
} bad_pairs[] = {
    {{"k", NULL}, AD_ERR_NULL, "the value of metadata pair 0 is NULL"},
    {{NULL, "v"}, AD_ERR_NULL, "the key of metadata pair 0 is NULL"},
    {{"", "v"}, AD_ERR_BAD_NAME, "metadata key 0 is empty"},
    {{"k\xff", "v"}, AD_ERR_BAD_NAME, "metadata key 0 is not UTF-8"},
    {{"format", "np"}, AD_ERR_BAD_NAME, "'format' is reserved"},
    {{"adtape.step", "9"}, AD_ERR_BAD_NAME, "'adtape.step' is reserved"},
    {{"k", "\xc3("}, AD_ERR_METADATA, "the value of metadata key 'k' is not UTF-8"},
};

Test(checkpoint_args, metadata_pairs_breaking_a_rule_are_refused_before_any_file_is_made)
{
    cf_net a;
    cf_net_open(&a, 1);
    cf_net_train(&a, 1);
    const char *p = cf_path("args.safetensors");
    ad_checkpoint_extras x = cf_net_extras(&a);
    cf_snapshot *s = cf_snap(a.ps, a.opt, &a.rng);
    for (size_t i = 0; i < sizeof bad_pairs / sizeof bad_pairs[0]; i++) {
        x.meta = &bad_pairs[i].m, x.n_meta = 1;
        cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &x), bad_pairs[i].code,
                     "pair %zu: %s", i, ad_last_error());
        cr_assert(strstr(ad_last_error(), bad_pairs[i].why), "pair %zu: %s", i,
                  ad_last_error());
    }
    ad_checkpoint_meta twice[] = {{"k", "1"}, {"k", "2"}};
    x.meta = twice, x.n_meta = 2;
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &x), AD_ERR_DUPLICATE_NAME);
    cr_assert(strstr(ad_last_error(), "metadata key 'k' is given twice"), "%s",
              ad_last_error());
    x.n_meta = -1;
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &x), AD_ERR_INVALID);
    x.meta = NULL, x.n_meta = 1;
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &x), AD_ERR_NULL);
    cr_assert(strstr(ad_last_error(), "meta is NULL"), "%s", ad_last_error());
    cr_assert_eq(access(p, F_OK), -1, "no file may be made");
    cr_assert_eq(cf_count_temp(), 0);
    cf_assert_unchanged(s, a.ps, a.opt, &a.rng, "after a refused save");
    cf_snap_free(s);
    cf_net_close(&a);
}
