/*
** tanh_f32.c: a vectorisable float tanh. glibc's tanhf is scalar and costs about half
** of the GEMM time of a 784-256-256-10 tanh network's step; its vector form needs
** -ffast-math, which this project does not use (it breaks NaN checks). The loop below
** has no branches and no libm calls, so the compiler turns it into SIMD code at -O2/-O3
** while keeping IEEE semantics. Tested against glibc's tanhf on every float
** (tests/test_tanh.c): at most 2 ulp apart, NaN stays NaN, signs of zero kept.
**
** |x| < 0.625:  tanh(a) = a + a^3 P(a^2), P of degree 5 fitted here (least squares on
**               the relative error; 0.8 ulp in float).
** otherwise:    tanh(a) = 1 - 2 / (e^(2a) + 1), e^(2a) = 2^k e^r with |r| <= ln2 / 2
**               (Cody-Waite reduction, degree-7 Taylor polynomial for e^r).
** a >= 9.5:     1 (tanh(9.5) rounds to 1 in float). The sign is copied back from x.
*/
#include <stdint.h>
#include <string.h>

#include "ops_internal.h"

static inline float small_tanh(float a)
{
    const float z = a * a;
    float p = 0.002148957457393408f;
    p = p * z - 0.00818463321775198f;
    p = p * z + 0.021703990176320076f;
    p = p * z - 0.05394745245575905f;
    p = p * z + 0.13333211839199066f;
    p = p * z - 0.3333333134651184f;
    return a + a * z * p;
}

static inline float large_tanh(float a)
{
    const float t = 2.0f * a;
    /* k = round(t / ln2) by the add-and-subtract trick: no libm, no float-to-int UB. */
    const float shifter = 0x1.8p23f;
    const float kf = (t * 1.44269504088896341f + shifter) - shifter;
    const float r = (t - kf * 0.693145751953125f) - kf * 1.42860682030941723e-6f;
    float e = 1.0f / 5040.0f;
    e = e * r + 1.0f / 720.0f;
    e = e * r + 1.0f / 120.0f;
    e = e * r + 1.0f / 24.0f;
    e = e * r + 1.0f / 6.0f;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    const int32_t bits = ((int32_t)kf + 127) << 23; /* 2^k; k <= 28 here */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return 1.0f - 2.0f / (e * scale + 1.0f);
}

static inline int32_t bits_of(float f)
{
    int32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static inline float float_of(int32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* All ones when a < b, else zero (a - b must not overflow: both are non-negative). */
static inline int32_t below(int32_t a, int32_t b)
{
    return (a - b) >> 31;
}

static inline int32_t pick(int32_t m, int32_t when_set, int32_t otherwise)
{
    return (when_set & m) | (otherwise & ~m);
}

/*
** Every select is bit arithmetic on masks. A ?: between floats stays a branch under
** -ftrapping-math, and even an integer ?: lets the compiler specialise the code after it
** for a constant arm (folding tanh(9.5) on one path), which brings the branch back;
** either stops vectorisation. For floats without their sign bit, integer order is float
** order, and NaN sorts above +inf.
*/
#if defined(__x86_64__) && defined(__GNUC__)
/* AVX-512 or AVX2 where the processor has them, chosen at load time (ifunc); nothing
** is built for -march. */
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void adi_tanh_f32(const float *x, float *y, int64_t n)
{
    const int32_t sign = (int32_t)0x80000000u, inf = 0x7f800000, one = 0x3f800000;
    const int32_t big = 0x41180000 /* 9.5f */, small = 0x3f200000 /* 0.625f */;
    for (int64_t i = 0; i < n; i++) {
        const int32_t vb = bits_of(x[i]), ab = vb & ~sign;
        const float a = float_of(pick(below(ab, big), ab, big)); /* NaN, inf: 9.5 */
        int32_t t = pick(below(ab, small), bits_of(small_tanh(a)), bits_of(large_tanh(a)));
        t = pick(below(ab, big), t, one) | (vb & sign); /* odd; keeps -0 */
        y[i] = float_of(pick(below(inf, ab), vb, t));   /* NaN in, the same NaN out */
    }
}
