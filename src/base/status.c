/*
** status.c: result-code texts and the calling thread's last error.
*/
#include <stdarg.h>
#include <stdio.h>

#include "ad_status.h"

enum { AD_MESSAGE_MAX = 512 };

/* Thread-local so two threads training their own tapes never see each other's text. */
static _Thread_local char last_error[AD_MESSAGE_MAX];

/* Every code and its text; codes are sparse (class | number << 8), so a short scan. */
static const struct {
    ad_status code;
    const char *text;
} status_text[] = {
    {AD_OK, "ok"},
    {AD_ERR_NOMEM, "out of memory"},
    {AD_ERR_NULL, "NULL argument"},
    {AD_ERR_INVALID, "invalid argument"},
    {AD_ERR_SHAPE, "shape mismatch"},
    {AD_ERR_DTYPE, "dtype not accepted"},
    {AD_ERR_RANK, "rank not accepted"},
    {AD_ERR_OVERFLOW, "size overflow"},
    {AD_ERR_NO_RULE, "no rule registered"},
    {AD_ERR_RULE_EXISTS, "rule already registered"},
    {AD_ERR_BAD_RULE, "malformed rule"},
    {AD_ERR_ARITY, "wrong number of inputs"},
    {AD_ERR_STALE_INPUT, "input modified after recording"},
    {AD_ERR_BAD_HANDLE, "handle from another tape or before a reset"},
    {AD_ERR_NOT_SCALAR, "loss is not a rank-0 float"},
    {AD_ERR_ATTRS, "attributes do not fit the rule"},
    {AD_ERR_NO_GRAD, "tape recorded without pullback state"},
    {AD_ERR_CHECK_FAILED, "rule check failed"},
    {AD_ERR_PULLBACK, "pullback failed"},
    {AD_ERR_IO, "input/output error"},
    {AD_ERR_TRUNCATED, "file truncated"},
    {AD_ERR_BAD_MAGIC, "wrong magic number"},
    {AD_ERR_COUNT_MISMATCH, "counts do not match"},
    {AD_ERR_HEADER_TOO_LARGE, "file header too large"},
    {AD_ERR_JSON, "malformed file header"},
    {AD_ERR_UNKNOWN_DTYPE, "dtype not defined by the file format"},
    {AD_ERR_DUPLICATE_NAME, "duplicate name"},
    {AD_ERR_BAD_NAME, "invalid name"},
    {AD_ERR_METADATA, "bad or mismatching metadata"},
    {AD_ERR_OFFSETS, "bad data offsets"},
    {AD_ERR_TRAILING_DATA, "trailing data after the last tensor"},
    {AD_ERR_MISSING_TENSOR, "tensor missing from file"},
    {AD_ERR_EXTRA_TENSOR, "unexpected tensor in file"},
    {AD_ERR_UNSUPPORTED_DTYPE, "dtype in file not loaded by adtape"},
    {AD_ERR_NONFINITE, "non-finite value (NaN or Inf)"},
    {AD_ERR_MPI, "MPI call failed"},
    {AD_ERR_PEER_FAILED, "another rank failed"},
    {AD_ERR_REUSED, "memory reused by a memory-saving sweep"},
    {AD_ERR_MODEL_MISMATCH, "ranks hold different models"},
};

static const char *const class_text[] = {
    [AD_CLASS_OK] = "ok",
    [AD_CLASS_MEMORY] = "memory",
    [AD_CLASS_ARGUMENT] = "argument",
    [AD_CLASS_RULE] = "rule",
    [AD_CLASS_SWEEP] = "sweep",
    [AD_CLASS_FILE] = "file",
    [AD_CLASS_MPI] = "mpi",
};

const char *ad_status_str(ad_status code)
{
    for (size_t i = 0; i < sizeof status_text / sizeof status_text[0]; i++)
        if (status_text[i].code == code)
            return status_text[i].text;
    return "unknown status";
}

int ad_status_class(ad_status code)
{
    for (size_t i = 0; i < sizeof status_text / sizeof status_text[0]; i++)
        if (status_text[i].code == code)
            return (int)code & 0xff;
    return -1;
}

const char *ad_status_class_str(int cls)
{
    if (cls < 0 || cls >= (int)(sizeof class_text / sizeof class_text[0]))
        return "unknown class";
    return class_text[cls];
}

const char *ad_last_error(void)
{
    return last_error;
}

ad_status ad_fail(ad_status code, const char *fmt, ...)
{
    va_list ap;
    if (!fmt) {
        last_error[0] = '\0';
        return code;
    }
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}
