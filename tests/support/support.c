/*
** support.c: see support.h.
*/
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "support.h"
#include "count_alloc.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

ad_tensor *ts_tensor(ad_dtype dtype, int ndim, const int64_t *shape)
{
    ad_tensor *t = NULL;
    ad_status rc = ad_tensor_new(dtype, ndim, shape, &t);
    cr_assert_eq(rc, AD_OK, "ad_tensor_new: %s", ad_last_error());
    return t;
}

ad_tensor *ts_clone(const ad_tensor *t)
{
    ad_tensor *c = ts_tensor(t->dtype, t->ndim, t->shape);
    ad_status rc = ad_tensor_copy_from(c, t);
    cr_assert_eq(rc, AD_OK, "ad_tensor_copy_from: %s", ad_last_error());
    return c;
}

uint64_t ts_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ts_uniform(uint64_t *state, double lo, double hi)
{
    return lo + (hi - lo) * ((double)(ts_next(state) >> 11) * 0x1.0p-53);
}

void ts_fill_uniform(ad_tensor *t, uint64_t *state, double lo, double hi)
{
    for (int64_t i = 0; i < t->size; i++)
        ts_set(t, i, ts_uniform(state, lo, hi));
    ad_tensor_touch(t);
}

double ts_get(const ad_tensor *t, int64_t i)
{
    if (t->dtype == AD_F32)
        return ((const float *)t->data)[i];
    if (t->dtype == AD_F64)
        return ((const double *)t->data)[i];
    return ((const int32_t *)t->data)[i];
}

void ts_set(ad_tensor *t, int64_t i, double v)
{
    if (t->dtype == AD_F32)
        ((float *)t->data)[i] = (float)v;
    else if (t->dtype == AD_F64)
        ((double *)t->data)[i] = v;
    else
        ((int32_t *)t->data)[i] = (int32_t)v;
}

double ts_max_abs_diff(const ad_tensor *a, const ad_tensor *b)
{
    cr_assert_eq(a->size, b->size, "sizes differ: %lld and %lld", (long long)a->size,
                 (long long)b->size);
    double m = 0.0;
    for (int64_t i = 0; i < a->size; i++) {
        double d = fabs(ts_get(a, i) - ts_get(b, i));
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

void ts_assert_near(const ad_tensor *got, const double *want, double tol, const char *what)
{
    for (int64_t i = 0; i < got->size; i++) {
        double g = ts_get(got, i);
        cr_assert(fabs(g - want[i]) <= tol * fmax(1.0, fabs(want[i])),
                  "%s: element %lld is %.17g, expected %.17g (tol %g)", what, (long long)i, g,
                  want[i], tol);
    }
}

void ts_expect_mentions(const char *text, const char *const want[], int n)
{
    for (int i = 0; i < n; i++)
        cr_expect(strstr(text, want[i]) != NULL, "\"%s\" does not mention \"%s\"", text,
                  want[i]);
}

void ts_assert_tape_failed(const ad_tape *tape, ad_var y, ad_status code,
                           const char *needle1, const char *needle2)
{
    const char *msg = ad_tape_error(tape), *last = ad_last_error();
    cr_assert(!ad_var_ok(y), "the call succeeded; expected %s", ad_status_str(code));
    cr_assert_eq(ad_tape_status(tape), code, "status %s, expected %s (%s)",
                 ad_status_str(ad_tape_status(tape)), ad_status_str(code), msg);
    const char *needles[2] = {needle1, needle2};
    for (int i = 0; i < 2; i++) {
        if (!needles[i])
            continue;
        cr_assert(strstr(msg, needles[i]), "tape error lacks \"%s\": %s", needles[i], msg);
        cr_assert(strstr(last, needles[i]), "last error lacks \"%s\": %s", needles[i], last);
    }
}

void ts_naive_matmul(const ad_tensor *a, int trans_a, const ad_tensor *b, int trans_b,
                     double *c)
{
    int64_t m = trans_a ? a->shape[1] : a->shape[0];
    int64_t k = trans_a ? a->shape[0] : a->shape[1];
    int64_t n = trans_b ? b->shape[0] : b->shape[1];
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t p = 0; p < k; p++) {
                double x = trans_a ? ts_get(a, p * a->shape[1] + i)
                                   : ts_get(a, i * a->shape[1] + p);
                double y = trans_b ? ts_get(b, j * b->shape[1] + p)
                                   : ts_get(b, p * b->shape[1] + j);
                s += x * y;
            }
            c[i * n + j] = s;
        }
}

void ts_naive_matmul_raw(const double *h, int64_t n, int64_t in, const ad_tensor *w,
                         double *out)
{
    int64_t o = w->shape[0];
    for (int64_t r = 0; r < n; r++)
        for (int64_t a = 0; a < o; a++) {
            double s = 0.0;
            for (int64_t b = 0; b < in; b++)
                s += h[r * in + b] * ts_get(w, a * in + b);
            out[r * o + a] = s;
        }
}

void ts_tmpdir_make(char *buf, size_t size, const char *tag)
{
    snprintf(buf, size, "/tmp/adtape-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(buf), "mkdtemp %s: %s", buf, strerror(errno));
}

void ts_tmpdir_remove(const char *dir)
{
    char p[600];
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (unlink(p) != 0)
                ts_tmpdir_remove(p); /* a folder a test program made (--out DIR) */
        }
    }
    closedir(d);
    rmdir(dir);
}

/* ---- counting allocator (count_alloc.c) ---- */

void ts_alloc_install(void)
{
    cr_assert_eq(count_alloc_install(), AD_OK);
}

void ts_alloc_uninstall(void)
{
    count_alloc_uninstall();
}

uint64_t ts_alloc_count(void)
{
    return count_alloc_calls();
}

int64_t ts_alloc_outstanding(void)
{
    return count_alloc_outstanding();
}

void ts_alloc_fail_at(uint64_t n)
{
    count_alloc_fail_at(n);
}
