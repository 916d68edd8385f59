/*
** test_checkpoint_io.c: saving under failure, and other readers. Every system call of
** a save is made to fail in turn through the internal table (checkpoint_io.h): each
** failure must be AD_ERR_IO naming the step, leave no temporary file, and leave the
** previous checkpoint byte for byte; so must a write without progress and a folder in
** the way. PyTorch (Debian's python3 with numpy and torch) reads our file and writes
** one we read, and a BatchNorm state with its I64 buffer that we refuse by name.
** Out-of-memory is in test_checkpoint_oom.c.
*/
#define _POSIX_C_SOURCE 200809L /* posix_spawn, environ */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint_io.h"
#include "ckpt_files.h"
#include "support.h"

extern char **environ;

TestSuite(checkpoint_io, .init = cf_make_dir, .fini = cf_remove_dir);

/* ---- a system-call table that fails the k-th call ---- */

static const char *calls[64];
static int n_calls, fail_call;
static const adi_checkpoint_io *sys_io = &adi_checkpoint_io_system_;

static bool hit(const char *name, int err)
{
    if (n_calls < 64)
        calls[n_calls] = name;
    if (++n_calls != fail_call)
        return false;
    errno = err;
    return true;
}

static int f_mkstemp(char *t)
{
    return hit("mkstemp", EACCES) ? -1 : sys_io->mkstemp_fn(t);
}
static int f_fchmod(int fd, mode_t m)
{
    return hit("fchmod", EPERM) ? -1 : sys_io->fchmod_fn(fd, m);
}
static ssize_t f_write(int fd, const void *b, size_t n)
{
    return hit("write", ENOSPC) ? -1 : sys_io->write_fn(fd, b, n);
}
static int f_fsync(int fd)
{
    return hit("fsync", EIO) ? -1 : sys_io->fsync_fn(fd);
}
/* Linux releases the descriptor even when close reports an error. */
static int f_close(int fd)
{
    int rc = sys_io->close_fn(fd);
    return hit("close", EIO) ? -1 : rc;
}
static int f_rename(const char *a, const char *b)
{
    return hit("rename", EXDEV) ? -1 : sys_io->rename_fn(a, b);
}
static int f_open_dir(const char *p)
{
    return hit("open of the folder", EMFILE) ? -1 : sys_io->open_dir_fn(p);
}

static void faults(int k)
{
    n_calls = 0;
    fail_call = k;
    adi_checkpoint_io_hooks_ = (adi_checkpoint_io){f_mkstemp, f_fchmod, f_write, f_fsync,
                                                 f_close, f_rename, f_open_dir};
}

Test(checkpoint_io, every_failing_system_call_keeps_the_previous_checkpoint)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    const char *p = cf_path("ckpt.safetensors"), *p2 = cf_path("v2.safetensors");
    size_t n1, n2;
    cf_net_train(&a, 2);
    cf_net_save(p, &a);
    unsigned char *v1 = cf_read(p, &n1);
    ad_tensor *w1_v1 = ts_clone(a.w1);
    cf_net_train(&a, 2);
    cf_net_save(p2, &a);
    unsigned char *v2 = cf_read(p2, &n2);
    faults(0);
    cf_net_save(p, &a);
    int total = n_calls, renamed_at = 0;
    cr_assert_eq(total, 21, "mkstemp, fchmod, 13 writes, fsync, close, rename, open, "
                 "fsync, close: %d calls", total);
    for (int k = 0; k < total; k++)
        renamed_at = strcmp(calls[k], "rename") ? renamed_at : k + 1;
    for (int k = 1; k <= total; k++) {
        cf_write(p, v1, n1);
        faults(k);
        ad_checkpoint_extras x = cf_net_extras(&a);
        ad_status rc = ad_checkpoint_save(p, a.ps, cf_net_names, &x);
        const char *step = calls[k - 1];
        cr_assert_eq(cf_count_temp(), 0, "call %d (%s) left a temporary file", k, step);
        if (k == total) { /* closing the folder after its fsync succeeded */
            cr_assert_eq(rc, AD_OK, "call %d (%s): %s", k, step, ad_last_error());
            continue;
        }
        cr_assert_eq(rc, AD_ERR_IO, "call %d (%s) gave %s", k, step, ad_status_str(rc));
        cr_assert(strstr(ad_last_error(), step), "call %d: message lacks \"%s\": %s", k,
                  step, ad_last_error());
        if (k > renamed_at)
            cf_assert_file_is(p, v2, n2, "a failure after the rename");
        else
            cf_assert_file_is(p, v1, n1, "a failure before the rename");
        ad_tensor_fill(b.w1, 0.0);
        cr_assert_eq(ad_checkpoint_load(p, b.ps, cf_net_names, NULL), AD_OK, "call %d: %s",
                     k, ad_last_error());
        if (k <= renamed_at)
            cf_assert_bits_equal(b.w1, w1_v1, "the previous checkpoint, loaded");
    }
    adi_checkpoint_io_hooks_ = adi_checkpoint_io_system_;
    free(v1);
    free(v2);
    ad_tensor_free(w1_v1);
    cf_net_close(&a);
    cf_net_close(&b);
}

/* ---- short writes and interrupted calls ---- */

static int writes;
static ssize_t f_write_short(int fd, const void *b, size_t n)
{
    if (++writes % 3 == 0) {
        errno = EINTR;
        return -1;
    }
    return sys_io->write_fn(fd, b, n < 5 ? n : 5);
}

Test(checkpoint_io, short_and_interrupted_writes_are_continued)
{
    cf_net a;
    cf_net_open(&a, 1);
    const char *p = cf_path("a.safetensors"), *q = cf_path("b.safetensors");
    cf_net_save(p, &a);
    adi_checkpoint_io_hooks_.write_fn = f_write_short;
    cf_net_save(q, &a);
    adi_checkpoint_io_hooks_ = adi_checkpoint_io_system_;
    cr_assert_gt(writes, 100, "the writes were cut short");
    size_t n;
    unsigned char *want = cf_read(p, &n);
    cf_assert_file_is(q, want, n, "short writes");
    free(want);
    cf_net_close(&a);
}

/* ---- what the failing calls above do not reach ---- */

static ssize_t f_write_nothing(int fd, const void *b, size_t n)
{
    (void)fd, (void)b, (void)n;
    return 0;
}

/* 0 bytes written for a positive count is a full disk, not a reason to retry forever. */
Test(checkpoint_io, write_that_makes_no_progress_is_io_error_of_a_full_disk)
{
    cf_net a;
    cf_net_open(&a, 1);
    const char *p = cf_path("full.safetensors");
    cf_net_save(p, &a);
    size_t n;
    unsigned char *v1 = cf_read(p, &n);
    cf_net_train(&a, 1);
    adi_checkpoint_io_hooks_.write_fn = f_write_nothing;
    ad_checkpoint_extras x = cf_net_extras(&a);
    ad_status rc = ad_checkpoint_save(p, a.ps, cf_net_names, &x);
    adi_checkpoint_io_hooks_ = adi_checkpoint_io_system_;
    cr_assert_eq(rc, AD_ERR_IO, "%s", ad_status_str(rc));
    cr_assert(strstr(ad_last_error(), strerror(ENOSPC)), "%s", ad_last_error());
    cf_assert_file_is(p, v1, n, "after a write without progress");
    cr_assert_eq(cf_count_temp(), 0);
    free(v1);
    cf_net_close(&a);
}

Test(checkpoint_io, save_onto_a_folder_fails_at_the_rename_and_leaves_it)
{
    cf_net a;
    cf_net_open(&a, 1);
    const char *p = cf_path("folder");
    cr_assert_eq(mkdir(p, 0700), 0);
    ad_checkpoint_extras x = cf_net_extras(&a);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &x), AD_ERR_IO);
    cr_assert(strstr(ad_last_error(), "rename"), "%s", ad_last_error());
    cr_assert_eq(cf_count_temp(), 0);
    cr_assert_eq(rmdir(p), 0, "the folder must stay, empty");
    cf_net_close(&a);
}

static char synced[64];
static int f_open_dir_noted(const char *path)
{
    snprintf(synced, sizeof synced, "%s", path);
    return sys_io->open_dir_fn(path);
}

Test(checkpoint_io, bare_file_name_is_saved_in_the_current_folder_which_is_synced)
{
    cf_net a, b;
    cf_net_open(&a, 1);
    cf_net_open(&b, 2);
    cr_assert_eq(chdir(cf_dir()), 0);
    adi_checkpoint_io_hooks_.open_dir_fn = f_open_dir_noted;
    cf_net_save("bare.safetensors", &a);
    adi_checkpoint_io_hooks_ = adi_checkpoint_io_system_;
    cr_assert_str_eq(synced, ".");
    cr_assert_eq(ad_checkpoint_load(cf_path("bare.safetensors"), b.ps, cf_net_names, NULL),
                 AD_OK, "%s", ad_last_error());
    cf_assert_bits_equal(b.w1, a.w1, "fc1.weight");
    cf_net_close(&a);
    cf_net_close(&b);
}

/* ---- PyTorch ---- */

static int run_python3(const char *mode, const char *a, const char *b, const char *c)
{
    /* Debian's interpreter, where python3-numpy and python3-torch install; the python3
    ** first on PATH may be another one without them. */
    char *argv[] = {"/usr/bin/python3", INTEROP_SCRIPT, (char *)mode, (char *)a, (char *)b,
                    (char *)c, NULL};
    pid_t pid;
    int status;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", argv[0], strerror(rc));
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_python(const char *mode, const char *a, const char *b)
{
    return run_python3(mode, a, b, NULL);
}

static void expect_tensor(FILE *f, const char *name, const ad_tensor *t)
{
    fprintf(f, "tensor %s %s ", name, t->dtype == AD_F32 ? "F32" : "F64");
    for (int d = 0; d < t->ndim; d++)
        fprintf(f, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    fputc(' ', f);
    const unsigned char *bytes = t->data;
    for (size_t i = 0; i < (size_t)t->size * ad_dtype_size(t->dtype); i++)
        fprintf(f, "%02x", bytes[i]);
    fputc('\n', f);
}

Test(checkpoint_io, pytorch_reads_every_tensor_and_metadata_bit_exactly, .timeout = 50)
{
    cf_net a;
    cf_net_open(&a, 1);
    cf_net_train(&a, 3);
    const char *p = cf_path("torch.safetensors"), *e = cf_path("expected.txt");
    ad_checkpoint_meta m[] = {{"run", "interop"}};
    ad_checkpoint_extras x = cf_net_extras(&a);
    x.meta = m, x.n_meta = 1;
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &x), AD_OK, "%s",
                 ad_last_error());
    FILE *f = fopen(e, "w");
    cr_assert_not_null(f);
    char name[80];
    for (int i = 0; i < 4; i++) {
        expect_tensor(f, cf_net_names[i], ad_params_at(a.ps, i));
        for (int k = 0; k < 2; k++) {
            ad_tensor v;
            cr_assert_eq(ad_optim_state(a.opt, i, k, &v), AD_OK);
            snprintf(name, sizeof name, "__optim__.%s.%s", cf_net_names[i], k ? "v" : "m");
            expect_tensor(f, name, &v);
        }
    }
    fprintf(f, "meta format pt\nmeta run interop\nmeta adtape.step 3\n");
    fprintf(f, "meta adtape.optim.kind adam\nmeta adtape.optim.steps.fc1.weight 3\n");
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(run_python("check", p, e), 0, "the Python reader failed (its stderr above)");
    cf_net_close(&a);
}

static ad_status on_meta(const char *key, const char *value, void *user)
{
    if (!strcmp(key, "source"))
        snprintf(user, 16, "%s", value);
    return AD_OK;
}

Test(checkpoint_io, checkpoint_written_by_pytorch_side_loads_with_identical_values,
     .timeout = 50)
{
    const char *p = cf_path("from_python.safetensors");
    cr_assert_eq(run_python("write", p, NULL), 0, "the Python writer failed");
    ad_tensor *w = ts_tensor(AD_F32, 2, TS_SHAPE(2, 3)), *b = ts_tensor(AD_F64, 1, TS_SHAPE(3));
    ad_params *ps;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    ad_params_add(ps, w, NULL);
    ad_params_add(ps, b, NULL);
    const char *const names[] = {"w", "b"};
    char source[16] = "";
    ad_checkpoint_extras x = {.on_meta = on_meta, .user = source};
    cr_assert_eq(ad_checkpoint_load(p, ps, names, &x), AD_OK, "%s", ad_last_error());
    for (int k = 0; k < 6; k++)
        cr_assert_eq(((float *)w->data)[k], (float)k / 4.0f - 1.0f, "w[%d]", k);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(((double *)b->data)[k], 0.5 - k / 8.0, "b[%d]", k);
    cr_assert_str_eq(source, "python");
    ad_params_free(ps);
    ad_tensor_free(w);
    ad_tensor_free(b);
}

/* BatchNorm1d's state_dict as PyTorch makes it (read_checkpoint.py write-bn): its I64
** num_batches_tracked fails the load, naming it, and leaves the parameters as they
** were; inspection lists it; the same state saved without it loads with PyTorch's
** values. */
Test(checkpoint_io, pytorch_batchnorm_state_with_num_batches_tracked, .timeout = 50)
{
    const char *all = cf_path("bn.safetensors"), *floats = cf_path("bn_float.safetensors");
    cr_assert_eq(run_python3("write-bn", all, floats, NULL), 0, "the Python writer failed");
    static const char *const names[] = {"0.weight", "0.bias", "1.weight", "1.bias",
                                        "1.running_mean", "1.running_var"};
    ad_tensor *t[6] = {ts_tensor(AD_F32, 2, TS_SHAPE(3, 4))};
    ad_params *ps;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    for (int i = 0; i < 6; i++) {
        if (i)
            t[i] = ts_tensor(AD_F32, 1, TS_SHAPE(3));
        ad_tensor_fill(t[i], 5.0);
        cr_assert_eq(ad_params_add(ps, t[i], NULL), AD_OK);
    }
    cf_load_fails(all, ps, names, AD_ERR_UNSUPPORTED_DTYPE,
                  "tensor '1.num_batches_tracked' is I64");
    ad_checkpoint_info *info;
    cr_assert_eq(ad_checkpoint_inspect(all, &info), AD_OK, "%s", ad_last_error());
    cr_assert_eq(info->n_tensors, 7);
    for (int i = 0; i < 7; i++) {
        const ad_checkpoint_entry *e = &info->tensors[i];
        int counter = !strcmp(e->name, "1.num_batches_tracked");
        cr_assert_str_eq(e->dtype, counter ? "I64" : "F32", "%s", e->name);
        cr_assert_eq(e->ndim, counter ? 0 : !strcmp(e->name, "0.weight") ? 2 : 1, "%s", e->name);
        cr_assert_eq(e->loadable, !counter, "%s", e->name);
    }
    ad_checkpoint_info_free(info);
    cr_assert_eq(ad_checkpoint_load(floats, ps, names, NULL), AD_OK, "%s", ad_last_error());
    /* y = x W' + b on the writer's batch; BatchNorm keeps 0.1 of its mean and of its
    ** unbiased variance (momentum 0.1, running_var starting at 1). */
    const float *w = t[0]->data;
    double y[4][3], mean[3] = {0}, var[3] = {0};
    for (int c = 0; c < 3; c++) {
        for (int s = 0; s < 4; s++) {
            y[s][c] = 0.25;
            for (int j = 0; j < 4; j++)
                y[s][c] += (s - j) / 2.0 * ((4 * c + j) / 8.0 - 0.75);
            mean[c] += y[s][c] / 4;
        }
        for (int s = 0; s < 4; s++)
            var[c] += (y[s][c] - mean[c]) * (y[s][c] - mean[c]) / 3;
    }
    for (int c = 0; c < 3; c++) {
        for (int j = 0; j < 4; j++)
            cr_assert_eq(w[4 * c + j], (float)((4 * c + j) / 8.0 - 0.75), "0.weight");
        cr_assert_eq(((float *)t[1]->data)[c], 0.25f, "0.bias");
        cr_assert_eq(((float *)t[2]->data)[c], 1.0f, "1.weight");
        cr_assert_eq(((float *)t[3]->data)[c], 0.0f, "1.bias");
        cr_assert_float_eq(((float *)t[4]->data)[c], 0.1 * mean[c], 1e-6, "running_mean");
        cr_assert_float_eq(((float *)t[5]->data)[c], 0.9 + 0.1 * var[c], 1e-6, "running_var");
    }
    ad_params_free(ps);
    for (int i = 0; i < 6; i++)
        ad_tensor_free(t[i]);
}
