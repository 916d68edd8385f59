/*
** idx.c: IDX files (LeCun's MNIST format, also Fashion-MNIST), plain or gzipped.
**
** Layout, big-endian: 0x00 0x00 <type> <ndim>, then ndim uint32 extents, then the
** elements. We accept type 0x08 (unsigned byte) with rank 1 (labels, read as int32) or
** rank 3 (images, read as float32 count x (rows*cols) scaled to [0, 1]).
**
** zlib's gzread reads gzip and plain files alike. It allocates its own state and
** buffers with malloc, outside our hooks (gzopen takes no allocator); every byte of
** the result goes through ad_malloc.
*/
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>

#include "../base/base.h"
#include "ad_io.h"

enum {
    IDX_TYPE_U8 = 0x08,
    IDX_MAX_RANK = 3,
    IDX_CHUNK = 16384 /* bytes converted per gzread: the only staging buffer */
};

/* A header may announce at most this many elements. Far above any real data set and
** far below what a crafted header could make us reserve (4 * 2^31 bytes of floats). */
#define IDX_MAX_ELEMENTS ((uint64_t)1 << 31)

typedef struct idx_header {
    int ndim;
    uint32_t dims[IDX_MAX_RANK];
    uint64_t count; /* product of dims, checked against IDX_MAX_ELEMENTS */
} idx_header;

static const char *idx_type_name(unsigned code)
{
    switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    }
    return "unknown";
}

/*
** gzread may return fewer bytes than asked before the end of the stream, so loop
** until `n` bytes or the end. *got says how many arrived; only an error fails.
** A gzip stream cut short is not an error here (zlib reports Z_BUF_ERROR and a short
** count), so the caller sees it as truncation, like a short plain file.
*/
static ad_status idx_read_full(gzFile f, const char *path, unsigned char *buf, unsigned n,
                               unsigned *got)
{
    *got = 0;
    while (*got < n) {
        int r = gzread(f, buf + *got, n - *got);
        if (r < 0) {
            int zerr;
            return ad_fail(AD_ERR_IO, "ad_idx_read: %s: read failed: %s", path,
                           gzerror(f, &zerr));
        }
        if (r == 0)
            break;
        *got += (unsigned)r;
    }
    return AD_OK;
}

/*
** Magic, rank and extents, validated so that nothing is allocated for a header we
** would refuse: the element count is built with an overflow check at each step and
** must not exceed IDX_MAX_ELEMENTS.
*/
static ad_status idx_read_header(gzFile f, const char *path, idx_header *h)
{
    unsigned char b[4 * IDX_MAX_RANK];
    unsigned got;
    ad_status rc = idx_read_full(f, path, b, 4, &got);
    if (rc)
        return rc;
    if (got < 4)
        return ad_fail(AD_ERR_TRUNCATED, "ad_idx_read: %s: ends after %u bytes, inside the "
                       "4-byte magic", path, got);
    if (b[0] != 0 || b[1] != 0)
        return ad_fail(AD_ERR_BAD_MAGIC, "ad_idx_read: %s: not an IDX file (starts with "
                       "%02x %02x, expected 00 00)", path, b[0], b[1]);
    if (b[2] != IDX_TYPE_U8)
        return ad_fail(AD_ERR_BAD_MAGIC, "ad_idx_read: %s: type code 0x%02x (%s); only 0x08 "
                       "(unsigned byte) is supported", path, b[2], idx_type_name(b[2]));
    if (b[3] != 1 && b[3] != 3)
        return ad_fail(AD_ERR_BAD_MAGIC, "ad_idx_read: %s: rank %u; only 1 (labels) or 3 "
                       "(images) is supported", path, b[3]);
    h->ndim = b[3];
    unsigned want = 4u * (unsigned)h->ndim;
    if ((rc = idx_read_full(f, path, b, want, &got)))
        return rc;
    if (got < want)
        return ad_fail(AD_ERR_TRUNCATED, "ad_idx_read: %s: ends inside the header (expected "
                       "%u bytes of extents, got %u)", path, want, got);
    h->count = 1;
    for (int i = 0; i < h->ndim; i++) {
        const unsigned char *p = b + 4 * i;
        h->dims[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        /* count <= 2^31 before this step, so the product fits in 63 bits */
        h->count *= h->dims[i];
        if (h->count > IDX_MAX_ELEMENTS)
            return ad_fail(AD_ERR_OVERFLOW, "ad_idx_read: %s: extents announce more than "
                           "2^31 elements (extent %d is %" PRIu32 ")", path, i, h->dims[i]);
    }
    /* a zero count would let rows * cols escape the check above */
    if (h->ndim == 3 && (uint64_t)h->dims[1] * h->dims[2] > IDX_MAX_ELEMENTS)
        return ad_fail(AD_ERR_OVERFLOW, "ad_idx_read: %s: images of %" PRIu32 " x %" PRIu32
                       " exceed 2^31 pixels", path, h->dims[1], h->dims[2]);
    return AD_OK;
}

/*
** The data block comes from ad_malloc without zero-filling (unlike ad_tensor_new):
** every element is written below, and not touching the pages keeps a header that lies
** about its size from costing more than the bytes the file really holds.
*/
static ad_status idx_alloc(const char *path, const idx_header *h, ad_tensor **out)
{
    ad_dtype dtype = h->ndim == 1 ? AD_I32 : AD_F32;
    int64_t shape[2] = {h->dims[0], 1};
    if (h->ndim == 3)
        shape[1] = (int64_t)h->dims[1] * h->dims[2];
    int64_t count;
    size_t bytes;
    ad_status rc = adi_shape_check("ad_idx_read", dtype, h->ndim == 1 ? 1 : 2, shape, &count,
                                  &bytes);
    if (rc)
        return rc;
    ad_tensor *t = ad_malloc(sizeof *t);
    void *data = ad_malloc(bytes);
    if (!t || !data) {
        ad_free(t);
        ad_free(data);
        return ad_fail(AD_ERR_NOMEM, "ad_idx_read: %s: out of memory for %zu bytes", path,
                       bytes);
    }
    adi_tensor_describe_into(t, dtype, h->ndim == 1 ? 1 : 2, shape, count, data);
    t->owns_data_ = 1;
    *out = t;
    return AD_OK;
}

/* Streams the elements through one stack chunk into t, then insists on end of file. */
static ad_status idx_read_data(gzFile f, const char *path, ad_tensor *t)
{
    unsigned char chunk[IDX_CHUNK];
    uint64_t n = (uint64_t)t->size, done = 0;
    while (done < n) {
        unsigned want = n - done < IDX_CHUNK ? (unsigned)(n - done) : IDX_CHUNK, got;
        ad_status rc = idx_read_full(f, path, chunk, want, &got);
        if (rc)
            return rc;
        if (t->dtype == AD_I32) {
            for (unsigned i = 0; i < got; i++)
                ((int32_t *)t->data)[done + i] = chunk[i];
        } else {
            for (unsigned i = 0; i < got; i++)
                ((float *)t->data)[done + i] = (float)chunk[i] / 255.0f;
        }
        done += got;
        if (got < want)
            return ad_fail(AD_ERR_TRUNCATED, "ad_idx_read: %s: truncated: expected %" PRIu64
                           " data bytes, got %" PRIu64, path, n, done);
    }
    unsigned extra;
    ad_status rc = idx_read_full(f, path, chunk, 1, &extra);
    if (rc)
        return rc;
    if (extra)
        return ad_fail(AD_ERR_COUNT_MISMATCH, "ad_idx_read: %s: trailing bytes after the %"
                       PRIu64 " data bytes the header announces", path, n);
    return AD_OK;
}

/* Reads one file; want_ndim (1 or 3, 0 for either) is checked before allocating. */
static ad_status idx_read(const char *path, int want_ndim, ad_tensor **out)
{
    errno = 0;
    gzFile f = gzopen(path, "rbe"); /* e: O_CLOEXEC, so no fd leaks into a child's exec */
    if (!f) {
        /* zlib's own allocation failing leaves errno at ENOMEM (glibc) or untouched */
        if (errno == 0 || errno == ENOMEM)
            return ad_fail(AD_ERR_NOMEM, "ad_idx_read: %s: zlib could not allocate its "
                           "state", path);
        return ad_fail(AD_ERR_IO, "ad_idx_read: %s: cannot open: %s", path, strerror(errno));
    }
    idx_header h = {.ndim = 0};
    ad_tensor *t = NULL;
    ad_status rc = idx_read_header(f, path, &h);
    if (!rc && want_ndim && h.ndim != want_ndim)
        rc = ad_fail(AD_ERR_BAD_MAGIC, "ad_idx_read_pair: %s: rank %d, expected a rank-%d "
                     "%s file", path, h.ndim, want_ndim, want_ndim == 3 ? "images" : "labels");
    if (!rc)
        rc = idx_alloc(path, &h, &t);
    if (!rc)
        rc = idx_read_data(f, path, t);
    int zrc = gzclose(f);
    if (!rc && zrc != Z_OK)
        rc = ad_fail(AD_ERR_IO, "ad_idx_read: %s: close failed (zlib code %d)", path, zrc);
    if (rc) {
        ad_tensor_free(t);
        return rc;
    }
    *out = t;
    return AD_OK;
}

ad_status ad_idx_read(const char *path, ad_tensor **out)
{
    if (!path || !out)
        return ad_fail(AD_ERR_NULL, "ad_idx_read: %s is NULL", path ? "out" : "path");
    return idx_read(path, 0, out);
}

static ad_status idx_check_labels(const char *path, const ad_tensor *labels, int n_classes)
{
    const int32_t *y = labels->data;
    for (int64_t i = 0; i < labels->size; i++)
        if (y[i] < 0 || y[i] >= n_classes)
            return ad_fail(AD_ERR_INVALID, "ad_idx_read_pair: %s: label %" PRId32 " at index %"
                           PRId64 " is outside 0..%d", path, y[i], i, n_classes - 1);
    return AD_OK;
}

ad_status ad_idx_read_pair(const char *images_path, const char *labels_path,
                           int n_classes, ad_tensor **images, ad_tensor **labels)
{
    if (!images_path || !labels_path || !images || !labels)
        return ad_fail(AD_ERR_NULL, "ad_idx_read_pair: a path or an out-pointer is NULL");
    if (n_classes <= 0)
        return ad_fail(AD_ERR_INVALID, "ad_idx_read_pair: n_classes is %d, must be positive",
                       n_classes);
    ad_tensor *x = NULL, *y = NULL;
    ad_status rc = idx_read(images_path, 3, &x);
    if (!rc)
        rc = idx_read(labels_path, 1, &y);
    if (!rc && x->shape[0] != y->shape[0])
        rc = ad_fail(AD_ERR_COUNT_MISMATCH, "ad_idx_read_pair: %s has %" PRId64 " images but "
                     "%s has %" PRId64 " labels", images_path, x->shape[0], labels_path,
                     y->shape[0]);
    if (!rc)
        rc = idx_check_labels(labels_path, y, n_classes);
    if (rc) {
        ad_tensor_free(x);
        ad_tensor_free(y);
        return rc;
    }
    *images = x;
    *labels = y;
    return AD_OK;
}
