/*
** ckpt_files.h: what the checkpoint suites share: a fresh folder per test, raw files
** written byte by byte (so a crafted header says exactly what the test means),
** snapshots of parameters, optimiser and generator for "left exactly as it was"
** checks, and the two small models the tests save and load. Plain malloc throughout,
** so the counting allocator sees only the library.
*/
#ifndef TEST_CKPT_FILES_H
#define TEST_CKPT_FILES_H

#include <stddef.h>
#include "ad.h"

void cf_make_dir(void);
void cf_remove_dir(void);
const char *cf_dir(void);
/* dir/name, from a ring of 8 buffers. */
const char *cf_path(const char *name);

void cf_write(const char *path, const void *bytes, size_t n);
/* The whole file (malloc; free it), its size in *n. */
unsigned char *cf_read(const char *path, size_t *n);
/* Entries of the folder whose name holds ".tmp." (left-over temporary files). */
int cf_count_temp(void);

/* A safetensors file: the 8-byte little-endian length of the header, the header text
** padded with spaces to a multiple of pad (0: no padding), then n bytes of data. */
void cf_write_safetensors(const char *path, const char *json, size_t pad, const void *data,
                          size_t n);

/* The bytes and versions of every parameter, and (either may be NULL) every state
** buffer, step count and the learning rate of o, and r's words. */
typedef struct cf_snapshot cf_snapshot;
cf_snapshot *cf_snap(const ad_params *ps, ad_optim *o, const ad_rng *r);
/* Fails the test unless everything is bitwise as in s; `what` names the moment. */
void cf_assert_unchanged(const cf_snapshot *s, const ad_params *ps, ad_optim *o,
                         const ad_rng *r, const char *what);
void cf_snap_free(cf_snapshot *s);

/* Fails unless the two tensors have the same dtype, shape and bytes. */
void cf_assert_bits_equal(const ad_tensor *a, const ad_tensor *b, const char *what);
/* Fails unless the file at path is exactly the n bytes of want; `what` names the moment. */
void cf_assert_file_is(const char *path, const unsigned char *want, size_t n,
                       const char *what);

/* The target of the crafted files and of the argument checks: w (f32 2x2, all 7) and
** b (f64 2, all -7), added to a fresh *ps in that order and named by cf_wb_names. */
extern const char *const cf_wb_names[2];
void cf_wb_open(ad_tensor **w, ad_tensor **b, ad_params **ps);
void cf_wb_close(ad_tensor *w, ad_tensor *b, ad_params *ps);
/* Loads path into ps under names; expects `code`, a message holding `needle` (unless
** NULL), and ps bitwise unchanged (data and versions). */
void cf_load_fails(const char *path, ad_params *ps, const char *const names[],
                   ad_status code, const char *needle);

/* A small model trained with Adam: tanh(x W1' + b1) W2' + b2 against y by MSE, x 8x4,
** hidden 6, out 2, float32; each batch drawn from the net's own generator. */
typedef struct cf_net {
    ad_tensor *w1, *b1, *w2, *b2, *x, *y;
    ad_params *ps;
    ad_grads *gs;
    ad_optim *opt;
    ad_tape *tape;
    ad_rng rng;
    uint64_t step;
} cf_net;
extern const char *const cf_net_names[4];

/* Weights from seed (Glorot), zero biases, a fresh Adam, the generator seeded from
** seed too: two nets of different seeds differ everywhere. */
void cf_net_open(cf_net *n, uint64_t seed);
void cf_net_close(cf_net *n);
/* steps steps of training, each on a batch drawn from n->rng. */
void cf_net_train(cf_net *n, int steps);
/* Extras carrying the net's optimiser, generator and step. */
ad_checkpoint_extras cf_net_extras(cf_net *n);
/* Saves the net with those extras to path; fails the test on any error. */
void cf_net_save(const char *path, cf_net *n);

/* Rewrites the checkpoint at path with metadata key set to value (NULL: removed),
** keeping the tensors and their bytes: for files that are valid but for one value. */
void cf_rewrite_meta(const char *path, const char *key, const char *value);

#endif /* TEST_CKPT_FILES_H */
