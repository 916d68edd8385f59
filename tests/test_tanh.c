/*
** test_tanh.c: the float32 tanh (src/ops/tanh_f32.c) against glibc's tanhf on every
** non-negative float, through the public op, and its symmetry on negative floats.
** The bound is 2 ulp; NaN must stay NaN and -0 must stay -0.
** ADTAPE_TEST_STRIDE=N checks only every Nth non-negative pattern, so the suite fits
** under valgrind (scripts/valgrind); unset, every pattern is checked.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

enum { CHUNK = 1 << 22 };

/* Position of a float on the line of representable values, so ulp = difference. */
static int64_t ordinal(float f)
{
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? -(int64_t)(i & 0x7fffffff) : i;
}

/* The stride from ADTAPE_TEST_STRIDE (1 when unset). An odd stride below 2^23, such as
** a prime, still reaches every exponent and both parities of the mantissa. */
static uint32_t pattern_stride(void)
{
    const char *s = getenv("ADTAPE_TEST_STRIDE");
    if (!s)
        return 1;
    char *end;
    unsigned long n = strtoul(s, &end, 10);
    cr_assert(*s && !*end && n >= 1 && n < (1ul << 23),
              "ADTAPE_TEST_STRIDE=%s: want 1 to 2^23 - 1", s);
    return (uint32_t)n;
}

/* Runs the op over x->size bit patterns from `first` with the given step. */
static const float *tanh_of_patterns(ad_tape *t, ad_tensor *x, uint32_t first, uint32_t step)
{
    float *xs = x->data;
    for (uint32_t i = 0; i < (uint32_t)x->size; i++) {
        uint32_t b = first + i * step;
        memcpy(&xs[i], &b, sizeof b);
    }
    ad_tensor_touch(x);
    ad_tape_reset(t);
    const ad_tensor *y = ad_value(t, ad_tanh(t, ad_use(t, x)));
    cr_assert_not_null(y, "%s", ad_tape_error(t));
    return y->data;
}

/* Every pattern of [lo, hi) (non-negative floats, NaNs included), or every stride-th.
** A last short chunk runs the op on patterns past hi but checks only those below. */
static void check_range(uint32_t lo, uint32_t hi)
{
    uint32_t step = pattern_stride();
    uint64_t count = ((uint64_t)hi - lo + step - 1) / step;
    ad_tape *t;
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(count < CHUNK ? (int64_t)count : CHUNK));
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    int64_t worst = 0;
    float worst_at = 0;
    for (uint64_t first = lo; first < hi; first += (uint64_t)x->size * step) {
        const float *y = tanh_of_patterns(t, x, (uint32_t)first, step);
        const float *xs = x->data;
        uint64_t left = (hi - first + step - 1) / step;
        uint32_t n = left < (uint64_t)x->size ? (uint32_t)left : (uint32_t)x->size;
        for (uint32_t i = 0; i < n; i++) {
            float want = tanhf(xs[i]);
            if (isnan(want)) {
                cr_assert(isnan(y[i]), "tanh(%a) = %a, want NaN", xs[i], y[i]);
                continue;
            }
            cr_assert_eq(signbit(y[i]), signbit(want), "sign of tanh(%a)", xs[i]);
            int64_t d = llabs(ordinal(y[i]) - ordinal(want));
            if (d > worst) {
                worst = d;
                worst_at = xs[i];
            }
        }
    }
    cr_expect_leq(worst, 2, "%lld ulp from tanhf at %a", (long long)worst, worst_at);
    ad_tape_free(t);
    ad_tensor_free(x);
}

TestSuite(tanh, .timeout = 300);

/* The non-negative floats (and NaNs) in four parts, so Criterion runs them in parallel. */
Test(tanh, first_quarter_of_non_negative_floats_within_2_ulp) { check_range(0u, 0x20000000u); }
Test(tanh, second_quarter_within_2_ulp) { check_range(0x20000000u, 0x40000000u); }
Test(tanh, third_quarter_within_2_ulp) { check_range(0x40000000u, 0x60000000u); }
Test(tanh, last_quarter_with_inf_and_nan_within_2_ulp) { check_range(0x60000000u, 0x80000000u); }

Test(tanh, negative_floats_are_the_mirror_image)
{
    ad_tape *t;
    ad_tensor *x = ts_tensor(AD_F32, 1, TS_SHAPE(CHUNK));
    cr_assert_eq(ad_tape_new(&t), AD_OK);
    /* Every 509th negative pattern (a prime stride, so no exponent is skipped). */
    const float *y = tanh_of_patterns(t, x, 0x80000000u, 509);
    const float *xs = x->data;
    for (uint32_t i = 0; i < CHUNK; i++) {
        float want = tanhf(xs[i]);
        if (isnan(want)) {
            cr_assert(isnan(y[i]));
            continue;
        }
        cr_assert(signbit(y[i]), "tanh(%a) = %a lost its sign", xs[i], y[i]);
        cr_assert_leq(llabs(ordinal(y[i]) - ordinal(want)), 2, "tanh(%a) = %a, tanhf %a",
                      xs[i], y[i], want);
    }
    float specials[] = {-0.0f, 0.0f, INFINITY, -INFINITY, 1e-40f, -1e-40f};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++)
        ((float *)x->data)[i] = specials[i];
    ad_tensor_touch(x);
    ad_tape_reset(t);
    const ad_tensor *ys = ad_value(t, ad_tanh(t, ad_use(t, x)));
    const float *r = ys->data;
    cr_expect(r[0] == 0.0f && signbit(r[0]), "tanh(-0) = %a", r[0]);
    cr_expect(r[1] == 0.0f && !signbit(r[1]));
    cr_expect(r[2] == 1.0f && r[3] == -1.0f);
    cr_expect(r[4] == 1e-40f && r[5] == -1e-40f, "denormals: %a %a", r[4], r[5]);
    ad_tape_free(t);
    ad_tensor_free(x);
}
