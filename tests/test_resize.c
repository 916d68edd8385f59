/*
** test_resize.c: ad_resize_bilinear against values derived by hand and values printed
** by PyTorch's torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "ad.h"
#include "support.h"

static ad_tensor *image(ad_dtype dt, int64_t n, int64_t c, int64_t h, int64_t w)
{
    ad_tensor *t;
    cr_assert_eq(ad_tensor_new(dt, 4, (int64_t[]){n, c, h, w}, &t), AD_OK);
    return t;
}

static double at(const ad_tensor *t, int64_t i)
{
    return t->dtype == AD_F32 ? ((const float *)t->data)[i] : ((const double *)t->data)[i];
}

/* 1 x 2 -> 1 x 4: taps at -0.25 (clamped to 0), 0.25, 0.75 and 1.25 (the last pixel
** repeated): weights (1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1). */
Test(resize, upscaling_a_row_uses_the_half_pixel_taps)
{
    ad_tensor *src = image(AD_F64, 1, 1, 1, 2), *dst = image(AD_F64, 1, 1, 1, 4);
    ((double *)src->data)[0] = 0;
    ((double *)src->data)[1] = 4;
    cr_assert_eq(ad_resize_bilinear(src, dst), AD_OK, "%s", ad_last_error());
    const double want[4] = {0, 1, 3, 4};
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(at(dst, i), want[i], 1e-15, "pixel %d: %g", i, at(dst, i));
    ad_tensor_free(src);
    ad_tensor_free(dst);
}

/* 3 x 5 -> 4 x 7 and -> 2 x 2 of x[r][c] = (5 r + c)^2 / 10, as PyTorch 1.13 printed
** them in float64 (rounded to 12 digits). */
static const double torch_4x7[28] = {
    0.0, 0.057142857143, 0.185714285714, 0.4, 0.757142857143, 1.2, 1.6,
    1.5625, 1.976785714286, 2.551785714286, 3.2125, 4.016071428571, 4.905357142857, 5.6625,
    5.3125, 6.155357142857, 7.266071428571, 8.4625, 9.801785714286, 11.226785714286, 12.4125,
    10.0, 11.2, 12.757142857143, 14.4, 16.185714285714, 18.057142857143, 19.6};
static const double torch_2x2[4] = {0.8875, 2.5125, 9.5125, 14.8875};

static void check_against_torch(ad_dtype dt, double tol)
{
    ad_tensor *src = image(dt, 1, 1, 3, 5);
    for (int64_t i = 0; i < 15; i++) {
        double v = (double)(i * i) / 10.0;
        if (dt == AD_F32)
            ((float *)src->data)[i] = (float)v;
        else
            ((double *)src->data)[i] = v;
    }
    ad_tensor *up = image(dt, 1, 1, 4, 7), *down = image(dt, 1, 1, 2, 2);
    cr_assert_eq(ad_resize_bilinear(src, up), AD_OK, "%s", ad_last_error());
    cr_assert_eq(ad_resize_bilinear(src, down), AD_OK, "%s", ad_last_error());
    for (int i = 0; i < 28; i++)
        cr_expect(fabs(at(up, i) - torch_4x7[i]) <= tol, "4x7 pixel %d: %.12g, torch %.12g",
                  i, at(up, i), torch_4x7[i]);
    for (int i = 0; i < 4; i++)
        cr_expect(fabs(at(down, i) - torch_2x2[i]) <= tol, "2x2 pixel %d: %.12g, torch "
                  "%.12g", i, at(down, i), torch_2x2[i]);
    ad_tensor_free(src);
    ad_tensor_free(up);
    ad_tensor_free(down);
}

Test(resize, matches_pytorch_up_and_down_in_f64)
{
    check_against_torch(AD_F64, 1e-11);
}

Test(resize, matches_pytorch_up_and_down_in_f32)
{
    check_against_torch(AD_F32, 2e-6);
}

/* Every image and channel is its own plane: a constant plane per (n, c) stays that
** constant, and the same size is the identity. */
Test(resize, planes_stay_apart_and_the_same_size_is_the_identity)
{
    ad_tensor *src = image(AD_F32, 2, 3, 5, 4), *big = image(AD_F32, 2, 3, 9, 7);
    ad_tensor *same = image(AD_F32, 2, 3, 5, 4);
    float *s = src->data;
    for (int64_t p = 0; p < 6; p++)
        for (int64_t i = 0; i < 20; i++)
            s[p * 20 + i] = (float)(p + 1);
    cr_assert_eq(ad_resize_bilinear(src, big), AD_OK, "%s", ad_last_error());
    for (int64_t i = 0; i < big->size; i++)
        cr_assert_float_eq(at(big, i), (double)(i / 63 + 1), 1e-6, "element %lld",
                           (long long)i);
    for (int64_t i = 0; i < 120; i++)
        s[i] = (float)sin((double)i);
    cr_assert_eq(ad_resize_bilinear(src, same), AD_OK);
    for (int64_t i = 0; i < 120; i++)
        cr_expect_eq(((float *)same->data)[i], s[i], "element %lld", (long long)i);
    ad_tensor_free(src);
    ad_tensor_free(big);
    ad_tensor_free(same);
}

Test(resize, bad_input_is_a_named_error_and_leaves_dst)
{
    ad_tensor *src = image(AD_F32, 1, 1, 2, 2), *dst = image(AD_F32, 2, 1, 3, 3);
    ad_tensor *f64 = image(AD_F64, 1, 1, 3, 3), *ok = image(AD_F32, 1, 1, 3, 3);
    ad_tensor *flat;
    cr_assert_eq(ad_tensor_new(AD_F32, 2, (int64_t[]){1, 4}, &flat), AD_OK);
    cr_expect_eq(ad_resize_bilinear(NULL, dst), AD_ERR_NULL);
    cr_expect_eq(ad_resize_bilinear(src, dst), AD_ERR_SHAPE);
    cr_expect(strstr(ad_last_error(), "ad_resize_bilinear") != NULL, "%s", ad_last_error());
    cr_expect_eq(ad_resize_bilinear(src, f64), AD_ERR_DTYPE);
    cr_expect_eq(ad_resize_bilinear(flat, ok), AD_ERR_RANK);
    cr_expect_eq(ad_resize_bilinear(ok, ok), AD_ERR_INVALID, "in place must be refused");
    for (int64_t i = 0; i < dst->size; i++)
        cr_expect_eq(((float *)dst->data)[i], 0.0f);
    ad_tensor_free(src);
    ad_tensor_free(dst);
    ad_tensor_free(f64);
    ad_tensor_free(ok);
    ad_tensor_free(flat);
}
