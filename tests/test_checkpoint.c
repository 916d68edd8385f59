/*
** test_checkpoint.c: the checkpoint format and its validation. Round trips are checked
** bit for bit; the written file is read back with an independent parser (8 bytes,
** then jansson); every validation rule has a file crafted here byte by byte that must
** fail with its named error and leave the parameters bitwise as they were; a file laid
** out as the reference implementation lays it out must load. Bad arguments are in
** test_checkpoint_args.c; I/O faults and Python in test_checkpoint_io.c, out-of-memory
** in test_checkpoint_oom.c, resumption in test_checkpoint_resume.c.
*/
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_files.h"
#include "support.h"

/* The target of the crafted files: w (f32 2x2) and b (f64 2), named "w" and "b". */
static ad_tensor *w, *b;
static ad_params *ps;
static const char *const *const wb = cf_wb_names;
static const float w_file[4] = {1.5f, -2.0f, 0.25f, 3.0f};
static const double b_file[2] = {0.5, -0.125};
static unsigned char data[64]; /* w_file, b_file, then zeros */

static void setup(void)
{
    cf_make_dir();
    cf_wb_open(&w, &b, &ps);
    memcpy(data, w_file, sizeof w_file);
    memcpy(data + 16, b_file, sizeof b_file);
}

static void teardown(void)
{
    cf_wb_close(w, b, ps);
    cf_remove_dir();
}

TestSuite(checkpoint, .init = setup, .fini = teardown);

#define W_ENTRY "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}"
#define B_ENTRY "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[16,32]}"

/* Loads the crafted file into w and b; expects `code`, a message holding `needle`,
** and w, b bitwise unchanged (data and versions). */
static void load_fails(const char *path, ad_status code, const char *needle)
{
    cf_load_fails(path, ps, wb, code, needle);
}

/* A file of `json` (unpadded) and n bytes of data. */
static void rule_fails(const char *json, size_t n, ad_status code, const char *needle)
{
    const char *p = cf_path("crafted.safetensors");
    cf_write_safetensors(p, json, 0, data, n);
    load_fails(p, code, needle);
}

/* ---- round trips and the layout ---- */

/* Four parameters covering both dtypes, a scalar, an empty tensor and the awkward
** values (-0, infinities, a NaN payload, subnormals) that a text round trip loses. */
typedef struct set {
    ad_tensor *t[4];
    ad_params *ps;
} set;
static const char *const set_names[] = {"layer.weight", "layer.bias", "scale", "empty"};

static void set_open(set *s, uint64_t seed)
{
    s->t[0] = ts_tensor(AD_F32, 2, TS_SHAPE(3, 4));
    s->t[1] = ts_tensor(AD_F64, 1, TS_SHAPE(5));
    s->t[2] = ts_tensor(AD_F64, 0, NULL);
    s->t[3] = ts_tensor(AD_F32, 2, TS_SHAPE(0, 3));
    cr_assert_eq(ad_params_new(&s->ps), AD_OK);
    for (int i = 0; i < 4; i++) {
        ts_fill_uniform(s->t[i], &seed, -2.0, 2.0);
        cr_assert_eq(ad_params_add(s->ps, s->t[i], NULL), AD_OK);
    }
    uint32_t nan_payload = 0x7fc12345u;
    float *f = s->t[0]->data;
    f[0] = -0.0f, f[1] = INFINITY, f[2] = 1e-45f;
    memcpy(&f[3], &nan_payload, sizeof nan_payload);
    double *d = s->t[1]->data;
    d[0] = -INFINITY, d[1] = 4.9e-324, d[2] = -0.0;
}

static void set_close(set *s)
{
    ad_params_free(s->ps);
    for (int i = 0; i < 4; i++)
        ad_tensor_free(s->t[i]);
}

Test(checkpoint, round_trip_restores_f32_and_f64_parameters_bit_exactly)
{
    set a, c;
    set_open(&a, 1);
    set_open(&c, 2);
    const char *p = cf_path("rt.safetensors");
    cr_assert_eq(ad_checkpoint_save(p, a.ps, set_names, NULL), AD_OK, "%s", ad_last_error());
    uint64_t v0 = c.t[0]->version;
    cr_assert_eq(ad_checkpoint_load(p, c.ps, set_names, NULL), AD_OK, "%s", ad_last_error());
    for (int i = 0; i < 4; i++)
        cf_assert_bits_equal(c.t[i], a.t[i], set_names[i]);
    cr_assert_gt(c.t[0]->version, v0, "a load must bump the versions it writes");
    cr_assert_eq(cf_count_temp(), 0);
    set_close(&a);
    set_close(&c);
}

Test(checkpoint, header_is_padded_with_spaces_to_a_multiple_of_8)
{
    set a;
    set_open(&a, 3);
    const char *p = cf_path("pad.safetensors");
    cr_assert_eq(ad_checkpoint_save(p, a.ps, set_names, NULL), AD_OK, "%s", ad_last_error());
    size_t size;
    unsigned char *f = cf_read(p, &size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f[i];
    cr_assert_eq(n % 8, 0, "header length %llu", (unsigned long long)n);
    size_t end = 8 + (size_t)n;
    while (end > 8 && f[end - 1] == ' ')
        end--;
    cr_assert_eq(f[end - 1], '}', "the JSON must end where the spaces begin");
    cr_assert_lt(8 + n - end, 8, "at most 7 bytes of padding");
    size_t data_bytes = 12 * 4 + 5 * 8 + 8;
    cr_assert_eq(size, 8 + n + data_bytes, "file is %zu bytes", size);
    free(f);
    set_close(&a);
}

/* Reads the file with nothing from the library: 8 bytes, jansson, offsets, bytes. */
Test(checkpoint, written_file_parses_independently_with_its_entries_and_bytes)
{
    set a;
    set_open(&a, 4);
    const char *p = cf_path("indep.safetensors");
    ad_checkpoint_meta meta[] = {{"run", "ablation-3"}};
    ad_checkpoint_extras x = {.step = 42, .meta = meta, .n_meta = 1};
    cr_assert_eq(ad_checkpoint_save(p, a.ps, set_names, &x), AD_OK, "%s", ad_last_error());
    size_t size;
    unsigned char *f = cf_read(p, &size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f[i];
    json_error_t err;
    json_t *root = json_loadb((const char *)f + 8, (size_t)n, JSON_REJECT_DUPLICATES, &err);
    cr_assert_not_null(root, "jansson: %s", err.text);
    json_t *m = json_object_get(root, "__metadata__");
    cr_assert_str_eq(json_string_value(json_object_get(m, "format")), "pt");
    cr_assert_str_eq(json_string_value(json_object_get(m, "run")), "ablation-3");
    cr_assert_str_eq(json_string_value(json_object_get(m, "adtape.step")), "42");
    cr_assert_eq(json_object_size(root), 5, "metadata and four tensors");
    for (int i = 0; i < 4; i++) {
        const ad_tensor *t = a.t[i];
        json_t *e = json_object_get(root, set_names[i]);
        cr_assert_str_eq(json_string_value(json_object_get(e, "dtype")),
                         t->dtype == AD_F32 ? "F32" : "F64");
        json_t *shape = json_object_get(e, "shape");
        cr_assert_eq(json_array_size(shape), (size_t)t->ndim, "%s rank", set_names[i]);
        for (int d = 0; d < t->ndim; d++)
            cr_assert_eq(json_integer_value(json_array_get(shape, (size_t)d)), t->shape[d]);
        json_t *off = json_object_get(e, "data_offsets");
        size_t lo = (size_t)json_integer_value(json_array_get(off, 0));
        size_t hi = (size_t)json_integer_value(json_array_get(off, 1));
        size_t bytes = (size_t)t->size * ad_dtype_size(t->dtype);
        cr_assert_eq(hi - lo, bytes, "%s size", set_names[i]);
        cr_assert_leq(8 + n + hi, size);
        cr_assert(bytes == 0 || !memcmp(f + 8 + n + lo, t->data, bytes), "%s bytes",
                  set_names[i]);
    }
    json_decref(root);
    free(f);
    set_close(&a);
}

/* As safetensors' Python side writes: spaces after separators, __metadata__ between
** tensors, keys not in offset order, header padded with spaces. */
Test(checkpoint, reference_layout_loads_with_identical_values)
{
    const char *p = cf_path("ref.safetensors");
    cf_write_safetensors(p,
                         "{\"b\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [16, 32]"
                         "}, \"__metadata__\": {\"format\": \"pt\"}, \"w\": {\"dtype\": \"F32\", "
                         "\"shape\": [2, 2], \"data_offsets\": [0, 16]}}",
                         8, data, 32);
    cr_assert_eq(ad_checkpoint_load(p, ps, wb, NULL), AD_OK, "%s", ad_last_error());
    cr_assert(!memcmp(w->data, w_file, sizeof w_file));
    cr_assert(!memcmp(b->data, b_file, sizeof b_file));
}

Test(checkpoint, save_over_a_checkpoint_replaces_it_and_keeps_its_mode)
{
    const char *p = cf_path("mode.safetensors");
    cr_assert_eq(ad_checkpoint_save(p, ps, wb, NULL), AD_OK, "%s", ad_last_error());
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "a new checkpoint is mkstemp's 0600");
    cr_assert_eq(chmod(p, 0640), 0);
    ad_tensor_fill(w, 3.0);
    cr_assert_eq(ad_checkpoint_save(p, ps, wb, NULL), AD_OK, "%s", ad_last_error());
    cr_assert_eq(stat(p, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0640);
    ad_tensor_fill(w, 0.0);
    cr_assert_eq(ad_checkpoint_load(p, ps, wb, NULL), AD_OK, "%s", ad_last_error());
    cr_assert_eq(((float *)w->data)[3], 3.0f, "the second save's values");
}

/* ---- the file's structure: one test per rule ---- */

Test(checkpoint, file_shorter_than_8_bytes_is_truncated)
{
    const char *p = cf_path("short");
    cf_write(p, "\x10\0\0", 3);
    load_fails(p, AD_ERR_TRUNCATED, "fewer than the 8");
}

Test(checkpoint, header_length_above_100_mb_is_header_too_large)
{
    const char *p = cf_path("huge");
    unsigned char b[16] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100000001 */
    cf_write(p, b, sizeof b);
    load_fails(p, AD_ERR_HEADER_TOO_LARGE, "100000001");
}

Test(checkpoint, header_longer_than_the_file_is_truncated)
{
    const char *p = cf_path("cut");
    unsigned char b[12] = {64, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    cf_write(p, b, sizeof b);
    load_fails(p, AD_ERR_TRUNCATED, "announces 64");
}

Test(checkpoint, header_that_is_not_a_json_object_is_json_error)
{
    rule_fails("{" W_ENTRY ",", 32, AD_ERR_JSON, "not valid JSON");
    rule_fails("[1, 2]", 0, AD_ERR_JSON, "0x5b, not '{'");
    rule_fails("{\"w\xff\": 1}", 0, AD_ERR_JSON, "not valid JSON"); /* not UTF-8 */
}

Test(checkpoint, entry_that_is_not_dtype_shape_offsets_is_json_error)
{
    static const char *const bad[] = {
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2]}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16],\"x\":1}," B_ENTRY "}",
        "{\"w\":{\"dtype\":32,\"shape\":[2,2],\"data_offsets\":[0,16]}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2.0],\"data_offsets\":[0,16]}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0]}," B_ENTRY "}",
        "{\"w\":[1,2]," B_ENTRY "}",
        "{\"w\":{\"dtypo\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":\"0,16\"}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-16,-16]}," B_ENTRY "}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16.0]}," B_ENTRY "}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        rule_fails(bad[i], 32, AD_ERR_JSON, "'w'");
}

/* Unknown to the format; BF16 and the other dtypes it defines are in
** test_checkpoint_format.c. */
Test(checkpoint, dtype_the_format_does_not_define_is_unknown_dtype)
{
    static const char *const bad[] = {"F128", "f32", "FLOAT", "F8_E4M3FN", ""};
    char json[256], needle[32];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(json, sizeof json, "{\"w\":{\"dtype\":\"%s\",\"shape\":[2,2],\"data_offsets\":"
                 "[0,16]}," B_ENTRY "}", bad[i]);
        snprintf(needle, sizeof needle, "dtype '%s'", bad[i]);
        rule_fails(json, 32, AD_ERR_UNKNOWN_DTYPE, needle);
    }
}

Test(checkpoint, name_twice_in_the_header_is_duplicate_name)
{
    rule_fails("{" W_ENTRY "," B_ENTRY "," W_ENTRY "}", 32, AD_ERR_DUPLICATE_NAME, "twice");
}

Test(checkpoint, empty_name_or_nul_in_a_name_is_bad_name)
{
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"\":{\"dtype\":\"F32\",\"shape\":[0],"
               "\"data_offsets\":[32,32]}}", 32, AD_ERR_BAD_NAME, "empty name");
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"x\\u0000y\":{\"dtype\":\"F32\",\"shape\":[0],"
               "\"data_offsets\":[32,32]}}", 32, AD_ERR_BAD_NAME, "NUL");
}

Test(checkpoint, metadata_that_is_not_an_object_of_strings_is_metadata_error)
{
    rule_fails("{\"__metadata__\":[\"pt\"]," W_ENTRY "," B_ENTRY "}", 32, AD_ERR_METADATA,
               "not an object");
    rule_fails("{\"__metadata__\":{\"format\":\"pt\",\"epoch\":3}," W_ENTRY "," B_ENTRY "}", 32,
               AD_ERR_METADATA, "'epoch'");
}

Test(checkpoint, shape_whose_size_overflows_is_overflow)
{
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"big\":{\"dtype\":\"F64\",\"shape\":[4294967296,"
               "4294967296,2],\"data_offsets\":[32,32]}}", 32, AD_ERR_OVERFLOW, "'big'");
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"big\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],"
               "\"data_offsets\":[32,32]}}", 32, AD_ERR_OVERFLOW, "overflow");
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"big\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
               "\"data_offsets\":[32,32]}}", 32, AD_ERR_OVERFLOW, "overflow"); /* 2^62 F64 */
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,"
               "99999999999999999999]}}", 32, AD_ERR_OVERFLOW, "overflow");
}

Test(checkpoint, offsets_that_do_not_tile_the_data_are_offsets_error)
{
    /* size not the shape's; begin after end; overlap; gap; not starting at 0 */
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}," B_ENTRY "}",
               32, AD_ERR_OFFSETS, "need 16 bytes");
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}," B_ENTRY "}",
               32, AD_ERR_OFFSETS, "[16, 0]");
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[8,24]}}",
               24, AD_ERR_OFFSETS, "overlaps");
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[24,40]}}",
               40, AD_ERR_OFFSETS, "belong to no tensor");
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
               "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[24,40]}}",
               40, AD_ERR_OFFSETS, "before tensor 'w'");
}

/* Sorted as the reference sorts, by (begin, end): an empty tensor where another begins
** sits before it, so the layout holds and only the unasked-for 'e' is refused. */
Test(checkpoint, empty_tensor_where_another_begins_overlaps_nothing)
{
    rule_fails("{" B_ENTRY ",\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":"
               "[16,16]}," W_ENTRY "}", 32, AD_ERR_EXTRA_TENSOR, "'e'");
}

Test(checkpoint, bytes_after_the_last_tensor_are_trailing_data)
{
    rule_fails("{" W_ENTRY "," B_ENTRY "}", 33, AD_ERR_TRAILING_DATA, "1 bytes follow");
}

Test(checkpoint, data_shorter_than_the_offsets_is_truncated)
{
    rule_fails("{" W_ENTRY "," B_ENTRY "}", 31, AD_ERR_TRUNCATED, "need 32 bytes");
}

/* ---- the file against the caller's parameters ---- */

Test(checkpoint, parameter_without_a_tensor_is_missing_tensor_naming_it)
{
    rule_fails("{" W_ENTRY "}", 16, AD_ERR_MISSING_TENSOR, "no tensor 'b'");
    rule_fails("{}", 0, AD_ERR_MISSING_TENSOR, "no tensor 'w'");
    rule_fails("{\"__metadata__\":{\"format\":\"pt\"}}", 0, AD_ERR_MISSING_TENSOR, "'w'");
}

Test(checkpoint, tensor_nobody_asked_for_is_extra_tensor_naming_it)
{
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"c\":{\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":[32,36]}}", 36, AD_ERR_EXTRA_TENSOR, "'c'");
}

Test(checkpoint, shape_differing_from_the_parameter_is_shape_naming_both)
{
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}," B_ENTRY "}",
               32, AD_ERR_SHAPE, "[4] F32 in the file but 2x2 f32");
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,2,2],\"data_offsets\":[0,16]},"
               B_ENTRY "}", 32, AD_ERR_SHAPE, "[1, 1, 2, 2] F32 in the file but 2x2 f32");
}

Test(checkpoint, dtype_differing_from_the_parameter_is_dtype_naming_both)
{
    rule_fails("{\"w\":{\"dtype\":\"F64\",\"shape\":[2,2],\"data_offsets\":[0,32]},"
               "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[32,48]}}",
               48, AD_ERR_DTYPE, "[2, 2] F64 in the file but 2x2 f32");
}

Test(checkpoint, missing_file_or_a_folder_is_io_error_with_the_reason)
{
    load_fails(cf_path("absent"), AD_ERR_IO, "No such file");
    load_fails(cf_dir(), AD_ERR_IO, "not a regular file");
}
