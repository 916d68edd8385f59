/*
** checkpoint_load.c: ad_checkpoint_load. Two phases: everything that can fail (the
** file against the format in safetensors_parse.c; whether adtape can load each of its
** tensors, before any name is looked at; the names, dtypes and shapes; adtape's
** metadata; reading the data into a scratch buffer; the caller's metadata callback)
** runs first and builds a list of copies; only then are the copies made, which cannot
** fail, so a failed load leaves every parameter, the optimiser and the generator as
** they were.
*/
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint_internal.h"

typedef struct copy {
    void *dst;
    const adi_st_entry *src;
} copy;

typedef struct load {
    adi_st_file f;
    copy *copies;
    int n_copies;
    int64_t *steps; /* the optimiser's step counts by parameter index */
    double lr;
    ad_rng rng;
    ad_rng *rngs;   /* the named generators' states, in extras' order */
    uint64_t step;
} load;

/* "[2, 3] F32": every extent, as far as size allows; a shape too long for buf ends in
** "...]", so a message never passes a cut shape off as a whole one. */
static void describe_entry(const adi_st_entry *e, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < e->ndim && n < size; d++) {
        char x[24];
        int k = snprintf(x, sizeof x, "%s%" PRId64, d ? ", " : "", e->shape[d]);
        if (n + (size_t)k + 16 >= size) { /* room left for ", ...] " and a dtype name */
            n += (size_t)snprintf(buf + n, size - n, ", ...");
            break;
        }
        memcpy(buf + n, x, (size_t)k + 1);
        n += (size_t)k;
    }
    if (n < size)
        snprintf(buf + n, size - n, "] %s", e->dtype->name);
}

/* What adtape can load, checked for every tensor of the file before any name is looked
** at, so that a file gets the same error whatever the caller asks of it: an I64 or
** rank-5 tensor could match no parameter and no optimiser buffer, and check_extra
** would refuse it anyway, or not, depending on the names. */
static ad_status check_loadable(const char *what, const adi_st_file *f)
{
    char have[160];
    for (int i = 0; i < f->n; i++) {
        const adi_st_entry *e = &f->entries[i];
        if (!e->dtype->loads_as)
            return ad_fail(AD_ERR_UNSUPPORTED_DTYPE, "%s: %s: tensor '%s' is %s, which "
                           "adtape does not load (it loads F32 and F64)", what, f->path,
                           e->name, e->dtype->name);
        if (e->ndim > AD_MAX_RANK) {
            describe_entry(e, have, sizeof have);
            return ad_fail(AD_ERR_RANK, "%s: %s: tensor '%s' has rank %d, above adtape's "
                           "%d: %s", what, f->path, e->name, e->ndim, AD_MAX_RANK, have);
        }
    }
    return AD_OK;
}

/* Finds the tensor `name` for `want` (a parameter or an optimiser buffer), checks its
** dtype and shape and queues the copy into dst. */
static ad_status claim(const char *what, load *l, const char *name, const ad_tensor *want,
                       void *dst)
{
    char have[96], need[64];
    adi_st_entry *e = adi_st_find(&l->f, name);
    ad_tensor_describe(want, need, sizeof need);
    if (!e)
        return ad_fail(AD_ERR_MISSING_TENSOR, "%s: %s has no tensor '%s' (%s)", what,
                       l->f.path, name, need);
    describe_entry(e, have, sizeof have);
    bool same = e->ndim == want->ndim;
    for (int d = 0; same && d < want->ndim; d++)
        same = e->shape[d] == want->shape[d];
    if (e->dtype->loads_as != want->dtype)
        return ad_fail(AD_ERR_DTYPE, "%s: %s: tensor '%s' is %s in the file but %s in "
                       "memory", what, l->f.path, name, have, need);
    if (!same)
        return ad_fail(AD_ERR_SHAPE, "%s: %s: tensor '%s' is %s in the file but %s in "
                       "memory", what, l->f.path, name, have, need);
    e->used = true;
    l->copies[l->n_copies++] = (copy){dst, e};
    return AD_OK;
}

static const char *meta_get(const adi_st_file *f, const char *key)
{
    return json_string_value(json_object_get(f->meta, key)); /* NULL-safe both */
}

/* Parses exactly hex_digits lowercase hex digits, or with hex_digits 0 a decimal of 1
** to 20 digits that fits in 64 bits, into *out: no sign, no space, no prefix. */
static bool parse_u64(const char *s, int hex_digits, uint64_t *out)
{
    uint64_t v = 0, base = hex_digits ? 16 : 10;
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || (hex_digits ? n != (size_t)hex_digits : n > 20))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
                : hex_digits && c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                     : -1;
        if (d < 0 || v > (UINT64_MAX - (uint64_t)d) / base)
            return false;
        v = v * base + (uint64_t)d;
    }
    *out = v;
    return true;
}

static ad_status bad_meta(const char *what, const adi_st_file *f, const char *key)
{
    const char *v = meta_get(f, key);
    return ad_fail(AD_ERR_METADATA, "%s: %s: metadata %s is %s%s%s", what, f->path, key,
                   v ? "'" : "missing", v ? v : "", v ? "', which is malformed" : "");
}

/* A setting the file holds (files from before settings were saved hold none) must be
** the optimiser's own, bit for bit. */
static ad_status check_setting(const char *what, const adi_st_file *f, const char *key,
                               const char *field, double mine)
{
    const char *text = meta_get(f, key);
    uint64_t bits, my_bits;
    if (!text)
        return AD_OK;
    if (!parse_u64(text, 16, &bits))
        return bad_meta(what, f, key);
    memcpy(&my_bits, &mine, sizeof my_bits);
    if (bits == my_bits)
        return AD_OK;
    double saved;
    memcpy(&saved, &bits, sizeof saved);
    return ad_fail(AD_ERR_METADATA, "%s: %s was saved by an optimiser with %s = %.17g, "
                   "but this one has %s = %.17g (%s)", what, f->path, field, saved, field,
                   mine, key);
}

/* The kind must match (Adam's moments are not a velocity), and so must every saved
** setting but lr; lr and step counts are read now and written in commit. */
static ad_status plan_optim_meta(const char *what, load *l, ad_optim *o,
                                 const char *const names[], int n)
{
    ad_optim_config c;
    ad_optim_get_config(o, &c);
    const char *kind = meta_get(&l->f, CKPT_KEY_KIND);
    if (!kind)
        return bad_meta(what, &l->f, CKPT_KEY_KIND);
    if (strcmp(kind, adi_ckpt_kind_name(c.kind)))
        return ad_fail(AD_ERR_METADATA, "%s: %s holds %s optimiser state, but the "
                       "optimiser is %s", what, l->f.path, kind, adi_ckpt_kind_name(c.kind));
    uint64_t bits;
    if (!parse_u64(meta_get(&l->f, CKPT_KEY_LR), 16, &bits))
        return bad_meta(what, &l->f, CKPT_KEY_LR);
    memcpy(&l->lr, &bits, sizeof bits);
    if (!(l->lr >= 0.0 && isfinite(l->lr)))
        return bad_meta(what, &l->f, CKPT_KEY_LR);
    ad_status rc = AD_OK;
#define CHECK_SETTING(field)                                                            \
    if (rc == AD_OK)                                                                    \
        rc = check_setting(what, &l->f, CKPT_KEY_SETTING #field, #field, (double)c.field);
    CKPT_SETTINGS(CHECK_SETTING)
#undef CHECK_SETTING
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        uint64_t steps = 0;
        char *key = adi_ckpt_join(CKPT_KEY_STEPS, names[i], "");
        if (!key)
            return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
        bool ok = parse_u64(meta_get(&l->f, key), 0, &steps) && steps <= INT64_MAX;
        ad_status rc = ok ? AD_OK : bad_meta(what, &l->f, key);
        ad_free(key);
        if (rc)
            return rc;
        l->steps[i] = (int64_t)steps;
    }
    return AD_OK;
}

/* Claims the optimiser's buffers. Writing each parameter's own step count back makes
** its state exist now (it may be new since the last step), so commit cannot fail. */
static ad_status plan_optim(const char *what, load *l, ad_optim *o,
                            const char *const names[], int n)
{
    ad_optim_config c;
    ad_optim_get_config(o, &c);
    ad_status rc = plan_optim_meta(what, l, o, names, n);
    for (int i = 0; i < n && !rc; i++) {
        int64_t old;
        ad_optim_get_steps(o, i, &old);
        rc = ad_optim_set_steps(o, i, old);
        for (int b = 0; b < ad_optim_state_count(o) && !rc; b++) {
            ad_tensor view;
            char *name = adi_ckpt_join(CKPT_OPTIM_PREFIX, names[i],
                                       adi_ckpt_state_suffix(&c, b));
            rc = name ? ad_optim_state(o, i, b, &view)
                      : ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
            if (!rc)
                rc = claim(what, l, name, &view, view.data);
            ad_free(name);
        }
    }
    return rc;
}

/* Every tensor must have been claimed; the optimiser's are skipped when none was
** asked for. */
static ad_status check_extra(const char *what, const load *l, bool optim)
{
    for (int i = 0; i < l->f.n; i++) {
        const adi_st_entry *e = &l->f.entries[i];
        if (!e->used && (optim || !adi_ckpt_has_prefix(e->name, CKPT_OPTIM_PREFIX)))
            return ad_fail(AD_ERR_EXTRA_TENSOR, "%s: %s holds tensor '%s', which is not %s",
                           what, l->f.path, e->name,
                           adi_ckpt_has_prefix(e->name, CKPT_OPTIM_PREFIX)
                               ? "a buffer of the optimiser"
                               : "among the names given");
    }
    return AD_OK;
}

/* The generator under key: 64 lowercase hex digits, not all zero (xoshiro's fixed
** point, which no seeded generator reaches). A missing key is an error: a generator
** asked for and redrawn from another seed would resume silently on other numbers. */
static ad_status parse_rng(const char *what, const load *l, const char *key, ad_rng *out)
{
    const char *s = meta_get(&l->f, key);
    char part[17] = {0};
    for (int w = 0; w < 4; w++) {
        if (!s || strlen(s) != 64)
            return bad_meta(what, &l->f, key);
        memcpy(part, s + 16 * w, 16);
        if (!parse_u64(part, 16, &out->s[w]))
            return bad_meta(what, &l->f, key);
    }
    if (!(out->s[0] | out->s[1] | out->s[2] | out->s[3]))
        return bad_meta(what, &l->f, key);
    return AD_OK;
}

static ad_status plan_extras(const char *what, load *l, const ad_checkpoint_extras *x)
{
    ad_status rc = x->rng ? parse_rng(what, l, CKPT_KEY_RNG, &l->rng) : AD_OK;
    for (int i = 0; i < x->n_rngs && !rc; i++) {
        char *key = adi_ckpt_join(CKPT_KEY_RNGS, x->rngs[i].name, "");
        rc = key ? parse_rng(what, l, key, &l->rngs[i])
                 : ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
        ad_free(key);
    }
    if (rc)
        return rc;
    const char *step = meta_get(&l->f, CKPT_KEY_STEP);
    l->step = 0;
    if (step && !parse_u64(step, 0, &l->step))
        return bad_meta(what, &l->f, CKPT_KEY_STEP);
    return AD_OK;
}

static ad_status plan_load(const char *what, load *l, const ad_params *ps,
                           const char *const names[], const ad_checkpoint_extras *x)
{
    int n = ad_params_count(ps);
    ad_optim *o = x ? x->optim : NULL;
    int k = o ? ad_optim_state_count(o) : 0;
    int nb = x ? x->n_buffers : 0, nr = x ? x->n_rngs : 0;
    l->copies = adi_calloc((size_t)n * (size_t)(1 + k) + (size_t)nb + 1, sizeof *l->copies);
    l->steps = adi_calloc((size_t)n + 1, sizeof *l->steps);
    l->rngs = adi_calloc((size_t)nr + 1, sizeof *l->rngs);
    if (!l->copies || !l->steps || !l->rngs)
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
    ad_status rc = AD_OK;
    for (int i = 0; i < n && !rc; i++)
        rc = claim(what, l, names[i], ad_params_at(ps, i), ad_params_at(ps, i)->data);
    for (int i = 0; i < nb && !rc; i++)
        rc = claim(what, l, x->buffers[i].name, x->buffers[i].tensor,
                   x->buffers[i].tensor->data);
    if (!rc && o)
        rc = plan_optim(what, l, o, names, n);
    if (!rc)
        rc = check_extra(what, l, o != NULL);
    if (!rc && x)
        rc = plan_extras(what, l, x);
    return rc;
}

static ad_status call_meta(const load *l, const ad_checkpoint_extras *x)
{
    const char *key;
    json_t *v;
    json_object_foreach(l->f.meta, key, v) {
        ad_status rc = x->on_meta(key, json_string_value(v), x->user);
        if (rc != AD_OK)
            return rc;
    }
    return AD_OK;
}

/* Nothing here can fail: every check and allocation happened in plan_load. */
static void commit(const load *l, const ad_params *ps, ad_checkpoint_extras *x)
{
    for (int i = 0; i < l->n_copies; i++) {
        const adi_st_entry *e = l->copies[i].src;
        if (e->end > e->begin)
            memcpy(l->copies[i].dst, l->f.data + e->begin, (size_t)(e->end - e->begin));
    }
    for (int i = 0; i < ad_params_count(ps); i++)
        ad_tensor_touch(ad_params_at(ps, i));
    if (!x)
        return;
    for (int i = 0; i < x->n_buffers; i++)
        ad_tensor_touch(x->buffers[i].tensor);
    for (int i = 0; i < x->n_rngs; i++)
        *x->rngs[i].rng = l->rngs[i];
    if (x->optim) {
        for (int i = 0; i < ad_params_count(ps); i++)
            (void)ad_optim_set_steps(x->optim, i, l->steps[i]); /* state made, steps >= 0 */
        (void)ad_optim_set_lr(x->optim, l->lr);                 /* checked finite, >= 0 */
    }
    if (x->rng)
        *x->rng = l->rng;
    x->step = l->step;
}

ad_status ad_checkpoint_load(const char *path, const ad_params *ps, const char *const names[],
                             ad_checkpoint_extras *extras)
{
    static const char what[] = "ad_checkpoint_load";
    const char **owned;
    ad_status rc = adi_ckpt_check_args(what, path, ps, names, extras, false, &owned);
    if (rc)
        return rc;
    load l = {0};
    rc = adi_st_open(what, path, &l.f);
    if (rc) {
        ad_free(owned);
        return rc;
    }
    rc = check_loadable(what, &l.f);
    if (!rc)
        rc = plan_load(what, &l, ps, owned ? (const char *const *)owned : names, extras);
    if (!rc)
        rc = adi_st_read_data(what, &l.f);
    if (!rc && extras && extras->on_meta)
        rc = call_meta(&l, extras);
    if (!rc)
        commit(&l, ps, extras);
    adi_st_close(&l.f);
    ad_free(l.copies);
    ad_free(l.steps);
    ad_free(l.rngs);
    ad_free(owned);
    return rc;
}
