/*
** checkpoint_inspect.c: ad_checkpoint_inspect. adi_st_open validates the file against
** the format as it does for a load (and reads only the header); what it found is then
** copied into one block, sized first, so the caller frees one pointer and an
** out-of-memory can happen in one place, before anything is handed out.
*/
#include <string.h>

#include "checkpoint_internal.h"

/* Where each part of the block starts; the parts follow the info struct. */
typedef struct layout {
    size_t tensors, meta, extents, strings, total;
} layout;

/* Reserves count items of size bytes, aligned to align, after *end. */
static bool reserve(size_t *end, size_t align, size_t count, size_t size, size_t *start)
{
    size_t at, bytes;
    if (!adi_size_add(*end, align - 1, &at) || !adi_size_mul(count, size, &bytes))
        return false;
    at -= at % align;
    if (!adi_size_add(at, bytes, end))
        return false;
    *start = at;
    return true;
}

/* The block's size, checked as every size is; a header of at most 100 MB cannot make
** it overflow, even with a 32-bit size_t. */
static bool plan(const adi_st_file *f, size_t n_meta, layout *l)
{
    size_t extents = 0, strings = 0;
    for (int i = 0; i < f->n; i++) {
        extents += (size_t)f->entries[i].ndim; /* all of them are in f->extents */
        if (!adi_size_add(strings, strlen(f->entries[i].name) + 1, &strings))
            return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(f->meta, key, v) {
        if (!adi_size_add(strings, strlen(key) + 1, &strings) ||
            !adi_size_add(strings, strlen(json_string_value(v)) + 1, &strings))
            return false;
    }
    l->total = sizeof(ad_checkpoint_info);
    return reserve(&l->total, _Alignof(ad_checkpoint_entry), (size_t)f->n,
                   sizeof(ad_checkpoint_entry), &l->tensors) &&
           reserve(&l->total, _Alignof(ad_checkpoint_meta), n_meta,
                   sizeof(ad_checkpoint_meta), &l->meta) &&
           reserve(&l->total, _Alignof(int64_t), extents, sizeof(int64_t), &l->extents) &&
           reserve(&l->total, 1, strings, 1, &l->strings);
}

/* Appends s to the string area at *next; returns the copy. */
static const char *put(char **next, const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = memcpy(*next, s, n);
    *next += n;
    return copy;
}

static void fill(const adi_st_file *f, int n_meta, const layout *l, char *block)
{
    ad_checkpoint_info *info = (ad_checkpoint_info *)(void *)block;
    ad_checkpoint_entry *t = (ad_checkpoint_entry *)(void *)(block + l->tensors);
    ad_checkpoint_meta *m = (ad_checkpoint_meta *)(void *)(block + l->meta);
    int64_t *x = (int64_t *)(void *)(block + l->extents);
    char *s = block + l->strings;
    *info = (ad_checkpoint_info){.n_tensors = f->n, .tensors = t, .n_meta = n_meta,
                                 .meta = m, .header_bytes = f->header_size,
                                 .data_bytes = f->data_size};
    for (int i = 0; i < f->n; i++) {
        const adi_st_entry *e = &f->entries[i];
        if (e->ndim)
            memcpy(x, e->shape, (size_t)e->ndim * sizeof *x);
        t[i] = (ad_checkpoint_entry){.name = put(&s, e->name), .dtype = e->dtype->name,
                                     .ndim = e->ndim, .shape = x, .begin = e->begin,
                                     .end = e->end,
                                     .loadable = e->dtype->loads_as && e->ndim <= AD_MAX_RANK};
        x += e->ndim;
    }
    const char *key;
    json_t *v;
    int k = 0;
    json_object_foreach(f->meta, key, v) {
        m[k].key = put(&s, key);
        m[k++].value = put(&s, json_string_value(v));
    }
}

ad_status ad_checkpoint_inspect(const char *path, ad_checkpoint_info **out)
{
    static const char what[] = "ad_checkpoint_inspect";
    if (!path || !out)
        return ad_fail(AD_ERR_NULL, "%s: %s is NULL", what, path ? "out" : "path");
    adi_st_file f;
    ad_status rc = adi_st_open(what, path, &f);
    if (rc)
        return rc;
    /* A header of at most 100 MB holds fewer than INT_MAX pairs. */
    int n_meta = (int)json_object_size(f.meta);
    layout l;
    char *block = NULL;
    if (!plan(&f, (size_t)n_meta, &l))
        rc = ad_fail(AD_ERR_OVERFLOW, "%s: %s: the listing's size overflows", what, path);
    else if (!(block = ad_malloc(l.total)))
        rc = ad_fail(AD_ERR_NOMEM, "%s: %s: out of memory for a listing of %zu bytes", what,
                     path, l.total);
    else
        fill(&f, n_meta, &l, block);
    adi_st_close(&f);
    if (!rc)
        *out = (ad_checkpoint_info *)(void *)block;
    return rc;
}

void ad_checkpoint_info_free(ad_checkpoint_info *info)
{
    ad_free(info);
}
