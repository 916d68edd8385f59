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

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ad_status {
    AD_OK = 0,
    AD_ERR_NOMEM,          /* an allocation failed; nothing the call touched changed */
    AD_ERR_NULL,           /* a required pointer argument was NULL */
    AD_ERR_INVALID,        /* an argument is out of its documented range */
    AD_ERR_SHAPE,          /* shapes do not fit the op (both shapes in the message) */
    AD_ERR_DTYPE,          /* a dtype the rule does not accept, or mixed dtypes */
    AD_ERR_RANK,           /* rank above AD_MAX_RANK, or a rank the rule does not accept */
    AD_ERR_OVERFLOW,       /* a size computation would overflow */
    AD_ERR_NO_RULE,        /* the called function has no registered rule */
    AD_ERR_RULE_EXISTS,    /* a rule is already registered and replace was not asked */
    AD_ERR_BAD_RULE,       /* the rule struct is malformed (no pullback, bad arity) */
    AD_ERR_ARITY,          /* a call passed a number of inputs the rule does not take */
    AD_ERR_STALE_INPUT,    /* a recorded tensor was written between recording and sweep */
    AD_ERR_BAD_HANDLE,     /* a handle from another tape or from before a reset */
    AD_ERR_NOT_SCALAR,     /* the loss handed to the sweep is not a rank-0 float */
    AD_ERR_NO_GRAD,        /* a sweep over a tape recorded in forward-only mode */
    AD_ERR_CHECK_FAILED,   /* ad_rule_check found a pullback that disagrees */
    AD_ERR_PULLBACK,       /* a pullback or primal failed without saying why */
    AD_ERR_IO,             /* a file could not be opened, read or written (errno text) */
    AD_ERR_TRUNCATED,      /* a file ends before the data its header announces */
    AD_ERR_BAD_MAGIC,      /* a file does not start with its format's magic number */
    AD_ERR_COUNT_MISMATCH, /* counts that must agree do not (images vs labels, sizes) */
    AD_ERR_HEADER_TOO_LARGE, /* a file's header is longer than its format allows */
    AD_ERR_JSON,           /* a file's JSON header is malformed or not of the schema */
    AD_ERR_UNKNOWN_DTYPE,  /* a file stores a dtype adtape does not read */
    AD_ERR_DUPLICATE_NAME, /* a name given or stored twice */
    AD_ERR_BAD_NAME,       /* a name empty, not UTF-8, with a NUL byte, or reserved */
    AD_ERR_METADATA,       /* a file's metadata is malformed or disagrees with the caller */
    AD_ERR_OFFSETS,        /* data offsets out of order, overlapping, with gaps or sizes
                              that do not match dtype and shape */
    AD_ERR_TRAILING_DATA,  /* bytes after the last tensor's data */
    AD_ERR_MISSING_TENSOR, /* a tensor the caller needs is not in the file */
    AD_ERR_EXTRA_TENSOR,   /* the file holds a tensor the caller did not ask for */
    AD_ERR_NONFINITE,      /* anomaly mode: an op's value or a cotangent holds NaN or Inf */
    AD_ERR_MPI,            /* an MPI call failed (adtape-mpi; MPI's own text in the message) */
    AD_ERR_PEER_FAILED,    /* another rank failed this step; the message names the rank */
    AD_ERR_MODEL_MISMATCH, /* ranks hold parameter sets of different count, dtype or shape */
    AD_ERR_REUSED,         /* a memory-saving sweep reused this value's memory (ad_keep) */
    AD_ERR_ATTRS,          /* a call's attributes do not fit its rule: given to a rule that
                              takes none, missing when required, or of another size */
    AD_STATUS_COUNT        /* number of codes; not a code */
} ad_status;

/* Static text for a code ("shape mismatch"); never NULL, even for unknown codes. */
const char *ad_status_str(ad_status code);

/* The calling thread's last error message, or "" if none. The text stays valid until
** the next failing adtape call on this thread. Successful calls do not clear it. */
const char *ad_last_error(void);

/* Records `code` and a printf-style message as the calling thread's last error and
** returns `code`, so user primals and pullbacks can write
**     return ad_fail(AD_ERR_SHAPE, "my_op: %s", why);
** Messages longer than 511 bytes are truncated; a NULL fmt leaves the message empty. */
ad_status ad_fail(ad_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/*
** Allocation hooks. All heap memory adtape uses (tapes, arenas, the rule registry,
** parameter and gradient sets, tensors it allocates) goes through these three
** functions. Set them before the first adtape call of the process, or make the new
** hooks compatible with the old ones (a counting or failing wrapper around malloc):
** memory is freed through whichever hooks are current at the time.
** `user` is passed back unchanged. A NULL hooks pointer restores malloc/realloc/free.
*/
typedef struct ad_allocator {
    void *(*malloc_fn)(size_t size, void *user);
    void *(*realloc_fn)(void *ptr, size_t size, void *user);
    void (*free_fn)(void *ptr, void *user);
    void *user;
} ad_allocator;

/* Installs `hooks` (copied). Returns AD_ERR_INVALID if one of the three is NULL. */
ad_status ad_set_allocator(const ad_allocator *hooks);

#ifdef __cplusplus
}
#endif
#endif /* AD_STATUS_H */
