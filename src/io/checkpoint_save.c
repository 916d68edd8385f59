/*
** checkpoint_save.c: ad_checkpoint_save. The header is built as a jansson tree and
** dumped once to learn its length, the data are written straight from the tensors,
** and the file reaches its name only by rename after an fsync, so a crash at any point
** leaves the previous checkpoint or the new one, never a torn file. Every system call
** goes through adi_checkpoint_io_hooks_ so tests can fail each one in turn.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "checkpoint_io.h"

/* The file stores little-endian data and the tensors are written as they lie in
** memory; a big-endian port would need to swap them. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ad_checkpoint writes tensors in host order, which must be little-endian"
#endif

typedef struct piece {
    const void *data;
    size_t bytes;
} piece;

typedef struct plan {
    json_t *root, *meta;
    piece *pieces; /* the data section, in order */
    int n_pieces;
    uint64_t offset; /* bytes of data so far */
    bool ok;         /* false once a jansson call failed (out of memory) */
    unsigned char *header;
    size_t header_bytes; /* 8 + the padded JSON */
} plan;

/* jansson calls fail only for want of memory here: names and values were checked to
** be UTF-8 first. json_object_set_new takes v even when it fails. */
static void put(plan *p, json_t *obj, const char *key, json_t *v)
{
    if (p->ok && json_object_set_new(obj, key, v) != 0)
        p->ok = false;
    else if (!p->ok)
        json_decref(v);
}

static void put_text(plan *p, const char *key, const char *value)
{
    put(p, p->meta, key, json_string(value));
}

/* Adds an entry for `bytes` at t's data under name, and the piece to write. */
static void add_tensor(plan *p, const char *name, const ad_tensor *t)
{
    size_t bytes = (size_t)t->size * ad_dtype_size(t->dtype);
    json_t *e = json_object(), *shape = json_array(), *off = json_array();
    for (int d = 0; d < t->ndim; d++)
        p->ok = p->ok && json_array_append_new(shape, json_integer(t->shape[d])) == 0;
    p->ok = p->ok && json_array_append_new(off, json_integer((json_int_t)p->offset)) == 0;
    p->offset += bytes;
    p->ok = p->ok && json_array_append_new(off, json_integer((json_int_t)p->offset)) == 0;
    if (e) {
        put(p, e, "dtype", json_string(adi_ckpt_dtype_tag(t->dtype)));
        put(p, e, "shape", shape);
        put(p, e, "data_offsets", off);
    } else {
        json_decref(shape);
        json_decref(off);
    }
    put(p, p->root, name, e);
    p->pieces[p->n_pieces++] = (piece){t->data, bytes};
}

/* The kind, the bits of the learning rate and of every other setting, and every
** parameter's step count. */
static ad_status add_optim_meta(const char *what, plan *p, ad_optim *o,
                                const char *const names[], int n)
{
    ad_optim_config c;
    char text[32];
    uint64_t bits;
    double value;
    ad_optim_get_config(o, &c);
    memcpy(&bits, &c.lr, sizeof bits);
    put_text(p, CKPT_KEY_KIND, adi_ckpt_kind_name(c.kind));
    snprintf(text, sizeof text, "%016" PRIx64, bits);
    put_text(p, CKPT_KEY_LR, text);
#define PUT_SETTING(field)                                                              \
    value = (double)c.field;                                                            \
    memcpy(&bits, &value, sizeof bits);                                                 \
    snprintf(text, sizeof text, "%016" PRIx64, bits);                                   \
    put_text(p, CKPT_KEY_SETTING #field, text);
    CKPT_SETTINGS(PUT_SETTING)
#undef PUT_SETTING
    for (int i = 0; i < n && p->ok; i++) {
        int64_t steps = 0;
        ad_optim_get_steps(o, i, &steps);
        char *key = adi_ckpt_join(CKPT_KEY_STEPS, names[i], "");
        if (!key)
            return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
        snprintf(text, sizeof text, "%" PRId64, steps);
        put_text(p, key, text);
        ad_free(key);
    }
    return AD_OK;
}

/* A generator's four state words as 64 lowercase hex digits under key. */
static void put_rng(plan *p, const char *key, const ad_rng *r)
{
    char text[80];
    const uint64_t *s = r->s;
    snprintf(text, sizeof text, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
             s[0], s[1], s[2], s[3]);
    put_text(p, key, text);
}

static ad_status add_metadata(const char *what, plan *p, const ad_checkpoint_extras *x,
                              const char *const names[], int n)
{
    char text[80];
    put_text(p, "format", "pt");
    if (!x)
        return AD_OK;
    snprintf(text, sizeof text, "%" PRIu64, x->step);
    put_text(p, CKPT_KEY_STEP, text);
    if (x->rng)
        put_rng(p, CKPT_KEY_RNG, x->rng);
    for (int i = 0; i < x->n_rngs; i++) {
        char *key = adi_ckpt_join(CKPT_KEY_RNGS, x->rngs[i].name, "");
        if (!key)
            return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
        put_rng(p, key, x->rngs[i].rng);
        ad_free(key);
    }
    ad_status rc = x->optim ? add_optim_meta(what, p, x->optim, names, n) : AD_OK;
    for (int i = 0; i < x->n_meta && !rc; i++)
        put_text(p, x->meta[i].key, x->meta[i].value);
    return rc;
}

/* The optimiser's buffers, "__optim__.<name>.m" and ".v" (RMSprop's named as torch's),
** after the parameters. */
static ad_status add_optim_tensors(const char *what, plan *p, ad_optim *o,
                                   const char *const names[], int n)
{
    ad_optim_config c;
    ad_optim_get_config(o, &c);
    int k = ad_optim_state_count(o);
    for (int i = 0; i < n && p->ok; i++)
        for (int b = 0; b < k; b++) {
            ad_tensor view;
            ad_status rc = ad_optim_state(o, i, b, &view);
            if (rc)
                return rc;
            char *name = adi_ckpt_join(CKPT_OPTIM_PREFIX, names[i],
                                       adi_ckpt_state_suffix(&c, b));
            if (!name)
                return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
            add_tensor(p, name, &view);
            ad_free(name);
        }
    return AD_OK;
}

/* The JSON, padded with spaces to a multiple of 8 as the reference pads it, behind its
** little-endian length. */
static ad_status dump_header(const char *what, plan *p)
{
    size_t n = p->ok ? json_dumpb(p->root, NULL, 0, JSON_COMPACT) : 0;
    size_t padded = (n + 7) / 8 * 8;
    if (n == 0 || adi_ckpt_json_oom())
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory building the header", what);
    if (padded > CKPT_HEADER_MAX)
        return ad_fail(AD_ERR_HEADER_TOO_LARGE, "%s: a header of %zu bytes is above the "
                       "limit of %u readers accept", what, padded, CKPT_HEADER_MAX);
    /* Each dump allocates (jansson's loop check): a refused allocation fails the save
    ** even though the fallback served it, as in the first dump. */
    p->header = ad_malloc(8 + padded);
    if (!p->header || json_dumpb(p->root, (char *)p->header + 8, n, JSON_COMPACT) != n ||
        adi_ckpt_json_oom())
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory for a header of %zu bytes", what,
                       padded);
    memset(p->header + 8 + n, ' ', padded - n);
    for (int i = 0; i < 8; i++)
        p->header[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    p->header_bytes = 8 + padded;
    return AD_OK;
}

static ad_status build(const char *what, plan *p, const ad_params *ps,
                       const char *const names[], const ad_checkpoint_extras *x)
{
    int n = ad_params_count(ps);
    int k = x && x->optim ? ad_optim_state_count(x->optim) : 0;
    int nb = x ? x->n_buffers : 0;
    adi_ckpt_json_begin();
    p->ok = true;
    p->root = json_object();
    p->meta = json_object();
    p->pieces = adi_calloc((size_t)n * (size_t)(1 + k) + (size_t)nb + 1, sizeof *p->pieces);
    if (!p->root || !p->meta || !p->pieces)
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
    json_incref(p->meta); /* the root takes one reference; plan_free drops ours */
    put(p, p->root, CKPT_METADATA, p->meta);
    ad_status rc = add_metadata(what, p, x, names, n);
    for (int i = 0; i < n && !rc; i++)
        add_tensor(p, names[i], ad_params_at(ps, i));
    for (int i = 0; i < nb && !rc; i++)
        add_tensor(p, x->buffers[i].name, x->buffers[i].tensor);
    if (!rc && k > 0)
        rc = add_optim_tensors(what, p, x->optim, names, n);
    if (!rc && p->offset > (uint64_t)INT64_MAX)
        rc = ad_fail(AD_ERR_OVERFLOW, "%s: %" PRIu64 " bytes of data", what, p->offset);
    return rc ? rc : dump_header(what, p);
}

static void plan_free(plan *p)
{
    json_decref(p->meta);
    json_decref(p->root);
    ad_free(p->pieces);
    ad_free(p->header);
}

static ad_status io_fail(const char *what, const char *step, const char *file, int err)
{
    return ad_fail(AD_ERR_IO, "%s: %s of %s failed: %s", what, step, file, strerror(err));
}

static ad_status write_all(const char *what, const char *tmp, int fd, const void *buf,
                           size_t n)
{
    const adi_checkpoint_io *io = &adi_checkpoint_io_hooks_;
    const char *b = buf;
    while (n > 0) {
        size_t ask = n < ((size_t)1 << 30) ? n : (size_t)1 << 30;
        ssize_t w = io->write_fn(fd, b, ask);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) /* 0 for a positive count: no progress, as a full disk */
            return io_fail(what, "write", tmp, w < 0 ? errno : ENOSPC);
        b += w;
        n -= (size_t)w;
    }
    return AD_OK;
}

/* mkstemp makes the file 0600; a checkpoint that replaces another keeps its mode. */
static ad_status keep_mode(const char *what, const char *path, const char *tmp, int fd)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return AD_OK;
    if (adi_checkpoint_io_hooks_.fchmod_fn(fd, sb.st_mode & 07777) != 0)
        return io_fail(what, "fchmod", tmp, errno);
    return AD_OK;
}

/* Writes and syncs the temporary file; closes it whatever happens, exactly once (Linux
** releases the descriptor even when close fails, so it is never closed again). */
static ad_status write_temp(const char *what, const char *path, const char *tmp, int fd,
                            const plan *p)
{
    const adi_checkpoint_io *io = &adi_checkpoint_io_hooks_;
    ad_status rc = keep_mode(what, path, tmp, fd);
    if (!rc)
        rc = write_all(what, tmp, fd, p->header, p->header_bytes);
    for (int i = 0; i < p->n_pieces && !rc; i++)
        rc = write_all(what, tmp, fd, p->pieces[i].data, p->pieces[i].bytes);
    /* A failed fsync may have dropped the dirty pages: retrying could "succeed" on a
    ** file that lost data, so the first failure is final. */
    if (!rc && io->fsync_fn(fd) != 0)
        rc = io_fail(what, "fsync", tmp, errno);
    if (io->close_fn(fd) != 0 && !rc)
        rc = io_fail(what, "close", tmp, errno);
    return rc;
}

/* Makes the rename durable. Closing the folder's read-only descriptor after its fsync
** succeeded cannot lose anything, so its result is not an error. */
static ad_status sync_folder(const char *what, const char *dir)
{
    const adi_checkpoint_io *io = &adi_checkpoint_io_hooks_;
    ad_status rc = AD_OK;
    int fd = io->open_dir_fn(dir);
    if (fd < 0)
        rc = io_fail(what, "open of the folder", dir, errno);
    else if (io->fsync_fn(fd) != 0)
        rc = io_fail(what, "fsync of the folder", dir, errno);
    if (fd >= 0)
        (void)io->close_fn(fd);
    return rc;
}

/* path's folder ("." for a bare name, "/" for a file at the root). */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = adi_ckpt_join(slash ? path : ".", "", "");
    if (dir && slash)
        dir[slash == path ? 1 : slash - path] = '\0';
    return dir;
}

/* Both names are made before the first system call, so nothing after the rename can
** run out of memory. */
static ad_status write_file(const char *what, const char *path, const plan *p)
{
    const adi_checkpoint_io *io = &adi_checkpoint_io_hooks_;
    char *tmp = adi_ckpt_join(path, ".tmp.XXXXXX", ""), *dir = folder_of(path);
    if (!tmp || !dir) {
        ad_free(tmp);
        ad_free(dir);
        return ad_fail(AD_ERR_NOMEM, "%s: out of memory", what);
    }
    int fd = io->mkstemp_fn(tmp);
    ad_status rc = fd < 0 ? io_fail(what, "mkstemp", tmp, errno)
                          : write_temp(what, path, tmp, fd, p);
    if (!rc && io->rename_fn(tmp, path) != 0)
        rc = io_fail(what, "rename to its name", tmp, errno);
    if (rc && fd >= 0)
        unlink(tmp);
    if (!rc)
        rc = sync_folder(what, dir);
    ad_free(tmp);
    ad_free(dir);
    return rc;
}

ad_status ad_checkpoint_save(const char *path, const ad_params *ps, const char *const names[],
                             const ad_checkpoint_extras *extras)
{
    static const char what[] = "ad_checkpoint_save";
    const char **owned;
    ad_status rc = adi_ckpt_check_args(what, path, ps, names, extras, true, &owned);
    if (rc)
        return rc;
    plan p = {0};
    rc = build(what, &p, ps, owned ? (const char *const *)owned : names, extras);
    if (!rc)
        rc = write_file(what, path, &p);
    plan_free(&p);
    ad_free(owned);
    return rc;
}
