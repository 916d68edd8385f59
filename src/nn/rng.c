/*
** rng.c: the seeded generator the initialisers draw from.
**
** xoshiro256** 1.0 (Blackman and Vigna, "Scrambled linear pseudorandom number
** generators", 2018; reference code at prng.di.unimi.it): 256 bits of state, period
** 2^256 - 1, output rotl(s1 * 5, 7) * 9. The seed is expanded into the four state
** words by four successive outputs of splitmix64 (Steele, Lea and Flood 2014), as the
** authors recommend. splitmix64 maps its counter through a bijection, so four
** consecutive outputs are distinct and never all zero: every seed, 0 included, gives a
** valid state. The state is a value the caller owns; there is no global generator.
*/
#include <math.h>

#include "../base/base.h"
#include "ad_nn.h"

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void ad_rng_seed(ad_rng *r, uint64_t seed)
{
    if (!r)
        return;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = adi_splitmix64(&x);
}

uint64_t ad_rng_u64(ad_rng *r)
{
    if (!r)
        return 0;
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The top 53 bits (the low bits of xoshiro256** are its weakest) times 2^-53: every
** value is a multiple of 2^-53 in [0, 1), each equally likely. */
double ad_rng_uniform(ad_rng *r)
{
    return (double)(ad_rng_u64(r) >> 11) * 0x1.0p-53;
}

/*
** Box-Muller: sqrt(-2 ln u1) cos(2 pi u2) with u1 in (0, 1] (1 - uniform, so the log
** is finite) and u2 in [0, 1). The sine twin is not cached, so every call draws two
** words and the generator stays a plain value with no hidden half-state: copying an
** ad_rng copies the whole stream.
*/
double ad_rng_normal(ad_rng *r)
{
    const double two_pi = 6.283185307179586476925286766559;
    double u1 = 1.0 - ad_rng_uniform(r);
    double u2 = ad_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}
