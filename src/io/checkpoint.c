/*
** checkpoint.c: what saving and loading share: the system-call table, jansson's
** allocation, and the checks of names and arguments. The writer is checkpoint_save.c,
** the reader checkpoint_load.c on top of safetensors_parse.c.
*/
#define _POSIX_C_SOURCE 200809L /* mkstemp, fchmod, fsync */
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "checkpoint_io.h"

static int open_dir(const char *path)
{
    return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

const adi_checkpoint_io adi_checkpoint_io_system_ = {mkstemp, fchmod, write, fsync,
                                                   close,   rename, open_dir};
adi_checkpoint_io adi_checkpoint_io_hooks_ = {mkstemp, fchmod, write, fsync,
                                            close,   rename, open_dir};

/* ---- jansson through the allocation hooks ---- */

/* Set when an allocation jansson asked for failed: jansson sometimes reports that as a
** syntax error, and a failed growth of its token buffer can even go unreported, so the
** callers treat any jansson result as an out-of-memory once this is set. */
static _Thread_local bool json_oom;

/*
** jansson 2.14 does not survive a NULL from its allocator everywhere (its lexer ignores
** a failed growth of the token buffer and reads past it: akheron/jansson#362), so a
** failed hook allocation is recorded, then served from plain malloc so jansson carries
** on safely; the caller reports AD_ERR_NOMEM all the same. A header before each block
** says which allocator made it, so the release goes to the right one.
*/
typedef union json_block {
    int from_hooks;
    max_align_t align;
} json_block;

static void *json_alloc(size_t size)
{
    size_t total;
    if (!adi_size_add(size, sizeof(json_block), &total))
        return json_oom = true, NULL;
    json_block *b = ad_malloc(total);
    if (b) {
        b->from_hooks = 1;
        return b + 1;
    }
    json_oom = true;
    b = malloc(total);
    if (!b)
        return NULL; /* the process itself is out of memory */
    b->from_hooks = 0;
    return b + 1;
}

static void json_release(void *p)
{
    if (!p)
        return;
    json_block *b = (json_block *)p - 1;
    if (b->from_hooks)
        ad_free(b);
    else
        free(b);
}

static pthread_once_t json_once = PTHREAD_ONCE_INIT;

/* jansson's allocator is process-wide. Take it over only from jansson's own default,
** so a program that set its own keeps it (see ad_checkpoint.h). */
static void json_route(void)
{
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    if (m == malloc && f == free)
        json_set_alloc_funcs(json_alloc, json_release);
}

void adi_ckpt_json_begin(void)
{
    pthread_once(&json_once, json_route);
    json_oom = false;
}

bool adi_ckpt_json_oom(void)
{
    return json_oom;
}

/* ---- names ---- */

/* UTF-8 as RFC 3629 defines it: shortest forms, no surrogates, at most U+10FFFF.
** jansson refuses anything else, so the writer checks first and can tell a bad name
** from an out-of-memory. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned long c = *p++, min;
        int extra;
        if (c < 0x80)
            continue;
        if ((c & 0xE0) == 0xC0)
            extra = 1, min = 0x80, c &= 0x1F;
        else if ((c & 0xF0) == 0xE0)
            extra = 2, min = 0x800, c &= 0x0F;
        else if ((c & 0xF8) == 0xF0)
            extra = 3, min = 0x10000, c &= 0x07;
        else
            return false;
        for (int i = 0; i < extra; i++, p++) {
            if ((*p & 0xC0) != 0x80) /* also stops at the terminating NUL */
                return false;
            c = (c << 6) | (*p & 0x3Fu);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
    }
    return true;
}

/* kind names the owner in messages: "parameter", "buffer" or "generator". Generators
** are keys, not tensors, so only the tensors' names are reserved. */
static ad_status check_name(const char *what, const char *kind, const char *name, int i)
{
    if (!name)
        return ad_fail(AD_ERR_NULL, "%s: the name of %s %d is NULL", what, kind, i);
    if (!*name || !utf8_valid(name))
        return ad_fail(AD_ERR_BAD_NAME, "%s: the name of %s %d is %s", what, kind, i,
                       *name ? "not UTF-8" : "empty");
    if (strcmp(kind, "generator") &&
        (!strcmp(name, CKPT_METADATA) || adi_ckpt_has_prefix(name, CKPT_OPTIM_PREFIX)))
        return ad_fail(AD_ERR_BAD_NAME, "%s: the name of %s %d, '%s', is reserved", what,
                       kind, i, name);
    return AD_OK;
}

static ad_status check_meta(const char *what, const ad_checkpoint_meta *m, int i)
{
    if (!m->key || !m->value)
        return ad_fail(AD_ERR_NULL, "%s: the %s of metadata pair %d is NULL", what,
                       m->key ? "value" : "key", i);
    if (!*m->key || !utf8_valid(m->key))
        return ad_fail(AD_ERR_BAD_NAME, "%s: metadata key %d is %s", what, i,
                       *m->key ? "not UTF-8" : "empty");
    if (!strcmp(m->key, "format") || adi_ckpt_has_prefix(m->key, CKPT_KEY_PREFIX))
        return ad_fail(AD_ERR_BAD_NAME, "%s: metadata key '%s' is reserved", what, m->key);
    if (!utf8_valid(m->value))
        return ad_fail(AD_ERR_METADATA, "%s: the value of metadata key '%s' is not UTF-8",
                       what, m->key);
    return AD_OK;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *name_at(const void *base, int i)
{
    return ((const char *const *)base)[i];
}

static const char *key_at(const void *base, int i)
{
    return ((const ad_checkpoint_meta *)base)[i].key;
}

/* Sorts a copy of the n strings get(base, i) to find a repeated one in n log n;
** `kind` names them in the message. */
static ad_status check_unique(const char *what, const void *base, int n,
                              const char *(*get)(const void *, int), const char *kind)
{
    if (n < 2)
        return AD_OK;
    const char **sorted = adi_calloc((size_t)n, sizeof *sorted);
    if (!sorted)
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory checking %d names", what, n);
    for (int i = 0; i < n; i++)
        sorted[i] = get(base, i);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_strings);
    ad_status rc = AD_OK;
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(sorted[i - 1], sorted[i]))
            rc = ad_fail(AD_ERR_DUPLICATE_NAME, "%s: %s '%s' is given twice", what, kind,
                         sorted[i]);
    ad_free(sorted);
    return rc;
}

static const char *rng_name_at(const void *base, int i)
{
    return ((const ad_checkpoint_rng *)base)[i].name;
}

/* The buffers and generators: tensors of a loadable dtype, names as for parameters;
** a buffer's name must differ from every parameter's too (one namespace of tensors). */
static ad_status check_state(const char *what, const char *const names[], int n,
                             const ad_checkpoint_extras *x)
{
    if (x->n_buffers < 0 || x->n_rngs < 0)
        return ad_fail(AD_ERR_INVALID, "%s: n_%s = %d is negative", what,
                       x->n_buffers < 0 ? "buffers" : "rngs",
                       x->n_buffers < 0 ? x->n_buffers : x->n_rngs);
    if ((x->n_buffers > 0 && !x->buffers) || (x->n_rngs > 0 && !x->rngs))
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL for %d entries", what,
                       x->n_buffers > 0 && !x->buffers ? "buffers" : "rngs",
                       x->n_buffers > 0 && !x->buffers ? x->n_buffers : x->n_rngs);
    ad_status rc = AD_OK;
    for (int i = 0; i < x->n_buffers && !rc; i++) {
        const ad_tensor *t = x->buffers[i].tensor;
        rc = check_name(what, "buffer", x->buffers[i].name, i);
        if (!rc && !t)
            rc = ad_fail(AD_ERR_NULL, "%s: the tensor of buffer '%s' is NULL", what,
                         x->buffers[i].name);
        else if (!rc && t->dtype != AD_F32 && t->dtype != AD_F64)
            rc = ad_fail(AD_ERR_DTYPE, "%s: buffer '%s' is %s; checkpoints hold f32 and "
                         "f64", what, x->buffers[i].name, ad_dtype_name(t->dtype));
    }
    for (int i = 0; i < x->n_rngs && !rc; i++) {
        rc = check_name(what, "generator", x->rngs[i].name, i);
        if (!rc && !x->rngs[i].rng)
            rc = ad_fail(AD_ERR_NULL, "%s: generator '%s' is NULL", what, x->rngs[i].name);
    }
    if (rc || x->n_buffers == 0)
        return rc ? rc : check_unique(what, x->rngs, x->n_rngs, rng_name_at, "generator name");
    const char **all = adi_calloc((size_t)n + (size_t)x->n_buffers, sizeof *all);
    if (!all)
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory checking names", what);
    for (int i = 0; i < n; i++)
        all[i] = names[i];
    for (int i = 0; i < x->n_buffers; i++)
        all[n + i] = x->buffers[i].name;
    rc = check_unique(what, all, n + x->n_buffers, name_at, "tensor name");
    ad_free(all);
    return rc ? rc : check_unique(what, x->rngs, x->n_rngs, rng_name_at, "generator name");
}

static ad_status check_extras(const char *what, const ad_params *ps, const char *const names[],
                              const ad_checkpoint_extras *x, bool with_meta)
{
    if (x->optim && ad_optim_params(x->optim) != ps)
        return ad_fail(AD_ERR_INVALID, "%s: the optimiser was made for another parameter "
                       "set", what);
    ad_status rc = check_state(what, names, ad_params_count(ps), x);
    if (rc || !with_meta)
        return rc;
    if (x->n_meta < 0)
        return ad_fail(AD_ERR_INVALID, "%s: n_meta = %d is negative", what, x->n_meta);
    if (x->n_meta > 0 && !x->meta)
        return ad_fail(AD_ERR_NULL, "%s: meta is NULL for %d pairs", what, x->n_meta);
    for (int i = 0; i < x->n_meta; i++) {
        rc = check_meta(what, &x->meta[i], i);
        if (rc)
            return rc;
    }
    return check_unique(what, x->meta, x->n_meta, key_at, "metadata key");
}

/* Without an array of names, the set's own (ad_params_add_named) are gathered into
** *owned, which the caller frees; with one, *owned stays NULL and names wins. */
static ad_status resolve_names(const char *what, const ad_params *ps,
                               const char *const names[], const char ***owned)
{
    int n = ad_params_count(ps);
    *owned = NULL;
    if (names || n == 0)
        return AD_OK;
    const char **got = adi_calloc((size_t)n, sizeof *got);
    if (!got)
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory for %d names", what, n);
    for (int i = 0; i < n; i++) {
        got[i] = ad_params_name(ps, i);
        if (!got[i]) {
            ad_free(got);
            return ad_fail(AD_ERR_NULL, "%s: names is NULL and parameter %d has no name "
                           "(add it with ad_params_add_named)", what, i);
        }
    }
    *owned = got;
    return AD_OK;
}

ad_status adi_ckpt_check_args(const char *what, const char *path, const ad_params *ps,
                          const char *const names[], const ad_checkpoint_extras *x,
                          bool with_meta, const char ***owned)
{
    *owned = NULL;
    if (!path || !ps)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what, path ? "parameter set" : "path");
    ad_status rc = resolve_names(what, ps, names, owned);
    const char *const *nm = *owned ? (const char *const *)*owned : names;
    int n = ad_params_count(ps);
    for (int i = 0; i < n && !rc; i++)
        rc = check_name(what, "parameter", nm[i], i);
    if (!rc)
        rc = check_unique(what, nm, n, name_at, "parameter name");
    if (!rc && x)
        rc = check_extras(what, ps, nm, x, with_meta);
    if (rc) {
        ad_free(*owned);
        *owned = NULL;
    }
    return rc;
}

char *adi_ckpt_join(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c), n;
    if (!adi_size_add(la, lb, &n) || !adi_size_add(n, lc, &n) || !adi_size_add(n, 1, &n))
        return NULL;
    char *s = ad_malloc(n);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

const char *adi_ckpt_kind_name(ad_optim_kind kind)
{
    switch (kind) {
    case AD_OPT_DESCENT: return "descent";
    case AD_OPT_MOMENTUM: return "momentum";
    case AD_OPT_NESTEROV: return "nesterov";
    case AD_OPT_ADAM: return "adam";
    case AD_OPT_ADAMW: return "adamw";
    case AD_OPT_RMSPROP: return "rmsprop";
    }
    return "?";
}

const char *adi_ckpt_state_suffix(const ad_optim_config *c, int k)
{
    static const char *const moments[2] = {".m", ".v"};
    static const char *const rms[3] = {".square_avg", ".momentum_buffer", ".grad_avg"};
    if (c->kind != AD_OPT_RMSPROP)
        return moments[k];
    return rms[k == 0 || c->momentum > 0.0 ? k : k + 1];
}

const char *adi_ckpt_dtype_tag(ad_dtype dtype)
{
    return dtype == AD_F64 ? "F64" : "F32";
}
