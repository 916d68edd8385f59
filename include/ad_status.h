/*
** ad_status.h: result codes, the calling thread's last error, allocation hooks.
**
** Every adtape function that can fail returns an ad_status. AD_OK is zero; every
** other value names one kind of failure. On failure the calling thread's last error
** message (ad_last_error) says what happened, naming the op, the rule and the shapes
** involved. Nothing in adtape aborts, exits or prints on its own.
*/
#ifndef AD_STATUS_H
#define AD_STATUS_H

#include <stddef.h>

/* Marks the library's public functions: adtape is built with hidden visibility, so
** only what an installed header declares with AD_API is exported. */
#if defined(__GNUC__) || defined(__clang__)
#define AD_API __attribute__((visibility("default")))
#else
#define AD_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
** Codes come in classes, as SQLite's extended codes do: the low byte of a code is its
** class (AD_CLASS_*) and the bits above number the code within it, so a caller can
** test the class without listing codes: ad_status_class(rc) == AD_CLASS_FILE.
** Compare codes by name, never by number.
*/
enum ad_status_class {
    AD_CLASS_OK = 0,
    AD_CLASS_MEMORY = 1, /* resources */
    AD_CLASS_ARGUMENT = 2, /* a call's arguments */
    AD_CLASS_RULE = 3, /* rules and the registry */
    AD_CLASS_SWEEP = 4, /* the state of a tape and its sweep */
    AD_CLASS_FILE = 5, /* files: data sets and checkpoints */
    AD_CLASS_MPI = 6, /* data-parallel training (adtape-mpi) */
};
#define AD_STATUS_CODE(cls, n) ((cls) | ((n) << 8))

typedef enum ad_status {
    AD_OK = 0,
    /* AD_CLASS_MEMORY */
    AD_ERR_NOMEM = AD_STATUS_CODE(AD_CLASS_MEMORY, 1),
        /* an allocation failed; nothing the call touched changed */
    /* AD_CLASS_ARGUMENT */
    AD_ERR_NULL = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 1),
        /* a required pointer argument was NULL */
    AD_ERR_INVALID = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 2),
        /* an argument is out of its documented range */
    AD_ERR_SHAPE = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 3),
        /* shapes do not fit the op (both shapes in the message) */
    AD_ERR_DTYPE = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 4),
        /* a dtype the rule does not accept, or mixed dtypes */
    AD_ERR_RANK = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 5),
        /* rank above AD_MAX_RANK, or a rank the rule does not accept */
    AD_ERR_OVERFLOW = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 6),
        /* a size computation would overflow */
    AD_ERR_ARITY = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 7),
        /* a call passed a number of inputs the rule does not take */
    AD_ERR_BAD_HANDLE = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 8),
        /* a handle from another tape or from before a reset */
    AD_ERR_NOT_SCALAR = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 9),
        /* the loss handed to the sweep is not a rank-0 float */
    AD_ERR_ATTRS = AD_STATUS_CODE(AD_CLASS_ARGUMENT, 10),
        /* attributes given to an op that takes none, missing when its rule requires
           them, or of a size other than the rule's attrs_size (op, rule and sizes in
           the message) */
    /* AD_CLASS_RULE */
    AD_ERR_NO_RULE = AD_STATUS_CODE(AD_CLASS_RULE, 1),
        /* the called function has no registered rule */
    AD_ERR_RULE_EXISTS = AD_STATUS_CODE(AD_CLASS_RULE, 2),
        /* a rule is already registered and replace was not asked */
    AD_ERR_BAD_RULE = AD_STATUS_CODE(AD_CLASS_RULE, 3),
        /* the rule struct is malformed (no pullback, bad arity) */
    AD_ERR_CHECK_FAILED = AD_STATUS_CODE(AD_CLASS_RULE, 4),
        /* ad_rule_check found a pullback that disagrees */
    AD_ERR_PULLBACK = AD_STATUS_CODE(AD_CLASS_RULE, 5),
        /* a pullback or primal failed without saying why */
    /* AD_CLASS_SWEEP */
    AD_ERR_STALE_INPUT = AD_STATUS_CODE(AD_CLASS_SWEEP, 1),
        /* a recorded tensor was written between recording and sweep */
    AD_ERR_NO_GRAD = AD_STATUS_CODE(AD_CLASS_SWEEP, 2),
        /* a sweep over a tape recorded in forward-only mode */
    AD_ERR_NONFINITE = AD_STATUS_CODE(AD_CLASS_SWEEP, 3),
        /* anomaly mode: an op's value or a cotangent holds NaN or Inf */
    AD_ERR_REUSED = AD_STATUS_CODE(AD_CLASS_SWEEP, 4),
        /* a memory-saving sweep reused this value's memory (ad_keep) */
    /* AD_CLASS_FILE */
    AD_ERR_IO = AD_STATUS_CODE(AD_CLASS_FILE, 1),
        /* a file could not be opened, read or written (errno text) */
    AD_ERR_TRUNCATED = AD_STATUS_CODE(AD_CLASS_FILE, 2),
        /* a file ends before the data its header announces */
    AD_ERR_BAD_MAGIC = AD_STATUS_CODE(AD_CLASS_FILE, 3),
        /* a file does not start with its format's magic number */
    AD_ERR_COUNT_MISMATCH = AD_STATUS_CODE(AD_CLASS_FILE, 4),
        /* counts that must agree do not (images vs labels, sizes) */
    AD_ERR_HEADER_TOO_LARGE = AD_STATUS_CODE(AD_CLASS_FILE, 5),
        /* a file's header is longer than its format allows */
    AD_ERR_JSON = AD_STATUS_CODE(AD_CLASS_FILE, 6),
        /* a file's JSON header is malformed or not of the schema */
    AD_ERR_UNKNOWN_DTYPE = AD_STATUS_CODE(AD_CLASS_FILE, 7),
        /* a file names a dtype its format does not define */
    AD_ERR_DUPLICATE_NAME = AD_STATUS_CODE(AD_CLASS_FILE, 8),
        /* a name given or stored twice */
    AD_ERR_BAD_NAME = AD_STATUS_CODE(AD_CLASS_FILE, 9),
        /* a name empty, not UTF-8, with a NUL byte, or reserved */
    AD_ERR_METADATA = AD_STATUS_CODE(AD_CLASS_FILE, 10),
        /* a file's metadata is malformed or disagrees with the caller */
    AD_ERR_OFFSETS = AD_STATUS_CODE(AD_CLASS_FILE, 11),
        /* data offsets out of order, overlapping, with gaps or sizes that do not match
           dtype and shape */
    AD_ERR_TRAILING_DATA = AD_STATUS_CODE(AD_CLASS_FILE, 12),
        /* bytes after the last tensor's data */
    AD_ERR_MISSING_TENSOR = AD_STATUS_CODE(AD_CLASS_FILE, 13),
        /* a tensor the caller needs is not in the file */
    AD_ERR_EXTRA_TENSOR = AD_STATUS_CODE(AD_CLASS_FILE, 14),
        /* the file holds a tensor the caller did not ask for */
    AD_ERR_UNSUPPORTED_DTYPE = AD_STATUS_CODE(AD_CLASS_FILE, 15),
        /* a file holds a dtype its format defines but adtape does not load (BF16, I64,
           ...) */
    /* AD_CLASS_MPI */
    AD_ERR_MPI = AD_STATUS_CODE(AD_CLASS_MPI, 1),
        /* an MPI call failed (adtape-mpi; MPI's own text in the message) */
    AD_ERR_PEER_FAILED = AD_STATUS_CODE(AD_CLASS_MPI, 2),
        /* another rank failed this step; the message names the rank */
    AD_ERR_MODEL_MISMATCH = AD_STATUS_CODE(AD_CLASS_MPI, 3),
        /* ranks hold parameter sets of different count, dtype or shape */
} ad_status;

/* Static text for a code ("shape mismatch"); never NULL, even for unknown codes. */
AD_API const char *ad_status_str(ad_status code);

/* The class of a code (AD_CLASS_FILE for AD_ERR_TRUNCATED, AD_CLASS_OK for AD_OK), or
** -1 when `code` is no code this library defines. */
AD_API int ad_status_class(ad_status code);

/* Static text for a class ("file"); "unknown class" for anything else. */
AD_API const char *ad_status_class_str(int cls);

/* The calling thread's last error message, or "" if none. The text stays valid until
** the next failing adtape call on this thread. Successful calls do not clear it. */
AD_API const char *ad_last_error(void);

/* Records `code` and a printf-style message as the calling thread's last error and
** returns `code`, so a user's primal or pullback fails in one line:
** Example (fragment):
**     return ad_fail(AD_ERR_SHAPE, "my_op: %s", why);
** Messages longer than 511 bytes are truncated; a NULL fmt leaves the message empty. */
AD_API ad_status ad_fail(ad_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/*
** Allocation hooks. All heap memory adtape uses (tapes, arenas, the rule registry,
** parameter and gradient sets, tensors it allocates) goes through these two functions;
** adtape never resizes a block, so there is no realloc hook. Set them before the first
** adtape call of the process, or make the new hooks compatible with the old ones (a
** counting or failing wrapper around malloc): memory is freed through whichever hooks
** are current at the time. malloc_fn is never asked for 0 bytes. `user` is passed back
** unchanged. A NULL hooks pointer restores malloc and free.
*/
typedef struct ad_allocator {
    void *(*malloc_fn)(size_t size, void *user);
    void (*free_fn)(void *ptr, void *user);
    void *user;
} ad_allocator;

/* Installs `hooks` (copied). Returns AD_ERR_INVALID if either hook is NULL. */
AD_API ad_status ad_set_allocator(const ad_allocator *hooks);

/* Heap memory through the installed hooks, for users' primals and pullbacks that need
** memory outside the tape's arena and for companion libraries (adtape-mpi). ad_malloc
** returns NULL when the hook fails (a size of 0 asks for 1 byte); ad_free accepts NULL.
** Memory from ad_malloc must go back through ad_free. */
AD_API void *ad_malloc(size_t size);
AD_API void ad_free(void *ptr);

#ifdef __cplusplus
}
#endif
#endif /* AD_STATUS_H */
