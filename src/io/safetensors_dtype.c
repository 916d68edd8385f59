/*
** safetensors_dtype.c: the dtypes the safetensors format defines, with the width of
** one element, and the two of them adtape loads.
**
** The list is the reference implementation's `Dtype` enum (huggingface/safetensors,
** safetensors/src/tensor.rs, release 0.6: BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2,
** F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64, with the
** widths of its `bitsize`), and F8_E4M3FNUZ and F8_E5M2FNUZ, which later releases
** define (their Python bindings map torch.float8_e4m3fnuz and float8_e5m2fnuz to
** them). A name outside the list is a malformed file (AD_ERR_UNKNOWN_DTYPE); a name in
** it that adtape has no tensor for is a valid file adtape cannot load
** (AD_ERR_UNSUPPORTED_DTYPE), and its entry's size is still checked with its width so
** that the whole file is validated.
**
** Widths are in bits because F4 (two per byte) and the F6 types pack below a byte;
** the reference counts a tensor's bytes as elements * bits / 8 and refuses a tensor
** whose bits are not a whole number of bytes.
*/
#include <string.h>

#include "checkpoint_internal.h"

static const adi_st_dtype dtypes[] = {
    {"BOOL", 8, 0},         /* stored as one byte */
    {"F4", 4, 0},           /* OCP microscaling E2M1 */
    {"F6_E2M3", 6, 0},      /* OCP microscaling */
    {"F6_E3M2", 6, 0},
    {"U8", 8, 0},
    {"I8", 8, 0},
    {"F8_E5M2", 8, 0},
    {"F8_E4M3", 8, 0},      /* torch.float8_e4m3fn */
    {"F8_E8M0", 8, 0},      /* microscaling scales: a power of two */
    {"F8_E4M3FNUZ", 8, 0},
    {"F8_E5M2FNUZ", 8, 0},
    {"I16", 16, 0},
    {"U16", 16, 0},
    {"F16", 16, 0},
    {"BF16", 16, 0},
    {"I32", 32, 0},         /* not AD_I32: a parameter is never int32 */
    {"U32", 32, 0},
    {"F32", 32, AD_F32},
    {"C64", 64, 0},         /* complex: two F32 */
    {"F64", 64, AD_F64},
    {"I64", 64, 0},         /* PyTorch's integer buffers, e.g. num_batches_tracked */
    {"U64", 64, 0},
};

const adi_st_dtype *adi_st_dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dtypes[i].name, name))
            return &dtypes[i];
    return NULL;
}
