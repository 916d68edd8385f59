/*
** ad_checkpoint.h: checkpoints as safetensors files: crash-safe saving, loading that
** validates the whole file before it touches anything, exact resumption, and a listing
** of any safetensors file's tensors and metadata (ad_checkpoint_inspect).
**
** Example (fragment):
**     const char *const names[] = {"w1", "b1", "w2", "b2"};  // ps's order, by index
**     ad_checkpoint_extras x = {.optim = opt, .rng = &rng, .step = step};
**     ad_checkpoint_save("run.safetensors", ps, names, &x);
**     // ... and later, in this process or another:
**     ad_checkpoint_load("run.safetensors", ps, names, &x);   // x.step is restored
**
** The file is what the safetensors reference writes and PyTorch reads
** (safetensors.torch.load_file): an 8-byte little-endian header length N, N bytes of
** UTF-8 JSON, then the raw little-endian data. The JSON maps each tensor name to
** {"dtype": "F32" | "F64", "shape": [...], "data_offsets": [begin, end]} (offsets into
** the data section) and "__metadata__" to an object of string values. adtape writes
** the header padded with spaces to a multiple of 8 bytes, tensors in the order below,
** and these entries:
**   <names[i]>                     parameter i of ps, in its dtype and shape
**   <buffers[j].name>              buffer j, in its dtype and shape
**   __optim__.<names[i]>.m / .v    the optimiser's state buffers (ad_optim_state: .m
**                                  the velocity or first moment, .v the second moment;
**                                  RMSprop's as torch names them: .square_avg, then
**                                  .momentum_buffer and .grad_avg when kept)
**   __metadata__ "format": "pt"    as safetensors.torch writes it
**                "adtape.step"     the step count (decimal)
**                "adtape.rng"      the generator's four state words (64 hex digits)
**                "adtape.rng.<rngs[j].name>"  generator j's, the same way
**                "adtape.optim.kind", "adtape.optim.lr" (the IEEE-754 bits of the
**                                  learning rate, 16 hex digits: exact and independent
**                                  of the locale), "adtape.optim.steps.<names[i]>"
**                                  (parameter i's step count, decimal),
**                                  "adtape.optim.<setting>" for momentum, beta1,
**                                  beta2, eps, weight_decay, clip_norm, alpha and
**                                  centered (the bits of their value as a double,
**                                  as lr's: a load refuses an optimiser whose setting
**                                  differs; a file without these keys loads)
**                plus the caller's own string pairs.
** Only the pieces asked for are written: no optimiser, no __optim__ entries.
**
** Names: every parameter and buffer name is non-empty UTF-8 without NUL bytes, unique
** among both, not "__metadata__" and not starting with "__optim__."; generator names
** are non-empty UTF-8, unique among generators; user metadata keys are non-empty UTF-8, unique,
** not "format" and not starting with "adtape.".
**
** JSON goes through jansson. The first save or load routes jansson's allocation through
** adtape's hooks (json_set_alloc_funcs), so allocation failures inside the parser are
** reported as AD_ERR_NOMEM like any other; it does so only while jansson still uses
** malloc and free, so a program that installs its own jansson allocator keeps it (and
** an out-of-memory inside jansson may then be reported as AD_ERR_JSON). A program that
** uses jansson itself and keeps the default should not free, after adtape's first
** checkpoint call, jansson values made before it while custom adtape hooks are set.
**
** Thread safety: saving or loading distinct objects from several threads is safe; a
** parameter, optimiser or generator must not be used by another thread during a call.
*/
#ifndef AD_CHECKPOINT_H
#define AD_CHECKPOINT_H

#include "ad_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One metadata pair. Both strings are the caller's. */
typedef struct ad_checkpoint_meta {
    const char *key;
    const char *value;
} ad_checkpoint_meta;

/* Called by ad_checkpoint_load with every "__metadata__" pair of the file (adtape's own
** keys too, in file order) after the whole file has been validated and before anything
** is written. The strings are valid only during the call. Returning anything but AD_OK
** stops the load with that status (set a message with ad_fail) and nothing is changed. */
typedef ad_status (*ad_checkpoint_meta_fn)(const char *key, const char *value, void *user);

/*
** A tensor saved and loaded with the parameters but never trained: FA's fixed B, sign
** feedback's magnitudes, DFA's B_l, running statistics. The tensor is the caller's; it
** must be F32 or F64, rank 0 to 4. With names NULL, the parameters go by the names the
** set holds (ad_params_add_named); every generator goes by a name of its own:
**
** Example (fragment):
**     ad_rng data_rng, sf_rng; // the batches' order; brSF's magnitudes
**     ad_rng_seed(&data_rng, 1);
**     ad_rng_seed(&sf_rng, 2);
**     ad_checkpoint_buffer fb[] = {{"fc1.feedback", &B1}, {"fc2.feedback", &B2}};
**     ad_checkpoint_rng g[] = {{"data", &data_rng}, {"feedback", &sf_rng}};
**     ad_checkpoint_extras x = {.optim = opt, .buffers = fb, .n_buffers = 2,
**                               .rngs = g, .n_rngs = 2};
**     ad_checkpoint_save("run.safetensors", ps, NULL, &x);
*/
typedef struct ad_checkpoint_buffer {
    const char *name;
    ad_tensor *tensor;
} ad_checkpoint_buffer;

/* A named generator: a model that draws from several (the data order, brSF's
** magnitudes, dropout) saves each under its own name. */
typedef struct ad_checkpoint_rng {
    const char *name;
    ad_rng *rng;
} ad_checkpoint_rng;

/* What a checkpoint carries besides the parameters. Plain data: zero fields mean
** "not asked for"; fields marked save or load are read only by that call. */
typedef struct ad_checkpoint_extras {
    ad_optim *optim;                /* its state (buffers, step counts, kind, lr); it
                                       must have been made for the same parameter set */
    ad_rng *rng;                    /* the generator's state */
    uint64_t step;                  /* save: written; load: set from "adtape.step", 0
                                       when the file has none */
    const ad_checkpoint_meta *meta; /* save: n_meta pairs of the caller's metadata */
    int n_meta;
    ad_checkpoint_meta_fn on_meta;  /* load: sees each metadata pair (NULL: none) */
    void *user;                     /* load: passed to on_meta */
    const ad_checkpoint_buffer *buffers; /* n_buffers non-trainable tensors */
    int n_buffers;
    const ad_checkpoint_rng *rngs;  /* n_rngs named generators (besides rng) */
    int n_rngs;
} ad_checkpoint_extras;

/*
** Writes a checkpoint of ps (names[i] names parameter i; ad_params_count(ps) names; NULL:
** the set's own, ad_params_name) and, when extras is not NULL, the optimiser, buffers,
** generators, step and metadata it holds.
**
** Crash-safe: the file is written to a temporary file in path's folder
** ("<path>.tmp.XXXXXX", mode 0600, or the mode of the file it replaces), flushed with
** fsync, closed, renamed over path, and the folder is fsynced. At every moment path
** holds either the previous checkpoint or the new one, complete. A failed fsync is
** never retried and never followed by a success.
**
** Errors, each naming what failed:
**   AD_ERR_NULL      path, ps, a name, key or value, a buffer's tensor, a generator, or
**                    buffers/rngs/meta with a positive count is NULL; or names is NULL
**                    and a parameter has no name of its own
**   AD_ERR_INVALID   n_meta, n_buffers or n_rngs < 0, or an optimiser made for another
**                    parameter set
**   AD_ERR_DTYPE     a buffer that is not F32 or F64
**   AD_ERR_BAD_NAME  a name or metadata key breaks the rules above
**   AD_ERR_DUPLICATE_NAME  two tensor names, generator names or metadata keys are equal
**   AD_ERR_METADATA  a metadata value is not UTF-8
**   AD_ERR_HEADER_TOO_LARGE  the header would be above the 100,000,000 bytes readers
**                    accept
**   AD_ERR_OVERFLOW  the data would be larger than a file offset can say
**   AD_ERR_NOMEM     an allocation failed
**   AD_ERR_IO        a system call failed; the message names the step (mkstemp, fchmod,
**                    write, fsync, close, rename, open or fsync of the folder) and the
**                    system's reason
** What a failure leaves: the parameters, buffers, optimiser and generators are never
** written
** (the optimiser may make zeroed state for parameters added since its last step, as
** its next step would);
** the temporary file is removed; path holds the previous checkpoint (or nothing, if
** there was none) -- except after a failed fsync of the folder, when the rename has
** already happened: path then holds the new checkpoint, complete, but whether it
** survives a power loss is unknown, so the call still fails.
*/
AD_API ad_status ad_checkpoint_save(const char *path, const ad_params *ps, const char *const names[],
                             const ad_checkpoint_extras *extras);

/*
** Reads a checkpoint into ps (names as for ad_checkpoint_save) and, when extras is not
** NULL, into its optimiser, buffers and generators and its step; calls on_meta.
**
** The whole file is validated against the format first: the header length (at most
** 100,000,000 bytes, as the reference allows), its first byte ('{'), the JSON, every
** entry (whatever its dtype and rank), every offset, the file's size. Then every tensor
** of the file must be one adtape loads: F32 or F64, rank 0 to 4. Both happen before any
** name is looked at, so a file gets the same error whatever ps and names are. Then
** every parameter and buffer (and, with an optimiser, every state buffer) must have a
** tensor of its name, dtype and shape, and every tensor in the file must be one of
** those; every generator asked for must have its key: a model whose fixed feedback or
** generator is missing would otherwise resume on freshly drawn numbers. The
** __optim__ tensors and adtape's metadata are ignored when no optimiser (or generator)
** is asked for, so a training checkpoint loads into a model for evaluation. Only then
** are the data copied in; the versions of the parameters and buffers are bumped. The optimiser
** gets its state buffers, step counts and learning rate (as torch's load_state_dict
** restores lr; call ad_optim_set_lr afterwards to change it).
**
** Files from PyTorch: a state_dict may hold integer tensors besides the weights, such
** as BatchNorm's num_batches_tracked (I64, shape []). No tensor of a file is dropped
** silently (that is AD_ERR_EXTRA_TENSOR's rule), and no adtape tensor can take an I64,
** so such a file fails with AD_ERR_UNSUPPORTED_DTYPE naming the tensor, whatever the
** names. Save what adtape is to load without them, e.g. with
** Example (python):
**     {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
** and see what any file holds with ad_checkpoint_inspect (or the adtape-inspect
** program, examples/inspect.c).
**
** Errors, each naming the file and the tensor or key:
**   AD_ERR_NULL, AD_ERR_INVALID, AD_ERR_BAD_NAME, AD_ERR_DUPLICATE_NAME  as for saving,
**                    for the arguments
**   AD_ERR_IO        the file cannot be opened, examined or read (system's reason)
**   AD_ERR_TRUNCATED the file ends before 8 bytes, before its header, or before the
**                    data its header announces
**   AD_ERR_HEADER_TOO_LARGE  the header length is above 100,000,000
**   AD_ERR_JSON      the header does not start with '{', is not a JSON object of UTF-8
**                    text, or an entry is not {"dtype": string, "shape": [integers
**                    >= 0], "data_offsets": [integer >= 0, integer >= 0]} with no other
**                    fields
**   AD_ERR_UNKNOWN_DTYPE  a dtype the format does not define; it defines BOOL, U8, I8,
**                    U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, C64, the F8 types
**                    F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, and F4, F6_E2M3,
**                    F6_E3M2, which pack below a byte
**   AD_ERR_DUPLICATE_NAME a name twice in the header
**   AD_ERR_BAD_NAME  an empty name, or a NUL byte in a name
**   AD_ERR_METADATA  "__metadata__" is not an object of strings; or, when asked for,
**                    adtape's optimiser or generator keys ("adtape.rng",
**                    "adtape.rng.<name>") are missing or malformed, or
**                    the optimiser's kind or one of its saved settings (momentum,
**                    betas, eps, weight decay, clip norm) differs from the file's
**   AD_ERR_OVERFLOW  a shape whose element count or byte size overflows
**   AD_ERR_OFFSETS   data_offsets with begin > end, a size that is not the shape's
**                    (of its dtype's width, for every dtype), an F4 or F6 tensor whose
**                    bits are not a whole number of bytes, or tensors that do not tile
**                    the data section from 0 without gaps or overlaps (in the order of
**                    their offsets)
**   AD_ERR_TRAILING_DATA  bytes after the end of the last tensor
**   AD_ERR_UNSUPPORTED_DTYPE  a tensor of a dtype the format defines but adtape does not
**                    load (all but F32 and F64), the __optim__ ones included
**   AD_ERR_RANK      a tensor of rank above 4 (the message gives its rank and shape)
**   AD_ERR_MISSING_TENSOR a parameter, buffer or optimiser buffer has no tensor
**   AD_ERR_EXTRA_TENSOR   the file holds a tensor nobody asked for
**   AD_ERR_DTYPE, AD_ERR_SHAPE  a tensor's dtype or shape differs from its parameter's
**                    (both in the message)
**   AD_ERR_NOMEM     an allocation failed
**   anything on_meta returns
** What a failure leaves: every parameter and buffer (data and version), the optimiser's
** state, the generators and extras->step exactly as they were. (The optimiser may have made zeroed
** state for parameters added since its last step, as its next step would.)
*/
AD_API ad_status ad_checkpoint_load(const char *path, const ad_params *ps, const char *const names[],
                             ad_checkpoint_extras *extras);

/* One tensor of a file, as ad_checkpoint_inspect lists it. */
typedef struct ad_checkpoint_entry {
    const char *name;     /* as the header spells it */
    const char *dtype;    /* the format's name: "F32", "BF16", "I64", "F8_E4M3", ... */
    int ndim;             /* any rank: 0 for a scalar, above AD_MAX_RANK too */
    const int64_t *shape; /* its ndim extents */
    uint64_t begin, end;  /* its data_offsets: bytes [begin, end) of the data section */
    int loadable;         /* nonzero when ad_checkpoint_load can read it into a
                             tensor: F32 or F64, rank 0 to 4 */
} ad_checkpoint_entry;

/* What a file holds. Plain data in one block: every pointer in it points into the
** block, and all of it stays valid until ad_checkpoint_info_free. */
typedef struct ad_checkpoint_info {
    int n_tensors;
    const ad_checkpoint_entry *tensors; /* in the header's order */
    int n_meta;
    const ad_checkpoint_meta *meta;     /* the "__metadata__" pairs, in the header's order */
    uint64_t header_bytes;              /* N, the header's length, padding included */
    uint64_t data_bytes;                /* the data section after it */
} ad_checkpoint_info;

/*
** Lists what the safetensors file at path holds without knowing its contents, as
** safetensors' safe_open does: every tensor's name, dtype, shape and offsets, those
** adtape cannot load included (any dtype the format defines, any rank), and the
** metadata. Only the header is read, however large the data.
**
** Example (fragment):
**     ad_checkpoint_info *info;
**     if (ad_checkpoint_inspect("model.safetensors", &info) == AD_OK) {
**         for (int i = 0; i < info->n_tensors; i++)
**             printf("%s %s rank %d\n", info->tensors[i].name, info->tensors[i].dtype,
**                    info->tensors[i].ndim);
**         ad_checkpoint_info_free(info);
**     }
**
** The file is validated against the format exactly as ad_checkpoint_load validates it,
** so a malformed file gets the same error from both; a dtype or rank adtape does not
** load is listed (loadable 0), not refused. *out (out-parameter) is owned by the caller
** and released with ad_checkpoint_info_free.
**
** Errors, each naming the file and the tensor or key: AD_ERR_NULL (path or out NULL),
** and as for ad_checkpoint_load: AD_ERR_IO, AD_ERR_TRUNCATED, AD_ERR_HEADER_TOO_LARGE,
** AD_ERR_JSON, AD_ERR_UNKNOWN_DTYPE, AD_ERR_DUPLICATE_NAME, AD_ERR_BAD_NAME,
** AD_ERR_METADATA ("__metadata__" not an object of strings), AD_ERR_OVERFLOW,
** AD_ERR_OFFSETS, AD_ERR_TRAILING_DATA, AD_ERR_NOMEM.
** What a failure leaves: *out unchanged, nothing allocated.
*/
AD_API ad_status ad_checkpoint_inspect(const char *path, ad_checkpoint_info **out);

/* Releases what ad_checkpoint_inspect made. NULL is accepted. */
AD_API void ad_checkpoint_info_free(ad_checkpoint_info *info);

#ifdef __cplusplus
}
#endif
#endif /* AD_CHECKPOINT_H */
