/*
** ckpt_files.c: see ckpt_files.h.
*/
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "ckpt_files.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"

static char dir[64];

void cf_make_dir(void)
{
    ts_tmpdir_make(dir, sizeof dir, "ckpt");
}

void cf_remove_dir(void)
{
    ts_tmpdir_remove(dir);
}

const char *cf_dir(void)
{
    return dir;
}

const char *cf_path(const char *name)
{
    static char ring[8][600];
    static int next;
    char *p = ring[next++ % 8];
    snprintf(p, sizeof ring[0], "%s/%s", dir, name);
    return p;
}

void cf_write(const char *path, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(bytes, 1, n, fp), n);
    cr_assert_eq(fclose(fp), 0);
}

unsigned char *cf_read(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fseek(fp, 0, SEEK_END), 0);
    long size = ftell(fp);
    cr_assert_geq(size, 0);
    rewind(fp);
    unsigned char *b = malloc((size_t)size + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    *n = (size_t)size;
    return b;
}

int cf_count_temp(void)
{
    int n = 0;
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d));)
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

void cf_write_safetensors(const char *path, const char *json, size_t pad, const void *data,
                          size_t n)
{
    size_t len = strlen(json), padded = pad ? (len + pad - 1) / pad * pad : len;
    unsigned char *b = malloc(8 + padded + n + 1);
    cr_assert_not_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, json, len);
    memset(b + 8 + len, ' ', padded - len);
    if (n)
        memcpy(b + 8 + padded, data, n);
    cf_write(path, b, 8 + padded + n);
    free(b);
}

/* ---- snapshots ---- */

enum { SNAP_MAX = 16 };

struct cf_snapshot {
    int n, k;
    void *bytes[SNAP_MAX];
    uint64_t version[SNAP_MAX];
    void *state[SNAP_MAX][2];
    int64_t steps[SNAP_MAX];
    double lr;
    ad_rng rng;
};

static size_t bytes_of(const ad_tensor *t)
{
    return (size_t)t->size * ad_dtype_size(t->dtype);
}

static void *copy_of(const ad_tensor *t)
{
    void *c = malloc(bytes_of(t) + 1);
    cr_assert_not_null(c);
    if (bytes_of(t))
        memcpy(c, t->data, bytes_of(t));
    return c;
}

cf_snapshot *cf_snap(const ad_params *ps, ad_optim *o, const ad_rng *r)
{
    cf_snapshot *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    s->n = ad_params_count(ps);
    cr_assert_leq(s->n, SNAP_MAX);
    s->k = o ? ad_optim_state_count(o) : 0;
    for (int i = 0; i < s->n; i++) {
        s->bytes[i] = copy_of(ad_params_at(ps, i));
        s->version[i] = ad_params_at(ps, i)->version;
        for (int b = 0; b < s->k; b++) {
            ad_tensor v;
            cr_assert_eq(ad_optim_state(o, i, b, &v), AD_OK);
            s->state[i][b] = copy_of(&v);
        }
        if (o)
            cr_assert_eq(ad_optim_get_steps(o, i, &s->steps[i]), AD_OK);
    }
    if (o) {
        ad_optim_config c;
        ad_optim_get_config(o, &c);
        s->lr = c.lr;
    }
    if (r)
        s->rng = *r;
    return s;
}

static void same_bytes(const void *want, const ad_tensor *t, const char *what, int i,
                       const char *part)
{
    cr_assert(bytes_of(t) == 0 || memcmp(want, t->data, bytes_of(t)) == 0,
              "%s: %s of parameter %d changed", what, part, i);
}

void cf_assert_unchanged(const cf_snapshot *s, const ad_params *ps, ad_optim *o,
                         const ad_rng *r, const char *what)
{
    for (int i = 0; i < s->n; i++) {
        const ad_tensor *p = ad_params_at(ps, i);
        same_bytes(s->bytes[i], p, what, i, "data");
        cr_assert_eq(p->version, s->version[i], "%s: version of parameter %d changed",
                     what, i);
        for (int b = 0; b < s->k; b++) {
            ad_tensor v;
            cr_assert_eq(ad_optim_state(o, i, b, &v), AD_OK);
            same_bytes(s->state[i][b], &v, what, i, "optimiser state");
        }
        int64_t steps = 0;
        if (o)
            cr_assert_eq(ad_optim_get_steps(o, i, &steps), AD_OK);
        cr_assert_eq(steps, s->steps[i], "%s: step count of parameter %d changed", what, i);
    }
    if (o) {
        ad_optim_config c;
        ad_optim_get_config(o, &c);
        cr_assert(memcmp(&c.lr, &s->lr, sizeof c.lr) == 0, "%s: lr changed", what);
    }
    if (r)
        cr_assert(memcmp(r, &s->rng, sizeof *r) == 0, "%s: generator changed", what);
}

void cf_snap_free(cf_snapshot *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++) {
        free(s->bytes[i]);
        for (int b = 0; b < s->k; b++)
            free(s->state[i][b]);
    }
    free(s);
}

void cf_assert_bits_equal(const ad_tensor *a, const ad_tensor *b, const char *what)
{
    cr_assert_eq(a->dtype, b->dtype, "%s: dtypes differ", what);
    cr_assert_eq(a->ndim, b->ndim, "%s: ranks differ", what);
    for (int d = 0; d < a->ndim; d++)
        cr_assert_eq(a->shape[d], b->shape[d], "%s: extent %d differs", what, d);
    cr_assert(bytes_of(a) == 0 || memcmp(a->data, b->data, bytes_of(a)) == 0,
              "%s: bytes differ", what);
}

void cf_assert_file_is(const char *path, const unsigned char *want, size_t n,
                       const char *what)
{
    size_t size;
    unsigned char *got = cf_read(path, &size);
    cr_assert(size == n && !memcmp(got, want, n), "%s: the file is not the expected one",
              what);
    free(got);
}

/* ---- two parameters, w and b ---- */

const char *const cf_wb_names[2] = {"w", "b"};

void cf_wb_open(ad_tensor **w, ad_tensor **b, ad_params **ps)
{
    *w = ts_tensor(AD_F32, 2, TS_SHAPE(2, 2));
    *b = ts_tensor(AD_F64, 1, TS_SHAPE(2));
    ad_tensor_fill(*w, 7.0);
    ad_tensor_fill(*b, -7.0);
    cr_assert_eq(ad_params_new(ps), AD_OK);
    ad_params_add(*ps, *w, NULL);
    ad_params_add(*ps, *b, NULL);
}

void cf_wb_close(ad_tensor *w, ad_tensor *b, ad_params *ps)
{
    ad_params_free(ps);
    ad_tensor_free(w);
    ad_tensor_free(b);
}

void cf_load_fails(const char *path, ad_params *ps, const char *const names[],
                   ad_status code, const char *needle)
{
    cf_snapshot *s = cf_snap(ps, NULL, NULL);
    ad_status rc = ad_checkpoint_load(path, ps, names, NULL);
    cr_assert_eq(rc, code, "got %s, expected %s (%s)", ad_status_str(rc),
                 ad_status_str(code), ad_last_error());
    if (needle)
        cr_assert(strstr(ad_last_error(), needle), "message lacks \"%s\": %s", needle,
                  ad_last_error());
    cf_assert_unchanged(s, ps, NULL, NULL, "after a failed load");
    cf_snap_free(s);
}

/* ---- a small model to train and resume ---- */

const char *const cf_net_names[4] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};

static ad_var net_loss(ad_tape *t, void *user)
{
    cf_net *n = user;
    ad_var z = ad_matmul(t, ad_use(t, n->x), ad_use(t, n->w1), 0, 1);
    ad_var h = ad_tanh(t, ad_bias_add(t, z, ad_use(t, n->b1)));
    ad_var o = ad_bias_add(t, ad_matmul(t, h, ad_use(t, n->w2), 0, 1), ad_use(t, n->b2));
    return ad_mse(t, o, ad_use(t, n->y));
}

void cf_net_open(cf_net *n, uint64_t seed)
{
    *n = (cf_net){0};
    ad_rng init;
    ad_rng_seed(&init, seed);
    n->w1 = ts_tensor(AD_F32, 2, TS_SHAPE(6, 4));
    n->b1 = ts_tensor(AD_F32, 1, TS_SHAPE(6));
    n->w2 = ts_tensor(AD_F32, 2, TS_SHAPE(2, 6));
    n->b2 = ts_tensor(AD_F32, 1, TS_SHAPE(2));
    n->x = ts_tensor(AD_F32, 2, TS_SHAPE(8, 4));
    n->y = ts_tensor(AD_F32, 2, TS_SHAPE(8, 2));
    cr_assert_eq(ad_init_glorot_uniform(n->w1, &init), AD_OK);
    cr_assert_eq(ad_init_glorot_uniform(n->w2, &init), AD_OK);
    cr_assert_eq(ad_params_new(&n->ps), AD_OK);
    ad_tensor *p[4] = {n->w1, n->b1, n->w2, n->b2};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ad_params_add(n->ps, p[i], NULL), AD_OK);
    cr_assert_eq(ad_grads_new(n->ps, &n->gs), AD_OK);
    ad_optim_config c = ad_optim_defaults(AD_OPT_ADAM);
    c.lr = 0.01;
    cr_assert_eq(ad_optim_new(n->ps, &c, &n->opt), AD_OK);
    cr_assert_eq(ad_tape_new(&n->tape), AD_OK);
    ad_rng_seed(&n->rng, seed * 7919 + 1);
}

void cf_net_close(cf_net *n)
{
    ad_tape_free(n->tape);
    ad_optim_free(n->opt);
    ad_grads_free(n->gs);
    ad_params_free(n->ps);
    ad_tensor *t[6] = {n->w1, n->b1, n->w2, n->b2, n->x, n->y};
    for (int i = 0; i < 6; i++)
        ad_tensor_free(t[i]);
}

void cf_net_train(cf_net *n, int steps)
{
    for (int s = 0; s < steps; s++) {
        float *x = n->x->data, *y = n->y->data;
        for (int i = 0; i < 8 * 4; i++)
            x[i] = (float)ad_rng_normal(&n->rng);
        for (int i = 0; i < 8 * 2; i++)
            y[i] = (float)(2.0 * ad_rng_uniform(&n->rng) - 1.0);
        ad_tensor_touch(n->x);
        ad_tensor_touch(n->y);
        double loss;
        cr_assert_eq(ad_gradient(n->tape, n->ps, net_loss, n, n->gs, &loss), AD_OK, "%s",
                     ad_last_error());
        cr_assert_eq(ad_optim_step(n->opt, n->gs), AD_OK, "%s", ad_last_error());
        n->step++;
    }
}

ad_checkpoint_extras cf_net_extras(cf_net *n)
{
    return (ad_checkpoint_extras){.optim = n->opt, .rng = &n->rng, .step = n->step};
}

void cf_net_save(const char *path, cf_net *n)
{
    ad_checkpoint_extras x = cf_net_extras(n);
    cr_assert_eq(ad_checkpoint_save(path, n->ps, cf_net_names, &x), AD_OK, "%s",
                 ad_last_error());
}

void cf_rewrite_meta(const char *path, const char *key, const char *value)
{
    size_t size;
    unsigned char *f = cf_read(path, &size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f[i];
    json_error_t err;
    json_t *root = json_loadb((const char *)f + 8, (size_t)n, 0, &err);
    cr_assert_not_null(root, "jansson: %s", err.text);
    json_t *meta = json_object_get(root, "__metadata__");
    cr_assert_not_null(meta);
    if (value)
        json_object_set_new(meta, key, json_string(value));
    else
        json_object_del(meta, key);
    /* Into our own buffer: jansson's allocator may be the library's hooks by now. */
    size_t len = json_dumpb(root, NULL, 0, JSON_COMPACT);
    char *text = malloc(len + 1);
    cr_assert(len > 0 && text && json_dumpb(root, text, len, JSON_COMPACT) == len);
    text[len] = '\0';
    cf_write_safetensors(path, text, 8, f + 8 + n, size - 8 - (size_t)n);
    free(text);
    json_decref(root);
    free(f);
}
