/*
** test_init.c: the seeded generator (against a reference xoshiro256** written here
** from the published description, and by its moments) and the initialisers (bounds,
** empirical variance against the formulas of ad_nn.h, versions, errors).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

/* ---- generator ---- */

/* splitmix64 and xoshiro256** as published by Vigna (prng.di.unimi.it, splitmix64.c
** and xoshiro256starstar.c), rewritten here so the library is checked against them. */
static uint64_t ref_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
}

static uint64_t ref_rotl(const uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t ref_xoshiro_next(uint64_t s[4])
{
    const uint64_t result = ref_rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ref_rotl(s[3], 45);
    return result;
}

static void ref_seed(uint64_t s[4], uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s[i] = ref_splitmix64(&x);
}

Test(init, rng_matches_reference_xoshiro256starstar_seeded_by_splitmix64)
{
    const uint64_t seeds[] = {0, 1, 42, 0xdeadbeefcafef00dull};
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        uint64_t ref[4];
        ad_rng r;
        ref_seed(ref, seeds[k]);
        ad_rng_seed(&r, seeds[k]);
        for (int i = 0; i < 10; i++) {
            uint64_t want = ref_xoshiro_next(ref), got = ad_rng_u64(&r);
            cr_assert_eq(got, want, "seed %llu, output %d: %llx, want %llx",
                         (unsigned long long)seeds[k], i, (unsigned long long)got,
                         (unsigned long long)want);
        }
    }
}

Test(init, rng_uniform_is_the_top_53_bits_of_the_reference_stream)
{
    uint64_t ref[4];
    ad_rng r;
    ref_seed(ref, 7);
    ad_rng_seed(&r, 7);
    for (int i = 0; i < 10; i++) {
        double want = (double)(ref_xoshiro_next(ref) >> 11) / 9007199254740992.0; /* 2^53 */
        cr_assert_eq(ad_rng_uniform(&r), want, "draw %d", i);
    }
}

Test(init, rng_same_seed_gives_same_sequence_and_different_seeds_differ)
{
    ad_rng a, b, c;
    ad_rng_seed(&a, 123);
    ad_rng_seed(&b, 123);
    ad_rng_seed(&c, 124);
    int same_ac = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = ad_rng_u64(&a), y = ad_rng_u64(&b), z = ad_rng_u64(&c);
        cr_assert_eq(x, y, "draw %d differs under one seed", i);
        same_ac += x == z;
    }
    cr_expect_eq(same_ac, 0, "seeds 123 and 124 agreed on %d of 1000 draws", same_ac);
    ad_rng_seed(&a, 5);
    ad_rng_seed(&b, 5);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(ad_rng_normal(&a), ad_rng_normal(&b), "normal draw %d", i);
}

/* n = 1e5 uniform draws: the mean has standard error 0.29 / 316 = 9.1e-4 and the
** variance 2.4e-4; the tolerances are about 6 of them. */
Test(init, rng_uniform_lies_in_unit_interval_with_mean_half_and_variance_one_twelfth)
{
    enum { n = 100000 };
    ad_rng r;
    ad_rng_seed(&r, 2024);
    double sum = 0.0, sq = 0.0;
    for (int i = 0; i < n; i++) {
        double u = ad_rng_uniform(&r);
        cr_assert(u >= 0.0 && u < 1.0, "draw %d = %.17g outside [0, 1)", i, u);
        sum += u;
        sq += (u - 0.5) * (u - 0.5);
    }
    double mean = sum / n, var = sq / n - (mean - 0.5) * (mean - 0.5);
    cr_expect(fabs(mean - 0.5) < 0.005, "mean %.5f, want 0.5 +- 0.005", mean);
    cr_expect(fabs(var - 1.0 / 12.0) < 0.0015, "variance %.5f, want 0.08333 +- 0.0015",
              var);
}

/* n = 1e5 normal draws: mean s.e. 3.2e-3, variance s.e. 4.5e-3 (tolerances ~6 s.e.);
** P(|z| < 1) = 0.6827 with s.e. 1.5e-3, checked to 0.01 so the shape is right too. */
Test(init, rng_normal_has_mean_zero_variance_one_and_normal_shape)
{
    enum { n = 100000 };
    ad_rng r;
    ad_rng_seed(&r, 99);
    double sum = 0.0, sq = 0.0;
    int inside = 0;
    for (int i = 0; i < n; i++) {
        double z = ad_rng_normal(&r);
        cr_assert(isfinite(z), "draw %d is not finite", i);
        sum += z;
        sq += z * z;
        inside += fabs(z) < 1.0;
    }
    double mean = sum / n, var = sq / n - mean * mean, frac = (double)inside / n;
    cr_expect(fabs(mean) < 0.02, "mean %.5f, want 0 +- 0.02", mean);
    cr_expect(fabs(var - 1.0) < 0.03, "variance %.5f, want 1 +- 0.03", var);
    cr_expect(fabs(frac - 0.682689) < 0.01, "P(|z| < 1) = %.4f, want 0.6827", frac);
}

/* ---- initialisers ---- */

typedef ad_status (*init_fn)(ad_tensor *t, ad_rng *r);

typedef struct moments {
    double mean, var, max_abs;
} moments;

static moments moments_of(const ad_tensor *t)
{
    double sum = 0.0, sq = 0.0, mx = 0.0;
    for (int64_t i = 0; i < t->size; i++) {
        double x = ts_get(t, i);
        sum += x;
        sq += x * x;
        mx = fmax(mx, fabs(x));
    }
    double mean = sum / (double)t->size;
    return (moments){mean, sq / (double)t->size - mean * mean, mx};
}

/*
** Fills a 256 x 512 (out x in) tensor and checks the variance within 2% (the relative
** standard error over 131072 draws is 0.25% for a uniform, 0.39% for a normal), the
** mean within 5 standard errors, the bound `a` for uniforms (0: not checked), and
** that the version moved.
*/
static void check_init(init_fn fn, const char *name, ad_dtype dt, double want_var,
                       double bound)
{
    ad_tensor *t = ts_tensor(dt, 2, TS_SHAPE(256, 512));
    ad_rng r;
    ad_rng_seed(&r, 31337);
    uint64_t v0 = t->version;
    cr_assert_eq(fn(t, &r), AD_OK, "%s: %s", name, ad_last_error());
    cr_expect_gt(t->version, v0, "%s: version not bumped", name);
    moments m = moments_of(t);
    double se_mean = sqrt(want_var / (double)t->size);
    cr_expect(fabs(m.var / want_var - 1.0) < 0.02, "%s %s: variance %.6g, want %.6g +- 2%%",
              name, ad_dtype_name(dt), m.var, want_var);
    cr_expect(fabs(m.mean) < 5.0 * se_mean, "%s %s: mean %.3g", name, ad_dtype_name(dt),
              m.mean);
    if (bound > 0.0) {
        /* f32 rounds lo + (hi - lo) u once, which may land on float(a) just above a. */
        double limit = dt == AD_F32 ? bound * (1.0 + 0x1.0p-23) : bound;
        cr_expect(m.max_abs <= limit, "%s %s: |x| reaches %.9g beyond a = %.9g", name,
                  ad_dtype_name(dt), m.max_abs, bound);
        cr_expect(m.max_abs > 0.99 * bound, "%s %s: max |x| %.6g, far inside a = %.6g",
                  name, ad_dtype_name(dt), m.max_abs, bound);
    }
    ad_tensor_free(t);
}

static const ad_dtype float_dtypes[] = {AD_F32, AD_F64};

Test(init, glorot_uniform_respects_bound_and_has_variance_2_over_fan_sum)
{
    double a = sqrt(6.0 / (512.0 + 256.0));
    for (int d = 0; d < 2; d++)
        check_init(ad_init_glorot_uniform, "glorot_uniform", float_dtypes[d], a * a / 3.0,
                   a);
}

Test(init, he_uniform_respects_bound_and_has_variance_2_over_fan_in)
{
    double a = sqrt(6.0 / 512.0);
    for (int d = 0; d < 2; d++)
        check_init(ad_init_he_uniform, "he_uniform", float_dtypes[d], 2.0 / 512.0, a);
}

Test(init, glorot_normal_has_variance_2_over_fan_sum)
{
    for (int d = 0; d < 2; d++)
        check_init(ad_init_glorot_normal, "glorot_normal", float_dtypes[d], 2.0 / 768.0, 0);
}

Test(init, he_normal_has_variance_2_over_fan_in)
{
    for (int d = 0; d < 2; d++)
        check_init(ad_init_he_normal, "he_normal", float_dtypes[d], 2.0 / 512.0, 0);
}

Test(init, rank_one_tensor_uses_its_length_as_both_fans)
{
    ad_tensor *t = ts_tensor(AD_F64, 1, TS_SHAPE(100000));
    ad_rng r;
    ad_rng_seed(&r, 8);
    cr_assert_eq(ad_init_glorot_uniform(t, &r), AD_OK);
    double a = sqrt(6.0 / 200000.0);
    moments m = moments_of(t);
    cr_expect(m.max_abs <= a && m.max_abs > 0.99 * a, "max |x| %.6g, a = %.6g", m.max_abs,
              a);
    cr_assert_eq(ad_init_he_normal(t, &r), AD_OK);
    m = moments_of(t);
    cr_expect(fabs(m.var / (2.0 / 100000.0) - 1.0) < 0.03, "variance %.6g, want 2e-5",
              m.var);
    ad_tensor_free(t);
}

Test(init, uniform_fills_within_lo_hi_with_matching_mean_and_variance)
{
    ad_tensor *t = ts_tensor(AD_F64, 2, TS_SHAPE(300, 400));
    ad_rng r;
    ad_rng_seed(&r, 3);
    uint64_t v0 = t->version;
    cr_assert_eq(ad_init_uniform(t, &r, -1.0, 3.0), AD_OK);
    cr_expect_gt(t->version, v0);
    double lo = 1e300, hi = -1e300;
    for (int64_t i = 0; i < t->size; i++) {
        lo = fmin(lo, ts_get(t, i));
        hi = fmax(hi, ts_get(t, i));
    }
    cr_expect(lo >= -1.0 && lo < -0.999, "min %.6g, want just above -1", lo);
    cr_expect(hi < 3.0 && hi > 2.999, "max %.6g, want just below 3", hi);
    moments m = moments_of(t);
    cr_expect(fabs(m.mean - 1.0) < 0.02, "mean %.5f, want 1", m.mean);
    cr_expect(fabs(m.var / (16.0 / 12.0) - 1.0) < 0.02, "variance %.5f, want 1.3333", m.var);
    ad_tensor_free(t);
}

Test(init, same_seed_gives_same_weights)
{
    ad_tensor *a = ts_tensor(AD_F32, 2, TS_SHAPE(16, 9));
    ad_tensor *b = ts_tensor(AD_F32, 2, TS_SHAPE(16, 9));
    ad_rng ra, rb;
    ad_rng_seed(&ra, 77);
    ad_rng_seed(&rb, 77);
    cr_assert_eq(ad_init_he_normal(a, &ra), AD_OK);
    cr_assert_eq(ad_init_he_normal(b, &rb), AD_OK);
    cr_expect_eq(memcmp(a->data, b->data, (size_t)a->size * sizeof(float)), 0);
    cr_assert_eq(ad_init_he_normal(b, &rb), AD_OK); /* the stream moved on */
    cr_expect_neq(memcmp(a->data, b->data, (size_t)a->size * sizeof(float)), 0);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

Test(init, zeros_clears_every_element_and_bumps_version)
{
    const ad_dtype dts[] = {AD_F32, AD_F64};
    for (int d = 0; d < 2; d++) {
        ad_tensor *t = ts_tensor(dts[d], 2, TS_SHAPE(7, 5));
        uint64_t seed = 1;
        ts_fill_uniform(t, &seed, 1.0, 2.0);
        uint64_t v0 = t->version;
        cr_assert_eq(ad_init_zeros(t), AD_OK);
        cr_expect_gt(t->version, v0);
        for (int64_t i = 0; i < t->size; i++)
            cr_assert_eq(ts_get(t, i), 0.0, "%s element %lld", ad_dtype_name(dts[d]),
                         (long long)i);
        ad_tensor_free(t);
    }
}

/* Every initialiser on an int32 tensor: AD_ERR_DTYPE naming the dtype, data and
** version unchanged. */
Test(init, int32_tensor_is_refused_with_dtype_error_and_left_unchanged)
{
    ad_tensor *t = ts_tensor(AD_I32, 1, TS_SHAPE(6));
    for (int i = 0; i < 6; i++)
        ((int32_t *)t->data)[i] = 10 + i;
    uint64_t v0 = t->version;
    ad_rng r;
    ad_rng_seed(&r, 1);
    ad_status rc[6] = {
        ad_init_glorot_uniform(t, &r), ad_init_glorot_normal(t, &r),
        ad_init_he_uniform(t, &r),     ad_init_he_normal(t, &r),
        ad_init_uniform(t, &r, 0, 1),  ad_init_zeros(t),
    };
    for (int k = 0; k < 6; k++)
        cr_expect_eq(rc[k], AD_ERR_DTYPE, "initialiser %d returned %d", k, rc[k]);
    cr_expect(strstr(ad_last_error(), "i32") != NULL, "message: %s", ad_last_error());
    cr_expect_eq(t->version, v0);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(((int32_t *)t->data)[i], 10 + i);
    ad_tensor_free(t);
}

Test(init, null_tensor_or_generator_is_refused)
{
    ad_tensor *t = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ad_rng r;
    ad_rng_seed(&r, 1);
    cr_expect_eq(ad_init_glorot_uniform(NULL, &r), AD_ERR_NULL);
    cr_expect_eq(ad_init_glorot_normal(t, NULL), AD_ERR_NULL);
    cr_expect(strstr(ad_last_error(), "generator") != NULL, "message: %s", ad_last_error());
    cr_expect_eq(ad_init_he_uniform(NULL, &r), AD_ERR_NULL);
    cr_expect_eq(ad_init_he_normal(t, NULL), AD_ERR_NULL);
    cr_expect_eq(ad_init_uniform(NULL, &r, 0, 1), AD_ERR_NULL);
    cr_expect_eq(ad_init_zeros(NULL), AD_ERR_NULL);
    cr_expect_eq(t->version, 0);
    ad_tensor_free(t);
}

Test(init, uniform_with_reversed_or_nan_bounds_is_invalid_and_leaves_tensor)
{
    ad_tensor *t = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ad_rng r;
    ad_rng_seed(&r, 1);
    cr_expect_eq(ad_init_uniform(t, &r, 1.0, -1.0), AD_ERR_INVALID);
    cr_expect(strstr(ad_last_error(), "ad_init_uniform") != NULL, "%s", ad_last_error());
    cr_expect_eq(ad_init_uniform(t, &r, NAN, 1.0), AD_ERR_INVALID);
    cr_expect_eq(t->version, 0);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(ts_get(t, i), 0.0);
    ad_tensor_free(t);
}
