/*
** test_checkpoint_oom.c: checkpoints out of memory. Every allocation of a save and of a
** load is made to fail in turn: each one AD_ERR_NOMEM, nothing leaked, nothing changed
** (the previous file byte for byte, the parameters, optimiser and generator bitwise).
** A program that set its own jansson allocator keeps it.
*/
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>

#include "ckpt_files.h"
#include "support.h"

TestSuite(checkpoint_oom, .init = cf_make_dir, .fini = cf_remove_dir);

/* ---- out of memory ---- */

Test(checkpoint_oom, out_of_memory_in_save_fails_cleanly_at_every_allocation)
{
    cf_net a;
    cf_net_open(&a, 1);
    const char *p = cf_path("oom.safetensors");
    cf_net_train(&a, 2);
    cf_net_save(p, &a);
    size_t n1;
    unsigned char *v1 = cf_read(p, &n1);
    cf_net_train(&a, 1);
    ad_checkpoint_meta m[] = {{"run", "oom"}, {"note", "x"}};
    ad_checkpoint_extras x = cf_net_extras(&a);
    x.meta = m, x.n_meta = 2;
    ts_alloc_install();
    ts_alloc_fail_at(0); /* counts from 0 */
    cr_assert_eq(ad_checkpoint_save(cf_path("count"), a.ps, cf_net_names, &x), AD_OK);
    uint64_t total = ts_alloc_count(), k;
    ad_status rc = AD_ERR_NOMEM;
    for (k = 1; k < 10000 && rc != AD_OK; k++) {
        int64_t before = ts_alloc_outstanding();
        ts_alloc_fail_at(k);
        rc = ad_checkpoint_save(p, a.ps, cf_net_names, &x);
        ts_alloc_fail_at(0);
        if (rc == AD_OK)
            break;
        cr_assert_eq(rc, AD_ERR_NOMEM, "allocation %llu: %s (%s)", (unsigned long long)k,
                     ad_status_str(rc), ad_last_error());
        cr_assert_eq(ts_alloc_outstanding(), before, "allocation %llu leaked",
                     (unsigned long long)k);
        cf_assert_file_is(p, v1, n1, "after an out-of-memory");
        cr_assert_eq(cf_count_temp(), 0);
    }
    ts_alloc_uninstall();
    cr_assert_eq(rc, AD_OK, "the save never succeeded");
    cr_assert_gt(total, 20, "only %llu allocations: is jansson routed through the hooks?",
                 (unsigned long long)total);
    cr_assert_eq(k, total + 1, "allocation %llu of %llu failed, yet the save succeeded",
                 (unsigned long long)k, (unsigned long long)total);
    free(v1);
    cf_net_close(&a);
}

Test(checkpoint_oom, out_of_memory_in_load_fails_cleanly_and_changes_nothing)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    const char *p = cf_path("oom.safetensors");
    cf_net_train(&a, 3);
    cf_net_train(&b, 1);
    cf_net_save(p, &a);
    ad_checkpoint_extras xb = cf_net_extras(&b);
    cf_snapshot *s = cf_snap(b.ps, b.opt, &b.rng);
    ts_alloc_install();
    ts_alloc_fail_at(0); /* counts from 0; a's file into a changes no value */
    ad_checkpoint_extras xa = cf_net_extras(&a);
    cr_assert_eq(ad_checkpoint_load(p, a.ps, cf_net_names, &xa), AD_OK);
    uint64_t total = ts_alloc_count(), k;
    ad_status rc = AD_ERR_NOMEM;
    for (k = 1; k < 10000; k++) {
        int64_t before = ts_alloc_outstanding();
        ts_alloc_fail_at(k);
        rc = ad_checkpoint_load(p, b.ps, cf_net_names, &xb);
        ts_alloc_fail_at(0);
        if (rc == AD_OK)
            break;
        cr_assert_eq(rc, AD_ERR_NOMEM, "allocation %llu: %s (%s)", (unsigned long long)k,
                     ad_status_str(rc), ad_last_error());
        cr_assert_eq(ts_alloc_outstanding(), before, "allocation %llu leaked",
                     (unsigned long long)k);
        cf_assert_unchanged(s, b.ps, b.opt, &b.rng, "after an out-of-memory");
        cr_assert_eq(xb.step, 1);
    }
    ts_alloc_uninstall();
    cr_assert_eq(rc, AD_OK, "the load never succeeded");
    cr_assert_gt(total, 20, "only %llu allocations: is jansson routed through the hooks?",
                 (unsigned long long)total);
    cr_assert_eq(k, total + 1, "allocation %llu of %llu failed, yet the load succeeded",
                 (unsigned long long)k, (unsigned long long)total);
    for (int i = 0; i < 4; i++)
        cf_assert_bits_equal(ad_params_at(b.ps, i), ad_params_at(a.ps, i), cf_net_names[i]);
    cf_snap_free(s);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* ---- the program's own allocator ---- */

static int own_allocs;
static void *own_malloc(size_t n)
{
    own_allocs++;
    return malloc(n);
}

/* As ad_checkpoint.h promises; Criterion runs each test in a process of its own, so
** this is set before adtape's first checkpoint call. */
Test(checkpoint_oom, program_that_set_its_own_jansson_allocator_keeps_it)
{
    json_set_alloc_funcs(own_malloc, free);
    cf_net a;
    cf_net_open(&a, 1);
    const char *p = cf_path("own.safetensors");
    cf_net_save(p, &a);
    cr_assert_eq(ad_checkpoint_load(p, a.ps, cf_net_names, NULL), AD_OK, "%s",
                 ad_last_error());
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    cr_assert(m == own_malloc && f == free, "adtape replaced the program's allocator");
    cr_assert_gt(own_allocs, 20, "jansson allocated elsewhere");
    json_set_alloc_funcs(malloc, free);
    cf_net_close(&a);
}
