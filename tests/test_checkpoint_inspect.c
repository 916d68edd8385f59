/*
** test_checkpoint_inspect.c: ad_checkpoint_inspect and the adtape-inspect program.
** Files are written here: checkpoints saved by the library (read back independently
** with jansson for the order of their keys) and crafted ones with entries adtape
** cannot load (I64, BF16, F8, F4, rank 5 and 100), which must be listed exactly, and
** bad headers, which must fail with the code and message a load gets, leaving *out
** as it was and nothing allocated; so must every out-of-memory. The program is run
** through popen and its whole output compared.
*/
#define _POSIX_C_SOURCE 200809L /* popen */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ckpt_files.h"
#include "support.h"

TestSuite(checkpoint_inspect, .init = cf_make_dir, .fini = cf_remove_dir);

static unsigned char zeros[4096];

/* The file `json` followed by n zero bytes of data. */
static const char *crafted(const char *name, const char *json, size_t n)
{
    const char *p = cf_path(name);
    cf_write_safetensors(p, json, 8, zeros, n);
    return p;
}

static ad_checkpoint_info *inspect(const char *path)
{
    ad_checkpoint_info *info = NULL;
    cr_assert_eq(ad_checkpoint_inspect(path, &info), AD_OK, "%s", ad_last_error());
    cr_assert_not_null(info);
    return info;
}

/* Fails unless entry e is name, dtype, shape (ndim extents), [begin, end), loadable. */
static void expect_entry(const ad_checkpoint_entry *e, const char *name, const char *dtype,
                         int ndim, const int64_t *shape, uint64_t begin, uint64_t end,
                         int loadable)
{
    cr_assert_str_eq(e->name, name);
    cr_assert_str_eq(e->dtype, dtype, "%s", name);
    cr_assert_eq(e->ndim, ndim, "%s: rank %d", name, e->ndim);
    for (int d = 0; d < ndim; d++)
        cr_assert_eq(e->shape[d], shape[d], "%s: extent %d", name, d);
    cr_assert_eq(e->begin, begin, "%s: begin", name);
    cr_assert_eq(e->end, end, "%s: end", name);
    cr_assert_eq(!!e->loadable, loadable, "%s: loadable", name);
}

/* ---- listing ---- */

/* Every tensor (parameters, then the optimiser's) in the header's key order, which an
** independent parse of the file gives, with the shapes of the tensors saved and the
** sizes tiling the data section; the metadata in its order. */
Test(checkpoint_inspect, lists_a_saved_checkpoint_in_the_order_of_its_header)
{
    cf_net a;
    cf_net_open(&a, 1);
    cf_net_train(&a, 2);
    const char *p = cf_path("net.safetensors");
    ad_checkpoint_meta m[] = {{"run", "inspect"}};
    ad_checkpoint_extras x = cf_net_extras(&a);
    x.meta = m, x.n_meta = 1;
    cr_assert_eq(ad_checkpoint_save(p, a.ps, cf_net_names, &x), AD_OK, "%s", ad_last_error());
    ad_checkpoint_info *info = inspect(p);

    size_t size;
    unsigned char *f = cf_read(p, &size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f[i];
    json_error_t err;
    json_t *root = json_loadb((const char *)f + 8, (size_t)n, 0, &err);
    cr_assert_not_null(root, "jansson: %s", err.text);
    cr_assert_eq(info->header_bytes, n);
    cr_assert_eq(info->data_bytes, size - 8 - n);
    cr_assert_eq(info->n_tensors, 12, "4 parameters, 8 optimiser buffers");
    const char *key;
    json_t *v;
    int i = 0;
    uint64_t bytes = 0;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__"))
            continue;
        const ad_checkpoint_entry *e = &info->tensors[i++];
        cr_assert_str_eq(e->name, key);
        const ad_tensor *t = ad_params_at(a.ps, i <= 4 ? i - 1 : (i - 5) / 2);
        expect_entry(e, key, "F32", t->ndim, t->shape, e->begin,
                     e->begin + (uint64_t)t->size * 4, 1);
        bytes += e->end - e->begin;
    }
    cr_assert_eq(bytes, info->data_bytes);
    json_t *meta = json_object_get(root, "__metadata__");
    cr_assert_eq(info->n_meta, (int)json_object_size(meta));
    i = 0;
    json_object_foreach(meta, key, v) {
        cr_assert_str_eq(info->meta[i].key, key);
        cr_assert_str_eq(info->meta[i++].value, json_string_value(v));
    }
    cr_assert_str_eq(info->meta[0].key, "format");
    cr_assert_str_eq(info->meta[0].value, "pt");
    json_decref(root);
    free(f);
    ad_checkpoint_info_free(info);
    cf_net_close(&a);
}

#define ODD_FILE                                                                        \
    "{\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"  \
    "\"emb\":{\"dtype\":\"BF16\",\"shape\":[3,2],\"data_offsets\":[8,20]},"                \
    "\"__metadata__\":{\"format\":\"pt\",\"note\":\"a\\\"b\"},"                           \
    "\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[20,24]},"                \
    "\"scale\":{\"dtype\":\"F8_E8M0\",\"shape\":[2],\"data_offsets\":[24,26]},"            \
    "\"packed\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[26,29]},"              \
    "\"deep\":{\"dtype\":\"F32\",\"shape\":[1,2,1,1,2],\"data_offsets\":[29,45]},"         \
    "\"w\":{\"dtype\":\"F64\",\"shape\":[2,2],\"data_offsets\":[45,77]}}"

/* Each as written, including what adtape cannot load, the reason left to the reader:
** loadable is 0 for every dtype but F32 and F64, and for the rank-5 F32. */
Test(checkpoint_inspect, lists_entries_adtape_cannot_load_with_every_extent)
{
    ad_checkpoint_info *info = inspect(crafted("odd.safetensors", ODD_FILE, 77));
    cr_assert_eq(info->n_tensors, 7);
    const ad_checkpoint_entry *t = info->tensors;
    expect_entry(&t[0], "bn.num_batches_tracked", "I64", 0, NULL, 0, 8, 0);
    expect_entry(&t[1], "emb", "BF16", 2, TS_SHAPE(3, 2), 8, 20, 0);
    expect_entry(&t[2], "q", "F8_E4M3", 1, TS_SHAPE(4), 20, 24, 0);
    expect_entry(&t[3], "scale", "F8_E8M0", 1, TS_SHAPE(2), 24, 26, 0);
    expect_entry(&t[4], "packed", "F4", 2, TS_SHAPE(2, 3), 26, 29, 0);
    expect_entry(&t[5], "deep", "F32", 5, TS_SHAPE(1, 2, 1, 1, 2), 29, 45, 0);
    expect_entry(&t[6], "w", "F64", 2, TS_SHAPE(2, 2), 45, 77, 1);
    cr_assert_eq(info->n_meta, 2);
    cr_assert_str_eq(info->meta[0].key, "format");
    cr_assert_str_eq(info->meta[1].key, "note");
    cr_assert_str_eq(info->meta[1].value, "a\"b");
    cr_assert_eq(info->data_bytes, 77);
    ad_checkpoint_info_free(info);
}

Test(checkpoint_inspect, lists_a_rank_100_shape_in_full)
{
    char json[1024];
    int n = snprintf(json, sizeof json, "{\"deep\":{\"dtype\":\"U8\",\"shape\":[");
    for (int d = 0; d < 100; d++)
        n += snprintf(json + n, sizeof json - (size_t)n, "%s%d", d ? "," : "", d % 10 ? 1 : 2);
    snprintf(json + n, sizeof json - (size_t)n, "],\"data_offsets\":[0,1024]}}");
    ad_checkpoint_info *info = inspect(crafted("deep.safetensors", json, 1024)); /* 2^10 */
    cr_assert_eq(info->n_tensors, 1);
    cr_assert_eq(info->tensors[0].ndim, 100);
    for (int d = 0; d < 100; d++)
        cr_assert_eq(info->tensors[0].shape[d], d % 10 ? 1 : 2, "extent %d", d);
    ad_checkpoint_info_free(info);
}

Test(checkpoint_inspect, file_without_tensors_or_metadata_lists_nothing)
{
    ad_checkpoint_info *info = inspect(crafted("empty.safetensors", "{}", 0));
    cr_assert_eq(info->n_tensors, 0);
    cr_assert_eq(info->n_meta, 0);
    cr_assert_eq(info->data_bytes, 0);
    cr_assert_eq(info->header_bytes, 8, "{} padded to 8");
    ad_checkpoint_info_free(info);
    ad_checkpoint_info_free(NULL);
}

/* ---- failures ---- */

/* One broken rule each, as in test_checkpoint.c; the data is what the header needs
** unless the rule is about the data. */
static const struct {
    const char *json;
    size_t data;
    ad_status code;
    const char *needle;
} bad[] = {
    {" {}", 0, AD_ERR_JSON, "0x20, not '{'"},
    {"{\"w\":", 0, AD_ERR_JSON, "not valid JSON"},
    {"{\"w\":{\"dtype\":\"F16\",\"shape\":[2]}}", 0, AD_ERR_JSON, "'w' is not"},
    {"{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1,
     AD_ERR_UNKNOWN_DTYPE, "dtype 'Q4'"},
    {"{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, AD_ERR_OFFSETS,
     "need 16 bytes"},
    {"{\"w\":{\"dtype\":\"F4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, AD_ERR_OFFSETS,
     "not a whole number of bytes"},
    {"{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 3,
     AD_ERR_TRAILING_DATA, "1 bytes follow"},
    {"{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 1, AD_ERR_TRUNCATED,
     "need 2 bytes"},
    {"{\"__metadata__\":{\"epoch\":3}}", 0, AD_ERR_METADATA, "'epoch'"},
    {"{\"w\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]},\"w\":{}}", 1,
     AD_ERR_DUPLICATE_NAME, "twice"},
    {"{\"\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1, AD_ERR_BAD_NAME,
     "empty name"},
};

/* The code and message a load gets (but for the function's name), *out untouched,
** nothing left allocated. */
Test(checkpoint_inspect, malformed_file_fails_as_a_load_fails_and_leaves_out_alone)
{
    ad_params *ps;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    ad_checkpoint_info sentinel, *out = &sentinel;
    char load_msg[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = crafted("bad.safetensors", bad[i].json, bad[i].data);
        cr_assert_eq(ad_checkpoint_load(p, ps, NULL, NULL), bad[i].code, "load %zu: %s", i,
                     ad_last_error());
        snprintf(load_msg, sizeof load_msg, "%s", strchr(ad_last_error(), ':'));
        ts_alloc_install();
        ad_status rc = ad_checkpoint_inspect(p, &out);
        int64_t left = ts_alloc_outstanding();
        ts_alloc_uninstall();
        cr_assert_eq(rc, bad[i].code, "file %zu: %s (%s)", i, ad_status_str(rc),
                     ad_last_error());
        cr_assert(strstr(ad_last_error(), "ad_checkpoint_inspect: ") == ad_last_error(),
                  "%s", ad_last_error());
        cr_assert_str_eq(strchr(ad_last_error(), ':'), load_msg);
        cr_assert(strstr(ad_last_error(), bad[i].needle), "file %zu: %s", i, ad_last_error());
        cr_assert_eq(out, &sentinel, "file %zu: *out was written", i);
        cr_assert_eq(left, 0, "file %zu: %lld allocations left", i, (long long)left);
    }
    ad_params_free(ps);
}

Test(checkpoint_inspect, null_arguments_or_a_missing_file_fail_naming_them)
{
    ad_checkpoint_info sentinel, *out = &sentinel;
    cr_assert_eq(ad_checkpoint_inspect(NULL, &out), AD_ERR_NULL);
    cr_assert(strstr(ad_last_error(), "path is NULL"), "%s", ad_last_error());
    cr_assert_eq(ad_checkpoint_inspect(cf_path("x"), NULL), AD_ERR_NULL);
    cr_assert(strstr(ad_last_error(), "out is NULL"), "%s", ad_last_error());
    cr_assert_eq(ad_checkpoint_inspect(cf_path("absent"), &out), AD_ERR_IO);
    cr_assert(strstr(ad_last_error(), "No such file"), "%s", ad_last_error());
    cr_assert_eq(ad_checkpoint_inspect(cf_dir(), &out), AD_ERR_IO);
    cr_assert(strstr(ad_last_error(), "not a regular file"), "%s", ad_last_error());
    cr_assert_eq(out, &sentinel);
}

/* Fail allocation 1, 2, 3, ... in turn: each AD_ERR_NOMEM, leaving nothing allocated
** and *out alone, until the listing succeeds and is the same as without failures. */
Test(checkpoint_inspect, out_of_memory_fails_cleanly_at_every_allocation)
{
    const char *p = crafted("odd.safetensors", ODD_FILE, 77);
    ts_alloc_install();
    ts_alloc_fail_at(0);
    ad_checkpoint_info *info = inspect(p);
    uint64_t total = ts_alloc_count(), k;
    ad_checkpoint_info_free(info);
    ad_checkpoint_info sentinel, *out = &sentinel;
    ad_status rc = AD_ERR_NOMEM;
    for (k = 1; k < 10000; k++) {
        ts_alloc_fail_at(k);
        rc = ad_checkpoint_inspect(p, &out);
        ts_alloc_fail_at(0);
        if (rc == AD_OK)
            break;
        cr_assert_eq(rc, AD_ERR_NOMEM, "allocation %llu: %s (%s)", (unsigned long long)k,
                     ad_status_str(rc), ad_last_error());
        cr_assert_eq(ts_alloc_outstanding(), 0, "allocation %llu leaked",
                     (unsigned long long)k);
        cr_assert_eq(out, &sentinel);
    }
    cr_assert_eq(rc, AD_OK, "the listing never succeeded");
    cr_assert_eq(k, total + 1, "allocation %llu of %llu failed, yet the listing succeeded",
                 (unsigned long long)k, (unsigned long long)total);
    cr_assert_gt(total, 10, "only %llu allocations: is jansson routed through the hooks?",
                 (unsigned long long)total);
    cr_assert_eq(out->n_tensors, 7);
    cr_assert_str_eq(out->tensors[5].dtype, "F32");
    cr_assert_eq(out->tensors[5].shape[4], 2);
    ad_checkpoint_info_free(out);
    cr_assert_eq(ts_alloc_outstanding(), 0);
    ts_alloc_uninstall();
}

/* ---- the program ---- */

/* Runs adtape-inspect with args (shell words); its stdout, or with err its stderr,
** into buf. Returns its exit status. */
static int run(const char *args, int err, char *buf, size_t size)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, err ? "'%s' %s 2>&1 >/dev/null" : "'%s' %s 2>/dev/null",
             INSPECT_PROGRAM, args);
    FILE *fp = popen(cmd, "r");
    cr_assert_not_null(fp, "popen %s", cmd);
    size_t n = fread(buf, 1, size - 1, fp);
    buf[n] = '\0';
    int status = pclose(fp);
    cr_assert(WIFEXITED(status), "%s did not exit", cmd);
    return WEXITSTATUS(status);
}

Test(checkpoint_inspect, program_prints_every_tensor_and_the_metadata)
{
    const char *p = crafted("odd.safetensors", ODD_FILE, 77);
    char args[700], got[4096], want[4096];
    snprintf(args, sizeof args, "'%s'", p);
    cr_assert_eq(run(args, 0, got, sizeof got), 0);
    snprintf(want, sizeof want,
             "%s: 7 tensors, 77 bytes of data\n"
             "  \"bn.num_batches_tracked\" I64      []  (adtape does not load I64)\n"
             "  \"emb\"                    BF16     [3, 2]  (adtape does not load BF16)\n"
             "  \"q\"                      F8_E4M3  [4]  (adtape does not load F8_E4M3)\n"
             "  \"scale\"                  F8_E8M0  [2]  (adtape does not load F8_E8M0)\n"
             "  \"packed\"                 F4       [2, 3]  (adtape does not load F4)\n"
             "  \"deep\"                   F32      [1, 2, 1, 1, 2]  (adtape does not load "
             "rank 5)\n"
             "  \"w\"                      F64      [2, 2]\n"
             "metadata: 2 keys\n"
             "  \"format\": \"pt\"\n"
             "  \"note\": \"a\\\"b\"\n", p);
    cr_assert_str_eq(got, want);
}

/* A name with a quote, a newline and a control byte stays on its line, as JSON. */
Test(checkpoint_inspect, program_escapes_names_and_says_when_there_is_no_metadata)
{
    const char *p = crafted("names.safetensors", "{\"a\\\"b\\nc\\u0001\":{\"dtype\":\"U8\","
                            "\"shape\":[],\"data_offsets\":[0,1]}}", 1);
    char args[700], got[1024], want[1024];
    snprintf(args, sizeof args, "'%s'", p);
    cr_assert_eq(run(args, 0, got, sizeof got), 0);
    snprintf(want, sizeof want, "%s: 1 tensor, 1 bytes of data\n"
             "  \"a\\\"b\\nc\\u0001\" U8  []  (adtape does not load U8)\n"
             "metadata: none\n", p);
    cr_assert_str_eq(got, want);
}

Test(checkpoint_inspect, program_reports_a_bad_file_and_a_bad_command_line)
{
    const char *p = crafted("bad.safetensors", " {}", 0);
    char args[700], got[1024], want[1024];
    snprintf(args, sizeof args, "'%s'", p);
    cr_assert_eq(run(args, 1, got, sizeof got), 1);
    snprintf(want, sizeof want, "adtape-inspect: ad_checkpoint_inspect: %s: the header "
             "starts with byte 0x20, not '{'\n", p);
    cr_assert_str_eq(got, want);
    cr_assert_eq(run(args, 0, got, sizeof got), 1);
    cr_assert_str_eq(got, "", "nothing on stdout");
    cr_assert_eq(run("", 1, got, sizeof got), 2);
    cr_assert_str_eq(got, "usage: adtape-inspect FILE\n");
    cr_assert_eq(run("a b", 1, got, sizeof got), 2);
}
