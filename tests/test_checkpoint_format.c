/*
** test_checkpoint_format.c: the file is validated against the safetensors format as a
** whole before any tensor is matched with the caller's names, so a file gets the same
** error whatever parameter set it is loaded into. Covered here: the header's first
** byte and its padding; every dtype the format defines, each sized by its own width
** (sub-byte ones included), against names it does not define; dtypes and ranks the
** format allows but adtape does not load, including PyTorch's I64 num_batches_tracked.
** Each failing load must name what is wrong and leave the parameters bitwise as they
** were (cf_load_fails). The other validation rules are in test_checkpoint.c.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ckpt_files.h"
#include "support.h"

static ad_tensor *w, *b;
static ad_params *ps;
static const char *const *const wb = cf_wb_names;
static const float w_file[4] = {1.5f, -2.0f, 0.25f, 3.0f};
static const double b_file[2] = {0.5, -0.125};
static unsigned char data[128]; /* w_file, b_file, then zeros */

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

TestSuite(checkpoint_format, .init = setup, .fini = teardown);

#define W_ENTRY "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}"
#define B_ENTRY "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[16,32]}"

/* A file of `json` (unpadded) and n bytes of data, loaded into w and b. */
static const char *crafted(const char *json, size_t n)
{
    const char *p = cf_path("crafted.safetensors");
    cf_write_safetensors(p, json, 0, data, n);
    return p;
}

static void rule_fails(const char *json, size_t n, ad_status code, const char *needle)
{
    cf_load_fails(crafted(json, n), ps, wb, code, needle);
}

static void loads_w_and_b(const char *path)
{
    cr_assert_eq(ad_checkpoint_load(path, ps, wb, NULL), AD_OK, "%s", ad_last_error());
    cr_assert(!memcmp(w->data, w_file, sizeof w_file), "w's values");
    cr_assert(!memcmp(b->data, b_file, sizeof b_file), "b's values");
}

/* ---- the header's first byte and its padding ---- */

Test(checkpoint_format, header_that_does_not_start_with_a_brace_is_json_error)
{
    rule_fails(" {" W_ENTRY "," B_ENTRY "}", 32, AD_ERR_JSON, "0x20, not '{'");
    rule_fails("\n{" W_ENTRY "," B_ENTRY "}", 32, AD_ERR_JSON, "0x0a, not '{'");
    rule_fails("\xef\xbb\xbf{" W_ENTRY "," B_ENTRY "}", 32, AD_ERR_JSON, "0xef, not '{'");
    rule_fails("", 0, AD_ERR_JSON, "header is empty");
}

/* The format lets a writer pad with spaces; JSON allows any whitespace after the value,
** and the reference's parser takes it, so a newline at the end loads too. */
Test(checkpoint_format, header_padded_after_the_object_loads)
{
    char json[512];
    snprintf(json, sizeof json, "{" W_ENTRY "," B_ENTRY "}%*s", 200, "");
    loads_w_and_b(crafted(json, 32));
    ad_tensor_fill(w, 0.0);
    loads_w_and_b(crafted("{" W_ENTRY "," B_ENTRY "}\n", 32));
}

/* ---- dtypes: the format's, and the two adtape loads ---- */

/* Every dtype the format defines but F32 and F64, with its width in bits. */
static const struct {
    const char *name;
    unsigned bits;
} other[] = {
    {"BOOL", 8},    {"F4", 4},       {"F6_E2M3", 6},     {"F6_E3M2", 6},
    {"U8", 8},      {"I8", 8},       {"F8_E5M2", 8},     {"F8_E4M3", 8},
    {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
    {"U16", 16},    {"F16", 16},     {"BF16", 16},       {"I32", 32},
    {"U32", 32},    {"C64", 64},     {"I64", 64},        {"U64", 64},
};

/* An extra tensor "x" of 8 elements after w and b, given `bytes` bytes. */
static const char *with_x(const char *dtype, size_t bytes)
{
    char json[320];
    snprintf(json, sizeof json, "{" W_ENTRY "," B_ENTRY ",\"x\":{\"dtype\":\"%s\",\"shape\":"
             "[2,4],\"data_offsets\":[32,%zu]}}", dtype, 32 + bytes);
    return crafted(json, 32 + bytes);
}

/* The right size gets as far as adtape's own refusal, which names tensor and dtype;
** one byte more or less is a malformed file: the width was checked. */
Test(checkpoint_format, every_dtype_the_format_defines_is_sized_by_its_width)
{
    char needle[64];
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        size_t bytes = 8 * other[i].bits / 8;
        snprintf(needle, sizeof needle, "tensor 'x' is %s, which adtape does not load",
                 other[i].name);
        cf_load_fails(with_x(other[i].name, bytes), ps, wb, AD_ERR_UNSUPPORTED_DTYPE,
                      needle);
        snprintf(needle, sizeof needle, "need %zu bytes", bytes);
        cf_load_fails(with_x(other[i].name, bytes + 1), ps, wb, AD_ERR_OFFSETS, needle);
        cf_load_fails(with_x(other[i].name, bytes - 1), ps, wb, AD_ERR_OFFSETS, needle);
    }
}

/* 3 F4 elements are 12 bits: no byte size fits them, as the reference refuses. */
Test(checkpoint_format, sub_byte_tensor_of_a_fractional_byte_size_is_offsets_error)
{
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"q\":{\"dtype\":\"F4\",\"shape\":[3],"
               "\"data_offsets\":[32,34]}}", 34, AD_ERR_OFFSETS, "3 elements of F4");
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"q\":{\"dtype\":\"F6_E2M3\",\"shape\":[1,2],"
               "\"data_offsets\":[32,34]}}", 34, AD_ERR_OFFSETS, "not a whole number");
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"q\":{\"dtype\":\"F6_E2M3\",\"shape\":[1,4],"
               "\"data_offsets\":[32,35]}}", 35, AD_ERR_UNSUPPORTED_DTYPE, "'q' is F6_E2M3");
}

/* The file is refused the same way, word for word, whatever the caller asked for:
** w and b; names that include the I64 tensor; no parameters at all. */
Test(checkpoint_format, unsupported_dtype_error_does_not_depend_on_the_names)
{
    const char *p = crafted("{" W_ENTRY ",\"steps\":{\"dtype\":\"I64\",\"shape\":[],"
                            "\"data_offsets\":[32,40]}," B_ENTRY "}", 40);
    cf_load_fails(p, ps, wb, AD_ERR_UNSUPPORTED_DTYPE, "tensor 'steps' is I64");
    char first[512];
    snprintf(first, sizeof first, "%s", ad_last_error());

    ad_tensor *steps = ts_tensor(AD_F64, 0, NULL);
    ad_tensor_fill(steps, 9.0);
    ad_params *three;
    cr_assert_eq(ad_params_new(&three), AD_OK);
    ad_params_add(three, w, NULL);
    ad_params_add(three, b, NULL);
    ad_params_add(three, steps, NULL);
    const char *const names[] = {"w", "b", "steps"};
    cf_load_fails(p, three, names, AD_ERR_UNSUPPORTED_DTYPE, NULL);
    cr_assert_str_eq(ad_last_error(), first);

    ad_params *none;
    cr_assert_eq(ad_params_new(&none), AD_OK);
    cf_load_fails(p, none, NULL, AD_ERR_UNSUPPORTED_DTYPE, NULL);
    cr_assert_str_eq(ad_last_error(), first);
    ad_params_free(none);
    ad_params_free(three);
    ad_tensor_free(steps);
}

/* Validating the whole file comes first: an unloadable dtype earlier in the header
** does not hide what is wrong with the file itself. */
Test(checkpoint_format, format_errors_come_before_an_unsupported_dtype)
{
#define I64_FIRST "{\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[32,40]},"
    rule_fails(I64_FIRST W_ENTRY "," B_ENTRY "}", 41, AD_ERR_TRAILING_DATA, "1 bytes follow");
    rule_fails(I64_FIRST W_ENTRY "," B_ENTRY "}", 39, AD_ERR_TRUNCATED, "need 40 bytes");
    rule_fails("{\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]}," W_ENTRY ","
               B_ENTRY "}", 32, AD_ERR_OFFSETS, "'n' at [24, 32) overlaps 'b'");
    rule_fails(I64_FIRST W_ENTRY ",\"b\":{\"dtype\":\"F63\",\"shape\":[2],\"data_offsets\":"
               "[16,32]}}", 40, AD_ERR_UNKNOWN_DTYPE, "dtype 'F63'");
#undef I64_FIRST
}

/* What a PyTorch BatchNorm layer adds to a state_dict. Every tensor of a file must be
** loaded (AD_ERR_EXTRA_TENSOR otherwise), and none can take an I64, so the load fails
** before the names are matched, naming the tensor; test_checkpoint_io.c loads one that
** PyTorch wrote. */
Test(checkpoint_format, pytorch_num_batches_tracked_is_unsupported_dtype_naming_it)
{
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"bn.num_batches_tracked\":{\"dtype\":\"I64\","
               "\"shape\":[],\"data_offsets\":[32,40]}}", 40, AD_ERR_UNSUPPORTED_DTYPE,
               "tensor 'bn.num_batches_tracked' is I64");
}

/* ---- ranks ---- */

/* The true rank and every extent, whether the tensor bears a parameter's name or not. */
Test(checkpoint_format, rank_above_4_is_rank_error_with_the_whole_shape)
{
    rule_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,2,2],\"data_offsets\":[0,16]},"
               B_ENTRY "}", 32, AD_ERR_RANK, "'w' has rank 5, above adtape's 4: "
               "[1, 1, 1, 2, 2] F32");
    rule_fails("{" W_ENTRY "," B_ENTRY ",\"x\":{\"dtype\":\"F64\",\"shape\":[1,2,1,1,1,1,1,1,3],"
               "\"data_offsets\":[32,80]}}", 80, AD_ERR_RANK, "'x' has rank 9, above "
               "adtape's 4: [1, 2, 1, 1, 1, 1, 1, 1, 3] F64");
}

/* A shape longer than a message can hold still says its rank, and cuts visibly. */
Test(checkpoint_format, rank_of_a_long_shape_is_given_in_full)
{
    char json[1024];
    int n = snprintf(json, sizeof json, "{" W_ENTRY "," B_ENTRY ",\"deep\":{\"dtype\":\"F32\","
                     "\"shape\":[2");
    for (int d = 1; d < 100; d++)
        n += snprintf(json + n, sizeof json - (size_t)n, ",1");
    snprintf(json + n, sizeof json - (size_t)n, "],\"data_offsets\":[32,40]}}");
    rule_fails(json, 40, AD_ERR_RANK, "'deep' has rank 100, above adtape's 4: [2, 1, 1, 1,");
    cr_assert(strstr(ad_last_error(), ", ...] F32"), "%s", ad_last_error());
}
