/*
** test_schedule.c: ad_lr_multistep against rates derived by hand, and every invalid
** argument (named, with the output left alone). PyTorch's MultiStepLR is compared in
** test_optim_torch.c.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "support.h"

static double rate(const ad_lr_multistep_config *c, int epoch)
{
    double lr = -1.0;
    cr_assert_eq(ad_lr_multistep(c, epoch, &lr), AD_OK, "%s", ad_last_error());
    return lr;
}

/* BioTorch: 0.1 until epoch 49, 0.1 * 0.1 from 50 to 74, then 0.1 * 0.1 * 0.1. */
Test(schedule, biotorch_milestones_divide_the_rate_by_ten_at_50_and_75)
{
    static const int ms[] = {50, 75};
    ad_lr_multistep_config c = {.base_lr = 0.1, .milestones = ms, .n_milestones = 2,
                                .gamma = 0.1};
    cr_expect_eq(rate(&c, 0), 0.1);
    cr_expect_eq(rate(&c, 49), 0.1);
    cr_expect_eq(rate(&c, 50), 0.1 * 0.1);
    cr_expect_eq(rate(&c, 74), 0.1 * 0.1);
    cr_expect_eq(rate(&c, 75), 0.1 * 0.1 * 0.1);
    cr_expect_eq(rate(&c, 99), 0.1 * 0.1 * 0.1);
    cr_expect_eq(rate(&c, 1000000), 0.1 * 0.1 * 0.1);
}

/* Halving (exact in binary): 1 at epoch 0 with a milestone at 0 gives 0.5 at once. */
Test(schedule, a_milestone_at_epoch_zero_applies_from_the_start)
{
    static const int ms[] = {0, 3, 4};
    ad_lr_multistep_config c = {.base_lr = 1.0, .milestones = ms, .n_milestones = 3,
                                .gamma = 0.5};
    const double want[] = {0.5, 0.5, 0.5, 0.25, 0.125, 0.125};
    for (int e = 0; e < 6; e++)
        cr_expect_eq(rate(&c, e), want[e], "epoch %d", e);
}

Test(schedule, no_milestones_and_gamma_above_one_are_accepted)
{
    ad_lr_multistep_config c = {.base_lr = 0.25, .gamma = 0.1};
    cr_expect_eq(rate(&c, 7), 0.25, "no milestones: base_lr throughout");
    static const int ms[] = {2};
    c = (ad_lr_multistep_config){.base_lr = 0.25, .milestones = ms, .n_milestones = 1,
                                 .gamma = 4.0};
    cr_expect_eq(rate(&c, 1), 0.25);
    cr_expect_eq(rate(&c, 2), 1.0, "a warm-up factor above 1 is a valid schedule");
    c.base_lr = 0.0;
    cr_expect_eq(rate(&c, 5), 0.0);
}

Test(schedule, every_invalid_argument_is_named_and_leaves_lr_alone)
{
    static const int ok[] = {1, 5}, dup[] = {1, 1}, down[] = {5, 2}, neg[] = {-1, 3};
    const struct {
        ad_lr_multistep_config c;
        int epoch;
        const char *needle;
    } cases[] = {
        {{.base_lr = 0.1, .milestones = dup, .n_milestones = 2, .gamma = 0.1}, 0,
         "milestones[1] = 1 does not exceed milestones[0] = 1"},
        {{.base_lr = 0.1, .milestones = down, .n_milestones = 2, .gamma = 0.1}, 0,
         "milestones[1] = 2 does not exceed"},
        {{.base_lr = 0.1, .milestones = neg, .n_milestones = 2, .gamma = 0.1}, 0,
         "milestones[0] = -1 is negative"},
        {{.base_lr = 0.1, .milestones = ok, .n_milestones = -1, .gamma = 0.1}, 0,
         "n_milestones = -1"},
        {{.base_lr = 0.1, .milestones = ok, .n_milestones = 2, .gamma = 0.0}, 0,
         "gamma = 0"},
        {{.base_lr = 0.1, .milestones = ok, .n_milestones = 2, .gamma = -0.5}, 0, "gamma"},
        {{.base_lr = 0.1, .milestones = ok, .n_milestones = 2, .gamma = NAN}, 0, "gamma"},
        {{.base_lr = 0.1, .milestones = ok, .n_milestones = 2, .gamma = INFINITY}, 0,
         "gamma"},
        {{.base_lr = -0.1, .milestones = ok, .n_milestones = 2, .gamma = 0.1}, 0,
         "base_lr"},
        {{.base_lr = NAN, .milestones = ok, .n_milestones = 2, .gamma = 0.1}, 0, "base_lr"},
        {{.base_lr = 0.1, .milestones = ok, .n_milestones = 2, .gamma = 0.1}, -1,
         "epoch = -1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double lr = 42.0;
        cr_expect_eq(ad_lr_multistep(&cases[i].c, cases[i].epoch, &lr), AD_ERR_INVALID,
                     "case %zu", i);
        cr_expect(strstr(ad_last_error(), cases[i].needle), "case %zu: '%s' lacks '%s'", i,
                  ad_last_error(), cases[i].needle);
        cr_expect_eq(lr, 42.0, "case %zu wrote lr", i);
    }
}

Test(schedule, null_arguments_are_refused)
{
    ad_lr_multistep_config c = {.base_lr = 0.1, .n_milestones = 2, .gamma = 0.1};
    double lr = 42.0;
    cr_expect_eq(ad_lr_multistep(NULL, 0, &lr), AD_ERR_NULL);
    cr_expect_eq(ad_lr_multistep(&c, 0, NULL), AD_ERR_NULL);
    cr_expect_eq(ad_lr_multistep(&c, 0, &lr), AD_ERR_NULL, "milestones NULL with 2");
    cr_expect(strstr(ad_last_error(), "milestones is NULL"), "%s", ad_last_error());
    cr_expect_eq(lr, 42.0);
}
