/*
** support.h: helpers shared by the Criterion suites: tensors that cannot fail
** quietly, a seeded generator, naive reference kernels written independently of the
** library's, and an allocation hook that counts and can fail the N-th allocation.
*/
#ifndef TEST_SUPPORT_H
#define TEST_SUPPORT_H

#include <stdint.h>
#include "ad.h"

/* A tensor from ad_tensor_new; the test fails at once if it cannot be made. */
ad_tensor *ts_tensor(ad_dtype dtype, int ndim, const int64_t *shape);
#define TS_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* splitmix64: a small seeded generator owned by the test. */
uint64_t ts_next(uint64_t *state);
double ts_uniform(uint64_t *state, double lo, double hi);
/* Fills every element uniformly in [lo, hi) (f32 or f64) and bumps the version. */
void ts_fill_uniform(ad_tensor *t, uint64_t *state, double lo, double hi);

/* A new tensor with t's dtype, shape and elements (for "inputs unchanged" checks). */
ad_tensor *ts_clone(const ad_tensor *t);

/* Element access as double, whatever the float dtype. */
double ts_get(const ad_tensor *t, int64_t i);
void ts_set(ad_tensor *t, int64_t i, double v);

/* max |a_i - b_i| over two tensors of one size (mixed float dtypes allowed). */
double ts_max_abs_diff(const ad_tensor *a, const ad_tensor *b);

/* Fails the test unless |got_i - want_i| <= tol * max(1, |want_i|) for every element;
** `what` names the comparison in the failure message. */
void ts_assert_near(const ad_tensor *got, const double *want, double tol, const char *what);

/* Expects `text` to contain every one of the n strings in want (each miss is reported). */
void ts_expect_mentions(const char *text, const char *const want[], int n);
#define EXPECT_MENTIONS(text, ...)                                                      \
    ts_expect_mentions((text), (const char *const[]){__VA_ARGS__},                      \
                       (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)))

/* Fails the test unless y is poisoned, the tape's first error is `code`, and both
** ad_tape_error(tape) and ad_last_error() contain needle1 and needle2 (NULL: skip). */
void ts_assert_tape_failed(const ad_tape *tape, ad_var y, ad_status code,
                           const char *needle1, const char *needle2);

/* C[m x n] = op(A) op(B) by triple loop in double, whatever the float dtypes. */
void ts_naive_matmul(const ad_tensor *a, int trans_a, const ad_tensor *b, int trans_b,
                     double *c);

/* out[n x w->shape[0]] = h[n x in] W' by loops in double (W: out x in, any float). */
void ts_naive_matmul_raw(const double *h, int64_t n, int64_t in, const ad_tensor *w,
                         double *out);

/* A fresh directory /tmp/adtape-<tag>-XXXXXX in buf (the test fails if it cannot be
** made), and its removal with everything in it, folders too. */
void ts_tmpdir_make(char *buf, size_t size, const char *tag);
void ts_tmpdir_remove(const char *dir);

/* Counting allocator installed through ad_set_allocator. fail_at = N makes the N-th
** allocation from now fail (0: never). */
void ts_alloc_install(void);
void ts_alloc_uninstall(void);
uint64_t ts_alloc_count(void);      /* malloc + realloc calls since install */
int64_t ts_alloc_outstanding(void); /* allocations not yet freed */
void ts_alloc_fail_at(uint64_t n);

#endif /* TEST_SUPPORT_H */
