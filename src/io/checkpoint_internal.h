/*
** checkpoint_internal.h (internal): what the checkpoint writer and reader share: the
** reserved names and keys, argument checks, jansson's allocation, and the safetensors
** reader (safetensors_parse.c) that validates a file's structure.
*/
#ifndef AD_CHECKPOINT_INTERNAL_H
#define AD_CHECKPOINT_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "../base/base.h"
#include "ad_checkpoint.h"

#define CKPT_METADATA "__metadata__"
#define CKPT_OPTIM_PREFIX "__optim__."
#define CKPT_KEY_PREFIX "adtape."
#define CKPT_KEY_STEP "adtape.step"
#define CKPT_KEY_RNG "adtape.rng"
#define CKPT_KEY_RNGS "adtape.rng." /* followed by the generator's name */
#define CKPT_KEY_KIND "adtape.optim.kind"
#define CKPT_KEY_LR "adtape.optim.lr"
#define CKPT_KEY_SETTING "adtape.optim." /* followed by a setting other than lr */

/* The optimiser's settings besides kind and lr, saved as the IEEE-754 bits of their
** value as a double (centered, an int, too) and compared on load: a resume with
** another momentum or beta would continue a different run. */
#define CKPT_SETTINGS(X)                                                                \
    X(momentum) X(beta1) X(beta2) X(eps) X(weight_decay) X(clip_norm) X(alpha)        \
    X(centered)
#define CKPT_KEY_STEPS "adtape.optim.steps." /* followed by the parameter's name */

/* The reference implementation's limit (safetensors MAX_HEADER_SIZE). */
#define CKPT_HEADER_MAX 100000000u

/* Routes jansson through the allocation hooks (once per process) and clears the
** calling thread's record of a failed jansson allocation. Call before jansson work. */
void adi_ckpt_json_begin(void);
/* Whether a jansson allocation failed on this thread since adi_ckpt_json_begin: jansson
** does not always say so itself (a failed buffer growth can surface as a syntax
** error), so every jansson result is distrusted when this is true. */
bool adi_ckpt_json_oom(void);

/* Checks the arguments both calls share: names of ps's parameters, the optimiser's
** parameter set, buffers and generators, the metadata pairs (save only: with_meta).
** With names NULL the set's own names are gathered into *owned (out; the caller frees
** it with ad_free and uses it instead of names); otherwise *owned is NULL. */
ad_status adi_ckpt_check_args(const char *what, const char *path, const ad_params *ps,
                          const char *const names[], const ad_checkpoint_extras *x,
                          bool with_meta, const char ***owned);

static inline bool adi_ckpt_has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* "a" "b" "c" joined into a string from ad_malloc (NULL when out of memory). */
char *adi_ckpt_join(const char *a, const char *b, const char *c);

/* "adam", "momentum", ...: the names stored under adtape.optim.kind. */
const char *adi_ckpt_kind_name(ad_optim_kind kind);

/* The suffix of state buffer k (0 <= k < ad_optim_state_count) of an optimiser
** configured as c: ".m" and ".v" (momentum, Nesterov, Adam, AdamW); RMSprop's are
** named as torch.optim.RMSprop's state: ".square_avg", ".momentum_buffer",
** ".grad_avg". */
const char *adi_ckpt_state_suffix(const ad_optim_config *c, int k);

/* "F32" or "F64" for the file (of a parameter's dtype). */
const char *adi_ckpt_dtype_tag(ad_dtype dtype);

/* A dtype the safetensors format defines (safetensors_dtype.c). */
typedef struct adi_st_dtype {
    const char *name;  /* as the header spells it: "F32", "BF16", "F8_E4M3", ... */
    unsigned bits;     /* the width of one element: 4, 6, 8, 16, 32 or 64 */
    ad_dtype loads_as; /* AD_F32 or AD_F64; 0 for a dtype adtape does not load */
} adi_st_dtype;

/* The format's dtype of that name, or NULL when the format defines none. */
const adi_st_dtype *adi_st_dtype_find(const char *name);

/* One tensor entry of a file. */
typedef struct adi_st_entry {
    const char *name;          /* owned by the JSON tree */
    const adi_st_dtype *dtype; /* static */
    int ndim;                  /* as in the file: any rank, also above AD_MAX_RANK */
    const int64_t *shape;      /* its ndim extents, in the file's extents block */
    uint64_t begin, end;       /* within the data section */
    bool used;                 /* claimed by a parameter or optimiser buffer */
} adi_st_entry;

/* A file whose structure has been validated; data read by adi_st_read_data. */
typedef struct adi_st_file {
    const char *path;
    int fd;
    json_t *root;
    json_t *meta;       /* the "__metadata__" object, or NULL */
    adi_st_entry *entries;  /* n of them, in the header's key order */
    adi_st_entry **by_name; /* sorted by name */
    int64_t *extents;   /* every entry's shape, one after the other */
    int n;
    uint64_t header_size; /* N, the header's length, padding included */
    uint64_t data_size;   /* the data section: from the end of the header to the end */
    unsigned char *data;  /* data_size bytes after adi_st_read_data */
} adi_st_file;

/* Opens path and validates it against the format, and nothing else: the length, the
** header's first byte, the JSON, each entry (its dtype one the format defines, of any
** rank), the offsets, the file's size. Whether adtape can load the entries and what
** the caller asked for are the callers' business. On failure *f needs no adi_st_close. */
ad_status adi_st_open(const char *what, const char *path, adi_st_file *f);
/* Reads the data section into f->data. */
ad_status adi_st_read_data(const char *what, adi_st_file *f);
/* The entry named name, or NULL. */
adi_st_entry *adi_st_find(const adi_st_file *f, const char *name);
void adi_st_close(adi_st_file *f);

#endif /* AD_CHECKPOINT_INTERNAL_H */
