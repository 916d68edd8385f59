/*
** make_corpus.c: writes the seed corpus of fuzz_checkpoint into the folder given as
** the only argument. The parameter set is the fuzzer's: "w" 4x3 f32 and "b" 3 f64.
**   valid-*   checkpoints written by ad_checkpoint_save: parameters only; with an Adam
**             optimiser, generator, step and user metadata; with momentum; one whose
**             user metadata the fuzzer's callback refuses ("fuzz.reject").
**   bad-*     one file per validation rule of the loader, each breaking exactly one
**             rule of an otherwise valid file (the name says which).
**   opt-*     valid files whose optimiser or generator metadata is malformed: they
**             load without extras and fail only when those are asked for.
** Deterministic: the same bytes on every run, so scripts/fuzz can compare them with
** the copy checked in under tests/fuzz/corpus/checkpoint/.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"

static const char *dir;

static void die(const char *what)
{
    fprintf(stderr, "make_corpus: %s: %s\n", what, ad_last_error());
    exit(1);
}

static FILE *create(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        die(path);
    return fp;
}

/* A file of exactly these bytes: the 8-byte length (as given, so it can lie), the
** header, data_len bytes of data. */
static void raw_len(const char *name, unsigned long long len, const char *header,
                    size_t data_len)
{
    FILE *fp = create(name);
    for (int i = 0; i < 8; i++)
        fputc((int)(len >> (8 * i) & 0xff), fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(0x3c + i % 3), fp);
    fclose(fp);
}

static void raw(const char *name, const char *header, size_t data_len)
{
    raw_len(name, strlen(header), header, data_len);
}

/* The two parameters' entries; `w` and `b` replace one of them (NULL: the usual). */
#define W_OK "\"w\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]}"
#define B_OK "\"b\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[48,72]}"

static void params(const char *name, const char *w, const char *b, const char *more,
                   size_t data_len)
{
    char h[2048];
    snprintf(h, sizeof h, "{%s,%s%s}", w ? w : W_OK, b ? b : B_OK, more ? more : "");
    raw(name, h, data_len);
}

/* A full Adam checkpoint written by hand: parameters, four state buffers and the
** metadata; `meta` replaces the metadata object's body. */
#define ADAM_META "\"adtape.step\":\"7\"," ADAM_META_NO_STEP
#define ADAM_META_NO_STEP                                                               \
    "\"format\":\"pt\",\"adtape.rng\":"                                                  \
    "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","             \
    "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":\"3f50624dd2f1a9fc\","          \
    "\"adtape.optim.steps.w\":\"7\",\"adtape.optim.steps.b\":\"7\""

static void adam(const char *name, const char *meta)
{
    char h[4096];
    snprintf(h, sizeof h,
             "{\"__metadata__\":{%s}," W_OK "," B_OK ","
             "\"__optim__.w.m\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[72,120]},"
             "\"__optim__.w.v\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[120,168]},"
             "\"__optim__.b.m\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[168,192]},"
             "\"__optim__.b.v\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[192,216]}}",
             meta);
    raw(name, h, 216);
}

static void saved(const char *name, ad_optim *o, ad_rng *rng, int reject)
{
    static const char *const names[2] = {"w", "b"};
    char path[4096];
    const ad_checkpoint_meta meta[2] = {{"run", "corpus"}, {"fuzz.reject", "yes"}};
    ad_checkpoint_extras x = {.optim = o, .rng = rng, .step = 7, .meta = meta,
                              .n_meta = 1 + reject};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (ad_checkpoint_save(path, ad_optim_params(o), names, &x))
        die(path);
}

static void valid_files(void)
{
    float w[12];
    double b[3];
    ad_tensor tw, tb;
    ad_params *ps;
    ad_optim *opt[2];
    ad_rng rng;
    const int64_t ws[2] = {4, 3}, bs[1] = {3};
    for (int i = 0; i < 12; i++)
        w[i] = 0.125f * (float)(i - 6);
    for (int i = 0; i < 3; i++)
        b[i] = 0.5 * (i + 1);
    ad_optim_config cfg[2] = {ad_optim_defaults(AD_OPT_ADAM),
                              ad_optim_defaults(AD_OPT_MOMENTUM)};
    cfg[0].lr = 0.001;
    cfg[1].lr = 0.05;
    if (ad_tensor_init(&tw, AD_F32, 2, ws, w) || ad_tensor_init(&tb, AD_F64, 1, bs, b) ||
        ad_params_new(&ps) || ad_params_add(ps, &tw, NULL) || ad_params_add(ps, &tb, NULL) ||
        ad_optim_new(ps, &cfg[0], &opt[0]) || ad_optim_new(ps, &cfg[1], &opt[1]))
        die("setting up the parameters");
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 2; i++) {
            for (int k = 0; k < ad_optim_state_count(opt[j]); k++) {
                ad_tensor v;
                if (ad_optim_state(opt[j], i, k, &v) || ad_tensor_fill(&v, 0.25 * (k + 1)))
                    die("optimiser state");
            }
            if (ad_optim_set_steps(opt[j], i, 7))
                die("optimiser steps");
        }
    ad_rng_seed(&rng, 2024);
    static const char *const names[2] = {"w", "b"};
    char path[4096];
    snprintf(path, sizeof path, "%s/valid-params", dir);
    if (ad_checkpoint_save(path, ps, names, NULL))
        die(path);
    saved("valid-full-adam", opt[0], &rng, 0);
    saved("valid-momentum", opt[1], NULL, 0);
    saved("valid-meta-rejected", opt[0], &rng, 1);
    ad_optim_free(opt[0]);
    ad_optim_free(opt[1]);
    ad_params_free(ps);
}

static void structure_files(void)
{
    FILE *fp = create("bad-truncated-length");
    fwrite("\x10\0\0\0", 1, 4, fp);
    fclose(fp);
    raw("bad-empty-header", "", 0);
    raw_len("bad-header-too-large", 100000001ull, "{}", 0);
    raw_len("bad-header-truncated", 4000, "{\"w\":{}}", 16);
    raw("bad-json-syntax", "{\"w\": {\"dtype\": \"F32\",", 72);
    raw("bad-json-not-object", "[1, 2, 3]", 0);
    raw("bad-json-leading-space", " {}", 0);
    raw("bad-json-not-utf8", "{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    raw("bad-json-trailing", "{} x", 0);
    raw("bad-name-nul", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    params("bad-name-empty", NULL, NULL, ",\"\":{\"dtype\":\"F32\",\"shape\":[0],"
           "\"data_offsets\":[72,72]}", 72);
    params("bad-duplicate-name", NULL, NULL, ",\"w\":{\"dtype\":\"F32\",\"shape\":[0],"
           "\"data_offsets\":[72,72]}", 72);
    params("bad-entry-not-object", "\"w\":[0,48]", NULL, NULL, 72);
    params("bad-entry-extra-field", "\"w\":{\"dtype\":\"F32\",\"shape\":[4,3],"
           "\"data_offsets\":[0,48],\"x\":1}", NULL, NULL, 72);
    params("bad-entry-missing-field", "\"w\":{\"dtype\":\"F32\",\"shape\":[4,3]}", NULL,
           NULL, 72);
    params("bad-dtype-not-string", "\"w\":{\"dtype\":32,\"shape\":[4,3],\"data_offsets\":"
           "[0,48]}", NULL, NULL, 72);
    params("bad-dtype-unknown", "\"w\":{\"dtype\":\"F128\",\"shape\":[4,3],\"data_offsets\":"
           "[0,48]}", NULL, NULL, 72);
    params("bad-dtype-unsupported", "\"w\":{\"dtype\":\"BF16\",\"shape\":[4,3],"
           "\"data_offsets\":[0,24]}", "\"b\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[24,48]}", NULL, 48);
    params("bad-dtype-unsupported-size", NULL, NULL, ",\"n\":{\"dtype\":\"I64\",\"shape\":[],"
           "\"data_offsets\":[72,76]}", 76);
    params("bad-dtype-i64-counter", NULL, NULL, ",\"bn.num_batches_tracked\":{\"dtype\":"
           "\"I64\",\"shape\":[],\"data_offsets\":[72,80]}", 80);
    params("bad-dtype-f4-misaligned", NULL, NULL, ",\"q\":{\"dtype\":\"F4\",\"shape\":[3],"
           "\"data_offsets\":[72,74]}", 74);
    params("bad-dtype-f4-packed", NULL, NULL, ",\"q\":{\"dtype\":\"F4\",\"shape\":[2,3],"
           "\"data_offsets\":[72,75]}", 75);
    params("bad-shape-negative", "\"w\":{\"dtype\":\"F32\",\"shape\":[-4,3],"
           "\"data_offsets\":[0,48]}", NULL, NULL, 72);
    params("bad-shape-not-integer", "\"w\":{\"dtype\":\"F32\",\"shape\":[4.0,3],"
           "\"data_offsets\":[0,48]}", NULL, NULL, 72);
    params("bad-shape-overflow", "\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,"
           "16],\"data_offsets\":[0,48]}", NULL, NULL, 72);
    params("bad-number-overflow", "\"w\":{\"dtype\":\"F32\",\"shape\":[4,3],"
           "\"data_offsets\":[0,99999999999999999999999]}", NULL, NULL, 72);
    params("bad-metadata-not-object", NULL, NULL, ",\"__metadata__\":[\"a\"]", 72);
    params("bad-metadata-not-string", NULL, NULL, ",\"__metadata__\":{\"a\":1}", 72);
    params("bad-offsets-reversed", NULL, "\"b\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[72,48]}", NULL, 72);
    params("bad-offsets-size", NULL, "\"b\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[48,80]}", NULL, 80);
    params("bad-offsets-overlap", NULL, "\"b\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[40,64]}", NULL, 64);
    params("bad-offsets-gap", NULL, "\"b\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[56,80]}", NULL, 80);
    params("bad-offsets-not-from-zero", "\"w\":{\"dtype\":\"F32\",\"shape\":[4,3],"
           "\"data_offsets\":[8,56]}", "\"b\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[56,80]}", NULL, 80);
    params("bad-data-truncated", NULL, NULL, NULL, 71);
    params("bad-trailing-data", NULL, NULL, NULL, 73);
    params("bad-missing-tensor", W_OK, "\"c\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[48,72]}", NULL, 72);
    params("bad-extra-tensor", NULL, NULL, ",\"c\":{\"dtype\":\"F32\",\"shape\":[1],"
           "\"data_offsets\":[72,76]}", 76);
    params("opt-buffer-without-metadata", NULL, NULL, ",\"__optim__.w.m\":{\"dtype\":\"F32\","
           "\"shape\":[4,3],\"data_offsets\":[72,120]}", 120);
    params("bad-shape-mismatch", "\"w\":{\"dtype\":\"F32\",\"shape\":[3,4],"
           "\"data_offsets\":[0,48]}", NULL, NULL, 72);
    params("bad-rank-mismatch", "\"w\":{\"dtype\":\"F32\",\"shape\":[12],"
           "\"data_offsets\":[0,48]}", NULL, NULL, 72);
    params("bad-rank-above-4", "\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,4,3],"
           "\"data_offsets\":[0,48]}", NULL, NULL, 72);
    params("bad-dtype-mismatch", "\"w\":{\"dtype\":\"F64\",\"shape\":[4,3],"
           "\"data_offsets\":[0,96]}", "\"b\":{\"dtype\":\"F64\",\"shape\":[3],"
           "\"data_offsets\":[96,120]}", NULL, 120);
    raw("bad-empty-object", "{}", 0);
}

static void optim_files(void)
{
    adam("valid-hand-adam", ADAM_META);
    adam("opt-kind-mismatch", "\"adtape.optim.kind\":\"nesterov\",\"adtape.optim.lr\":"
         "\"3f50624dd2f1a9fc\",\"adtape.optim.steps.w\":\"1\",\"adtape.optim.steps.b\":\"1\"");
    adam("opt-kind-missing", "\"adtape.optim.lr\":\"3f50624dd2f1a9fc\"");
    adam("opt-lr-not-hex", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"3F50624DD2F1A9FC\",\"adtape.optim.steps.w\":\"1\",\"adtape.optim.steps.b\":\"1\"");
    adam("opt-lr-nan", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"7ff8000000000000\",\"adtape.optim.steps.w\":\"1\",\"adtape.optim.steps.b\":\"1\"");
    adam("opt-lr-negative", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"bf50624dd2f1a9fc\",\"adtape.optim.steps.w\":\"1\",\"adtape.optim.steps.b\":\"1\"");
    adam("opt-steps-missing", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"3f50624dd2f1a9fc\",\"adtape.optim.steps.w\":\"1\"");
    adam("opt-steps-too-large", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"3f50624dd2f1a9fc\",\"adtape.optim.steps.w\":\"9223372036854775808\","
         "\"adtape.optim.steps.b\":\"1\"");
    adam("opt-steps-signed", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"3f50624dd2f1a9fc\",\"adtape.optim.steps.w\":\"+1\",\"adtape.optim.steps.b\":\"1\"");
    adam("opt-rng-zero", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"3f50624dd2f1a9fc\",\"adtape.optim.steps.w\":\"1\",\"adtape.optim.steps.b\":\"1\","
         "\"adtape.rng\":\"0000000000000000000000000000000000000000000000000000000000000000\"");
    adam("opt-rng-short", "\"adtape.optim.kind\":\"adam\",\"adtape.optim.lr\":"
         "\"3f50624dd2f1a9fc\",\"adtape.optim.steps.w\":\"1\",\"adtape.optim.steps.b\":\"1\","
         "\"adtape.rng\":\"0123456789abcdef\"");
    adam("opt-step-malformed", ADAM_META_NO_STEP ",\"adtape.step\":\"12a\"");
    adam("opt-step-overflow", "\"adtape.step\":\"18446744073709551616\"");
    params("opt-momentum-buffer-missing", NULL, NULL, ",\"__metadata__\":{"
           "\"adtape.optim.kind\":\"momentum\",\"adtape.optim.lr\":\"3f50624dd2f1a9fc\","
           "\"adtape.optim.steps.w\":\"1\",\"adtape.optim.steps.b\":\"1\"}", 72);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    dir = argv[1];
    valid_files();
    structure_files();
    optim_files();
    return 0;
}
