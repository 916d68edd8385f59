/*
** safetensors_parse.c: opens a safetensors file and validates its structure as the
** reference implementation does (safetensors' Metadata::validate), before anyone
** looks at the names: the header length and its limit, its first byte, the JSON
** (jansson, duplicate keys refused), each entry's fields, dtype (any the format
** defines, safetensors_dtype.c), shape (any rank) and size, and that the tensors,
** sorted by offset, tile the data section from 0 to the end of the file exactly.
** Nothing here knows what adtape can load or what the caller asked for:
** checkpoint_load.c checks both, ad_checkpoint_inspect lists the entries.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"

/* Reads exactly n bytes; a short file is AD_ERR_TRUNCATED, naming `part`. */
static ad_status read_full(const char *what, const adi_st_file *f, void *buf, size_t n,
                           const char *part)
{
    size_t done = 0;
    while (done < n) {
        size_t ask = n - done < ((size_t)1 << 30) ? n - done : (size_t)1 << 30;
        ssize_t r = read(f->fd, (char *)buf + done, ask);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ad_fail(AD_ERR_IO, "%s: %s: reading the %s: %s", what, f->path, part,
                           strerror(errno));
        if (r == 0)
            return ad_fail(AD_ERR_TRUNCATED, "%s: %s: the file ends inside the %s", what,
                           f->path, part);
        done += (size_t)r;
    }
    return AD_OK;
}

static ad_status json_status(const char *what, const adi_st_file *f, const json_error_t *e)
{
    switch (json_error_code(e)) {
    case json_error_out_of_memory:
        return ad_fail(AD_ERR_NOMEM, "%s: %s: out of memory parsing the header", what,
                       f->path);
    case json_error_duplicate_key:
        return ad_fail(AD_ERR_DUPLICATE_NAME, "%s: %s: a name appears twice in the header "
                       "(byte %d): %s", what, f->path, e->position, e->text);
    case json_error_null_byte_in_key:
        return ad_fail(AD_ERR_BAD_NAME, "%s: %s: a name holds a NUL byte (byte %d)", what,
                       f->path, e->position);
    case json_error_numeric_overflow:
        return ad_fail(AD_ERR_OVERFLOW, "%s: %s: a number in the header overflows (byte "
                       "%d): %s", what, f->path, e->position, e->text);
    default:
        return ad_fail(AD_ERR_JSON, "%s: %s: the header is not valid JSON (byte %d): %s",
                       what, f->path, e->position, e->text);
    }
}

static ad_status check_metadata(const char *what, const adi_st_file *f, json_t *m)
{
    const char *key;
    json_t *v;
    if (!json_is_object(m))
        return ad_fail(AD_ERR_METADATA, "%s: %s: \"%s\" is not an object", what, f->path,
                       CKPT_METADATA);
    json_object_foreach(m, key, v) {
        if (!json_is_string(v))
            return ad_fail(AD_ERR_METADATA, "%s: %s: metadata key '%s' has a value that is "
                           "not a string", what, f->path, key);
    }
    return AD_OK;
}

/* A JSON integer >= 0 into *out. */
static bool natural(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/*
** The bytes of count elements of `bits` bits: count * bits / 8, which must be whole,
** as the reference computes it. Split as (count / 8) * bits + (count % 8) * bits / 8
** so that no product overflows where the byte size itself does not.
*/
static ad_status byte_size(const char *what, const adi_st_file *f, const adi_st_entry *e,
                           uint64_t count, uint64_t *bytes)
{
    uint64_t bits = e->dtype->bits, rest = count % 8 * bits; /* rest < 512 */
    if (count / 8 > (UINT64_MAX - rest / 8) / bits ||
        count / 8 * bits + rest / 8 > (uint64_t)INT64_MAX)
        return ad_fail(AD_ERR_OVERFLOW, "%s: %s: tensor '%s': %" PRIu64 " elements of %s "
                       "overflow", what, f->path, e->name, count, e->dtype->name);
    if (rest % 8)
        return ad_fail(AD_ERR_OFFSETS, "%s: %s: tensor '%s': %" PRIu64 " elements of %s "
                       "(%" PRIu64 " bits each) are not a whole number of bytes", what,
                       f->path, e->name, count, e->dtype->name, bits);
    *bytes = count / 8 * bits + rest / 8;
    return AD_OK;
}

/* The shape's extents, stored at *extents (which moves past them), and its byte size,
** overflow-checked. */
static ad_status parse_shape(const char *what, const adi_st_file *f, adi_st_entry *e, json_t *shape,
                             int64_t **extents, uint64_t *bytes)
{
    size_t n = json_array_size(shape);
    uint64_t count = 1, x;
    e->shape = *extents;
    for (size_t i = 0; i < n; i++) {
        if (!natural(json_array_get(shape, i), &x))
            return ad_fail(AD_ERR_JSON, "%s: %s: tensor '%s': shape extent %zu is not an "
                           "integer >= 0", what, f->path, e->name, i);
        (*extents)[i] = (int64_t)x;
        if (x != 0 && count > UINT64_MAX / x)
            return ad_fail(AD_ERR_OVERFLOW, "%s: %s: tensor '%s': the element count of its "
                           "shape overflows", what, f->path, e->name);
        count *= x;
    }
    /* A header of at most 100 MB holds far fewer than INT_MAX extents. */
    e->ndim = (int)n;
    *extents += n;
    return byte_size(what, f, e, count, bytes);
}

/* One tensor entry: exactly {"dtype", "shape", "data_offsets"}, a dtype the format
** defines, its offsets spanning exactly its byte size. */
static ad_status parse_entry(const char *what, const adi_st_file *f, const char *name,
                             json_t *v, adi_st_entry *e, int64_t **extents)
{
    *e = (adi_st_entry){.name = name};
    if (!*name)
        return ad_fail(AD_ERR_BAD_NAME, "%s: %s: a tensor has an empty name", what, f->path);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape");
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || json_object_size(v) != 3 || !json_is_string(dt) ||
        !json_is_array(sh) || !json_is_array(off) || json_array_size(off) != 2 ||
        !natural(json_array_get(off, 0), &e->begin) ||
        !natural(json_array_get(off, 1), &e->end))
        return ad_fail(AD_ERR_JSON, "%s: %s: tensor '%s' is not {\"dtype\": string, "
                       "\"shape\": [...], \"data_offsets\": [begin, end]}", what, f->path,
                       name);
    const char *tag = json_string_value(dt); /* no NUL inside: jansson refuses \u0000 */
    e->dtype = adi_st_dtype_find(tag);
    if (!e->dtype)
        return ad_fail(AD_ERR_UNKNOWN_DTYPE, "%s: %s: tensor '%s' has dtype '%s', which the "
                       "safetensors format does not define", what, f->path, name, tag);
    uint64_t bytes = 0;
    ad_status rc = parse_shape(what, f, e, sh, extents, &bytes);
    if (rc)
        return rc;
    if (e->begin > e->end || e->end - e->begin != bytes)
        return ad_fail(AD_ERR_OFFSETS, "%s: %s: tensor '%s' has data_offsets [%" PRIu64
                       ", %" PRIu64 "] but its dtype and shape need %" PRIu64 " bytes",
                       what, f->path, name, e->begin, e->end, bytes);
    return AD_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const adi_st_entry *const *)a)->name, (*(const adi_st_entry *const *)b)->name);
}

static int by_offset(const void *a, const void *b)
{
    const adi_st_entry *x = *(const adi_st_entry *const *)a, *y = *(const adi_st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Every entry's extents go into one block, sized before any entry is parsed. */
static ad_status collect_entries(const char *what, adi_st_file *f)
{
    size_t count = json_object_size(f->root), extents = 0;
    const char *key;
    json_t *v;
    json_object_foreach(f->root, key, v) /* 0 for anything but an array */
        extents += json_array_size(json_object_get(v, "shape"));
    f->entries = adi_calloc(count ? count : 1, sizeof *f->entries);
    f->by_name = adi_calloc(count ? count : 1, sizeof *f->by_name);
    f->extents = adi_calloc(extents ? extents : 1, sizeof *f->extents);
    if (!f->entries || !f->by_name || !f->extents)
        return ad_fail(AD_ERR_NOMEM, "%s: %s: out of memory for %zu entries", what, f->path,
                       count);
    int64_t *next = f->extents;
    json_object_foreach(f->root, key, v) {
        ad_status rc = !strcmp(key, CKPT_METADATA)
                           ? check_metadata(what, f, v)
                           : parse_entry(what, f, key, v, &f->entries[f->n], &next);
        if (rc)
            return rc;
        if (!strcmp(key, CKPT_METADATA))
            f->meta = v;
        else
            f->by_name[f->n] = &f->entries[f->n], f->n++;
    }
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, by_name);
    return AD_OK;
}

/* Sorted by offset, each tensor must start where the previous one ended (the first at
** 0), and the last must end where the file ends. */
static ad_status check_layout(const char *what, adi_st_file *f, uint64_t available)
{
    adi_st_entry **sorted = adi_calloc(f->n ? (size_t)f->n : 1, sizeof *sorted);
    if (!sorted)
        return ad_fail(AD_ERR_NOMEM, "%s: %s: out of memory", what, f->path);
    memcpy(sorted, f->by_name, (size_t)f->n * sizeof *sorted);
    qsort(sorted, (size_t)f->n, sizeof *sorted, by_offset);
    uint64_t pos = 0;
    ad_status rc = AD_OK;
    for (int i = 0; i < f->n && !rc; i++) {
        const adi_st_entry *e = sorted[i];
        if (e->begin < pos)
            rc = ad_fail(AD_ERR_OFFSETS, "%s: %s: tensor '%s' at [%" PRIu64 ", %" PRIu64
                         ") overlaps '%s', which ends at %" PRIu64, what, f->path, e->name,
                         e->begin, e->end, sorted[i - 1]->name, pos);
        else if (e->begin > pos)
            rc = ad_fail(AD_ERR_OFFSETS, "%s: %s: %" PRIu64 " bytes before tensor '%s' at %"
                         PRIu64 " belong to no tensor", what, f->path, e->begin - pos,
                         e->name, e->begin);
        pos = e->end;
    }
    ad_free(sorted);
    if (!rc && pos > available)
        rc = ad_fail(AD_ERR_TRUNCATED, "%s: %s: the tensors need %" PRIu64 " bytes of data "
                     "but the file has %" PRIu64, what, f->path, pos, available);
    else if (!rc && pos < available)
        rc = ad_fail(AD_ERR_TRAILING_DATA, "%s: %s: %" PRIu64 " bytes follow the last "
                     "tensor, which ends at %" PRIu64, what, f->path, available - pos, pos);
    f->data_size = pos;
    return rc;
}

/* The format says the header MUST begin with '{' and MAY be padded with trailing
** spaces. jansson alone would accept leading whitespace, so the first byte is checked
** here; trailing whitespace is left to jansson, which accepts what JSON allows after a
** value, as the reference's serde_json does. */
static ad_status parse_header(const char *what, adi_st_file *f, const char *text, size_t n)
{
    json_error_t err;
    if (n == 0)
        return ad_fail(AD_ERR_JSON, "%s: %s: the header is empty, not a JSON object", what,
                       f->path);
    if (text[0] != '{')
        return ad_fail(AD_ERR_JSON, "%s: %s: the header starts with byte 0x%02x, not '{'",
                       what, f->path, (unsigned)(unsigned char)text[0]);
    adi_ckpt_json_begin();
    f->root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &err);
    if (adi_ckpt_json_oom())
        return ad_fail(AD_ERR_NOMEM, "%s: %s: out of memory parsing the header", what,
                       f->path);
    if (!f->root)
        return json_status(what, f, &err);
    return collect_entries(what, f); /* text that starts with '{' and parses: an object */
}

static ad_status read_header(const char *what, adi_st_file *f)
{
    struct stat sb;
    if (fstat(f->fd, &sb) != 0)
        return ad_fail(AD_ERR_IO, "%s: %s: %s", what, f->path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return ad_fail(AD_ERR_IO, "%s: %s is not a regular file", what, f->path);
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8)
        return ad_fail(AD_ERR_TRUNCATED, "%s: %s has %" PRIu64 " bytes, fewer than the 8 of "
                       "the header length", what, f->path, size);
    unsigned char le[8];
    ad_status rc = read_full(what, f, le, 8, "header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | le[i];
    if (!rc && n > CKPT_HEADER_MAX)
        rc = ad_fail(AD_ERR_HEADER_TOO_LARGE, "%s: %s: a header of %" PRIu64 " bytes is "
                     "above the limit of %u", what, f->path, n, CKPT_HEADER_MAX);
    if (!rc && n > size - 8)
        rc = ad_fail(AD_ERR_TRUNCATED, "%s: %s: the header announces %" PRIu64 " bytes but "
                     "only %" PRIu64 " follow", what, f->path, n, size - 8);
    char *text = rc ? NULL : ad_malloc((size_t)n);
    if (!rc && !text)
        rc = ad_fail(AD_ERR_NOMEM, "%s: %s: out of memory for a header of %" PRIu64
                     " bytes", what, f->path, n);
    if (!rc)
        rc = read_full(what, f, text, (size_t)n, "header");
    if (!rc)
        rc = parse_header(what, f, text, (size_t)n);
    ad_free(text);
    f->header_size = n;
    return rc ? rc : check_layout(what, f, size - 8 - n);
}

ad_status adi_st_open(const char *what, const char *path, adi_st_file *f)
{
    *f = (adi_st_file){.path = path, .fd = -1};
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return ad_fail(AD_ERR_IO, "%s: cannot open %s: %s", what, path, strerror(errno));
    ad_status rc = read_header(what, f);
    if (rc)
        adi_st_close(f);
    return rc;
}

ad_status adi_st_read_data(const char *what, adi_st_file *f)
{
    if ((uint64_t)(size_t)f->data_size != f->data_size)
        return ad_fail(AD_ERR_OVERFLOW, "%s: %s: %" PRIu64 " bytes of data do not fit in "
                       "memory", what, f->path, f->data_size);
    f->data = ad_malloc((size_t)f->data_size);
    if (!f->data)
        return ad_fail(AD_ERR_NOMEM, "%s: %s: out of memory for %" PRIu64 " bytes of data",
                       what, f->path, f->data_size);
    return read_full(what, f, f->data, (size_t)f->data_size, "tensor data");
}

adi_st_entry *adi_st_find(const adi_st_file *f, const char *name)
{
    adi_st_entry key = {.name = name}, *k = &key;
    adi_st_entry **hit = f->n ? bsearch(&k, f->by_name, (size_t)f->n, sizeof *f->by_name,
                                    by_name)
                          : NULL;
    return hit ? *hit : NULL;
}

void adi_st_close(adi_st_file *f)
{
    json_decref(f->root);
    ad_free(f->entries);
    ad_free(f->by_name);
    ad_free(f->extents);
    ad_free(f->data);
    if (f->fd >= 0)
        close(f->fd);
    *f = (adi_st_file){.fd = -1};
}
