/*
** fuzz_checkpoint.c: libFuzzer target for ad_checkpoint_load. Each input is a whole
** file; it is loaded into a fixed parameter set ("w" 4x3 f32, "b" 3 f64) four ways:
** no extras; the metadata callback only; an Adam optimiser, a generator and the
** callback; a momentum optimiser alone. A fifth load repeats the third with one of
** its allocations made to fail. The file is also listed with ad_checkpoint_inspect,
** which must agree with the first load on whether the file is malformed. Whatever the file holds, a load must not crash, leak
** or hang, must return a named status with a message, and a failed load (callback
** included) must leave parameters, optimiser, generator and step bitwise as they were.
**
** The file is written to one path in /dev/shm (memory; /tmp if there is none), reused
** for every input and removed at exit: opening it is several times cheaper than a
** memfd through /proc/self/fd.
**
** Allocations made inside jansson are not failed unless FUZZ_JANSSON_OOM is set in the
** environment: jansson 2.14's lexer ignores a failed growth of its token buffer
** (lex_save) and then copies the token past both buffers' ends (lex_scan_string), a
** jansson bug that would otherwise be the only thing this target ever finds.
*/
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ad.h"

#define CHECK(cond) ((cond) ? (void)0 : __builtin_trap())

static const char *const names[2] = {"w", "b"};

static struct {
    char path[128];
    int fd;
    float w_data[12];
    double b_data[3];
    ad_tensor w, b;
    ad_params *ps;
    ad_optim *adam, *momentum;
    ad_rng rng;
} fx;

/* ---- allocation hooks: plain malloc, counting, failing the fail_at-th call ---- */

static uint64_t n_allocs, fail_at; /* fail_at 0: never fail */
static bool failed_one, jansson_oom;
static int in_jansson; /* inside json_loadb, whose allocations come from jansson */

/* Interposes jansson's parser (the library's call binds to this definition, which
** calls the real one) to know which allocations jansson asks for. */
json_t *json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error)
{
    static json_t *(*real)(const char *, size_t, size_t, json_error_t *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "json_loadb");
    CHECK(real != NULL);
    in_jansson++;
    json_t *root = real(buffer, buflen, flags, error);
    in_jansson--;
    return root;
}

/* The fail_at-th allocation fails; one of jansson's passes the turn to the next. */
static bool alloc_fails(void)
{
    if (++n_allocs != fail_at)
        return false;
    if (!jansson_oom && in_jansson) {
        fail_at++;
        return false;
    }
    failed_one = true;
    return true;
}

static void *hook_malloc(size_t size, void *user)
{
    (void)user;
    return alloc_fails() ? NULL : malloc(size);
}

static void hook_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

/* ---- snapshots of everything a load may write ---- */

typedef struct optim_snap {
    unsigned char state[2][2][12 * sizeof(double)]; /* [param][buffer] */
    int64_t steps[2];
    double lr;
} optim_snap;

typedef struct snapshot {
    float w[12];
    double b[3];
    uint64_t w_version, b_version;
    optim_snap adam, momentum;
    ad_rng rng;
    uint64_t step;
} snapshot;

static void snap_optim(ad_optim *o, optim_snap *s)
{
    ad_optim_config c;
    memset(s, 0, sizeof *s);
    CHECK(ad_optim_get_config(o, &c) == AD_OK);
    s->lr = c.lr;
    for (int i = 0; i < 2; i++) {
        CHECK(ad_optim_get_steps(o, i, &s->steps[i]) == AD_OK);
        for (int k = 0; k < ad_optim_state_count(o); k++) {
            ad_tensor v;
            CHECK(ad_optim_state(o, i, k, &v) == AD_OK);
            memcpy(s->state[i][k], v.data, (size_t)v.size * ad_dtype_size(v.dtype));
        }
    }
}

static void snap(snapshot *s, uint64_t step)
{
    memset(s, 0, sizeof *s);
    memcpy(s->w, fx.w_data, sizeof s->w);
    memcpy(s->b, fx.b_data, sizeof s->b);
    s->w_version = fx.w.version;
    s->b_version = fx.b.version;
    snap_optim(fx.adam, &s->adam);
    snap_optim(fx.momentum, &s->momentum);
    s->rng = fx.rng;
    s->step = step;
}

static void check_unchanged(const snapshot *before, uint64_t step)
{
    snapshot now;
    snap(&now, step);
    CHECK(memcmp(before, &now, sizeof now) == 0);
}

/* ---- the metadata callback ---- */

typedef struct meta_ctx {
    const snapshot *before;
    const uint64_t *step;
} meta_ctx;

/* Runs after validation and before any write, so everything must still be as it was.
** A key "fuzz.reject" makes it refuse, to exercise a failing callback. */
static ad_status on_meta(const char *key, const char *value, void *user)
{
    meta_ctx *m = user;
    CHECK(key && value);
    volatile size_t touch = strlen(key) + strlen(value); /* ASan sees every byte */
    (void)touch;
    check_unchanged(m->before, *m->step);
    if (!strcmp(key, "fuzz.reject"))
        return ad_fail(AD_ERR_METADATA, "fuzz: metadata key '%s' refused", key);
    return AD_OK;
}

/* ---- one load ---- */

/* The same start for every input, so a run does not depend on earlier inputs. */
static void reset_state(void)
{
    for (int i = 0; i < 12; i++)
        fx.w_data[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 3; i++)
        fx.b_data[i] = 0.5 * i;
    ad_tensor_touch(&fx.w);
    ad_tensor_touch(&fx.b);
    ad_optim *opts[2] = {fx.adam, fx.momentum};
    for (int j = 0; j < 2; j++) {
        CHECK(ad_optim_set_lr(opts[j], 0.01) == AD_OK);
        for (int i = 0; i < 2; i++) {
            CHECK(ad_optim_set_steps(opts[j], i, 3) == AD_OK);
            for (int k = 0; k < ad_optim_state_count(opts[j]); k++) {
                ad_tensor v;
                CHECK(ad_optim_state(opts[j], i, k, &v) == AD_OK);
                memset(v.data, 0x11 * (k + 1), (size_t)v.size * ad_dtype_size(v.dtype));
            }
        }
    }
    ad_rng_seed(&fx.rng, 42);
}

enum { CFG_NONE, CFG_META, CFG_FULL, CFG_MOMENTUM };

static ad_status load(int cfg, uint64_t fail_allocation)
{
    snapshot before;
    ad_checkpoint_extras x = {0};
    meta_ctx m = {&before, &x.step};
    x.step = 0x5eed;
    if (cfg == CFG_META || cfg == CFG_FULL)
        x.on_meta = on_meta, x.user = &m;
    if (cfg == CFG_FULL)
        x.optim = fx.adam, x.rng = &fx.rng;
    if (cfg == CFG_MOMENTUM)
        x.optim = fx.momentum;
    snap(&before, x.step);
    ad_fail(AD_OK, "%s", ""); /* so a failure must set its own message */
    n_allocs = 0;
    fail_at = fail_allocation;
    failed_one = false;
    ad_status rc = ad_checkpoint_load(fx.path, fx.ps, names, cfg == CFG_NONE ? NULL : &x);
    fail_at = 0;
    CHECK(ad_status_class(rc) >= 0);
    if (rc != AD_OK) {
        CHECK(ad_last_error()[0] != '\0');
        check_unchanged(&before, x.step);
    }
    return rc;
}

/* The listing of the same file. A malformed file must fail it as it failed the load
** without extras (same code); a valid one must list entries that tile the data
** section, every byte readable, not all loadable exactly when that load said so. */
static void inspect(ad_status loaded)
{
    ad_checkpoint_info *info = NULL;
    ad_fail(AD_OK, "%s", "");
    ad_status rc = ad_checkpoint_inspect(fx.path, &info);
    CHECK(ad_status_class(rc) >= 0);
    if (rc != AD_OK) {
        CHECK(info == NULL && ad_last_error()[0] != '\0' && rc == loaded);
        return;
    }
    uint64_t bytes = 0;
    bool all_loadable = true;
    volatile size_t touch = 0; /* ASan sees every byte */
    for (int i = 0; i < info->n_tensors; i++) {
        const ad_checkpoint_entry *e = &info->tensors[i];
        touch += strlen(e->name) + strlen(e->dtype);
        for (int d = 0; d < e->ndim; d++)
            touch += (size_t)e->shape[d];
        CHECK(e->begin <= e->end && e->end <= info->data_bytes);
        bytes += e->end - e->begin;
        all_loadable = all_loadable && e->loadable;
    }
    for (int i = 0; i < info->n_meta; i++)
        touch += strlen(info->meta[i].key) + strlen(info->meta[i].value);
    (void)touch;
    CHECK(bytes == info->data_bytes);
    CHECK(all_loadable == (loaded != AD_ERR_UNSUPPORTED_DTYPE && loaded != AD_ERR_RANK));
    ad_checkpoint_info_free(info);
}

static void remove_file(void)
{
    unlink(fx.path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const ad_allocator hooks = {hook_malloc, hook_free, NULL};
    CHECK(ad_set_allocator(&hooks) == AD_OK);
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fx.path, sizeof fx.path, "%s/adtape-fuzz-checkpoint-XXXXXX", dir);
    fx.fd = mkstemp(fx.path);
    CHECK(fx.fd >= 0);
    atexit(remove_file);
    jansson_oom = getenv("FUZZ_JANSSON_OOM") != NULL;
    const int64_t wshape[2] = {4, 3}, bshape[1] = {3};
    CHECK(ad_tensor_init(&fx.w, AD_F32, 2, wshape, fx.w_data) == AD_OK);
    CHECK(ad_tensor_init(&fx.b, AD_F64, 1, bshape, fx.b_data) == AD_OK);
    CHECK(ad_params_new(&fx.ps) == AD_OK);
    CHECK(ad_params_add(fx.ps, &fx.w, NULL) == AD_OK);
    CHECK(ad_params_add(fx.ps, &fx.b, NULL) == AD_OK);
    ad_optim_config adam = ad_optim_defaults(AD_OPT_ADAM);
    ad_optim_config momentum = ad_optim_defaults(AD_OPT_MOMENTUM);
    CHECK(ad_optim_new(fx.ps, &adam, &fx.adam) == AD_OK);
    CHECK(ad_optim_new(fx.ps, &momentum, &fx.momentum) == AD_OK);
    return 0;
}

static void write_input(const uint8_t *data, size_t size)
{
    CHECK(ftruncate(fx.fd, 0) == 0);
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fx.fd, data + done, size - done, (off_t)done);
        CHECK(w > 0);
        done += (size_t)w;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    write_input(data, size);
    reset_state();
    inspect(load(CFG_NONE, 0));
    load(CFG_META, 0);
    reset_state();
    ad_status full = load(CFG_FULL, 0);
    uint64_t total = n_allocs;
    reset_state();
    load(CFG_MOMENTUM, 0);
    /* Fail one allocation the full load made, chosen from the input: it must fail
    ** with AD_ERR_NOMEM and leave everything as it was (checked inside load), or, if
    ** only jansson's allocations were left to fail, end as the full load did. */
    if (total > 0) {
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < size; i++)
            h = (h ^ data[i]) * 1099511628211ull;
        reset_state();
        ad_status rc = load(CFG_FULL, 1 + h % total);
        CHECK(failed_one ? rc == AD_ERR_NOMEM : rc == full);
    }
    return 0;
}
