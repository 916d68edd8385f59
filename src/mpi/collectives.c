/*
** collectives.c: the context's small collectives: broadcasts with their shape check,
** counter sums, the parameter agreement hash, status agreement and the checkpoint
** written by rank 0.
**
** Argument errors (AD_ERR_NULL, AD_ERR_INVALID) are found before any communication
** and returned by the rank that made them; every other failure is agreed on, so all
** ranks return together.
*/
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "../base/base.h"
#include "mpi_internal.h"

void adi_mpi_describe(const ad_tensor *t, int64_t *desc)
{
    desc[0] = t->dtype;
    desc[1] = t->ndim;
    for (int i = 0; i < AD_MAX_RANK; i++)
        desc[2 + i] = i < t->ndim ? t->shape[i] : 1;
}

/* "16x20 f32" for a description, whichever rank it came from. */
static char *desc_text(const int64_t *desc, char *buf, size_t n)
{
    ad_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = (ad_dtype)desc[0];
    t.ndim = desc[1] < 0 || desc[1] > AD_MAX_RANK ? AD_MAX_RANK : (int)desc[1];
    for (int i = 0; i < AD_MAX_RANK; i++)
        t.shape[i] = desc[2 + i];
    return ad_tensor_describe(&t, buf, n);
}

/*
** Rank 0's descriptions go to everyone; each rank finds its first difference, and
** MINLOC over {first differing index, rank} gives every rank the same (index, rank)
** pair, so all of them return the error together and can name both shapes once the
** differing rank has sent its own description of that index.
*/
ad_status adi_mpi_check_descs(MPI_Comm comm, int rank, const int64_t *desc, int64_t *scratch,
                             int n, const char *what)
{
    size_t bytes = (size_t)n * AD_MPI_DESC_WORDS * sizeof *desc;
    if (rank == 0 && n > 0)
        memcpy(scratch, desc, bytes);
    ad_status rc = adi_mpi_bcast_raw(comm, scratch, bytes);
    if (rc)
        return rc;
    int first = n;
    for (int i = 0; i < n && first == n; i++) {
        size_t at = (size_t)i * AD_MPI_DESC_WORDS;
        if (memcmp(desc + at, scratch + at, AD_MPI_DESC_WORDS * sizeof *desc) != 0)
            first = i;
    }
    struct {
        int val, idx;
    } who = {first, rank};
    int err = MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_2INT, MPI_MINLOC, comm);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, what);
    if (who.val >= n)
        return AD_OK;
    int64_t theirs[AD_MPI_DESC_WORDS];
    if (rank == who.idx)
        memcpy(theirs, desc + (size_t)who.val * AD_MPI_DESC_WORDS, sizeof theirs);
    err = MPI_Bcast(theirs, AD_MPI_DESC_WORDS, MPI_INT64_T, who.idx, comm);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, what);
    char a[96], b[96];
    desc_text(theirs, a, sizeof a);
    desc_text(scratch + (size_t)who.val * AD_MPI_DESC_WORDS, b, sizeof b);
    if (n == 1)
        return ad_fail(AD_ERR_MODEL_MISMATCH, "%s: the tensor is %s on rank %d, %s on rank 0",
                       what, a, who.idx, b);
    return ad_fail(AD_ERR_MODEL_MISMATCH, "%s: parameter %d is %s on rank %d, %s on rank 0",
                   what, who.val, a, who.idx, b);
}

ad_status adi_mpi_bcast_raw(MPI_Comm comm, void *bytes, size_t n)
{
    /* MPI counts are ints: large buffers go in pieces of 1 GiB. */
    const size_t piece = (size_t)1 << 30;
    for (size_t done = 0; done < n; done += piece) {
        size_t k = n - done < piece ? n - done : piece;
        int err = MPI_Bcast((char *)bytes + done, (int)k, MPI_BYTE, 0, comm);
        if (err != MPI_SUCCESS)
            return adi_mpi_fail(err, "MPI_Bcast");
    }
    return AD_OK;
}

ad_status ad_mpi_broadcast(ad_mpi *dp, ad_tensor *t)
{
    if (!dp || !t)
        return ad_fail(AD_ERR_NULL, "ad_mpi_broadcast: %s is NULL", !dp ? "dp" : "t");
    int64_t desc[AD_MPI_DESC_WORDS], scratch[AD_MPI_DESC_WORDS];
    adi_mpi_describe(t, desc);
    ad_status rc = adi_mpi_check_descs(dp->comm, dp->rank, desc, scratch, 1, "ad_mpi_broadcast");
    if (rc == AD_OK)
        rc = adi_mpi_bcast_raw(dp->comm, t->data, (size_t)t->size * ad_dtype_size(t->dtype));
    if (rc == AD_OK && dp->rank != 0)
        ad_tensor_touch(t);
    return rc;
}

ad_status ad_mpi_broadcast_bytes(ad_mpi *dp, void *bytes, size_t n)
{
    if (!dp || (!bytes && n > 0))
        return ad_fail(AD_ERR_NULL, "ad_mpi_broadcast_bytes: %s is NULL", !dp ? "dp" : "bytes");
    return adi_mpi_bcast_raw(dp->comm, bytes, n);
}

ad_status ad_mpi_sum_to_root(ad_mpi *dp, const uint64_t *local, uint64_t *total, int n)
{
    if (!dp)
        return ad_fail(AD_ERR_NULL, "ad_mpi_sum_to_root: dp is NULL");
    if (n < 0)
        return ad_fail(AD_ERR_INVALID, "ad_mpi_sum_to_root: n = %d", n);
    if (n > 0 && (!local || (dp->rank == 0 && !total)))
        return ad_fail(AD_ERR_NULL, "ad_mpi_sum_to_root: %s is NULL",
                       !local ? "local" : "total");
    /* MPI forbids aliased send and receive buffers; the same array means "in place". */
    const void *send = dp->rank == 0 && local == total ? MPI_IN_PLACE : (const void *)local;
    int err = MPI_Reduce(send, total, n, MPI_UINT64_T, MPI_SUM, 0, dp->comm);
    return err == MPI_SUCCESS ? AD_OK : adi_mpi_fail(err, "ad_mpi_sum_to_root: MPI_Reduce");
}

/* FNV-1a, 64-bit (Fowler, Noll, Vo): byte by byte, cheap, and enough to tell a
** bit flipped in any parameter; this is a check, not a defence against an adversary. */
static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

ad_status ad_mpi_params_agree(ad_mpi *dp, int *same)
{
    if (!dp || !same)
        return ad_fail(AD_ERR_NULL, "ad_mpi_params_agree: %s is NULL", !dp ? "dp" : "same");
    uint64_t h = 0xcbf29ce484222325ull;
    for (int p = 0; p < dp->n_params; p++) {
        const ad_tensor *t = ad_params_at(dp->ps, p);
        h = fnv1a(h, t->data, (size_t)t->size * ad_dtype_size(t->dtype));
    }
    /* min(h) and min(~h) = ~max(h) in one all-reduce: equal everywhere iff min == max. */
    uint64_t v[2] = {h, ~h};
    int err = MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_UINT64_T, MPI_MIN, dp->comm);
    if (err != MPI_SUCCESS)
        return adi_mpi_fail(err, "ad_mpi_params_agree: MPI_Allreduce");
    *same = v[0] == ~v[1];
    return AD_OK;
}

ad_status ad_mpi_agree(ad_mpi *dp, ad_status local)
{
    if (!dp)
        return ad_fail(AD_ERR_NULL, "ad_mpi_agree: dp is NULL");
    if ((int)local < 0 || (int)local >= (int)AD_STATUS_COUNT) /* still takes part */
        local = ad_fail(AD_ERR_INVALID, "ad_mpi_agree: %d is not a status", (int)local);
    return adi_mpi_agree_on(dp->comm, dp->rank, dp->size, local, "ad_mpi_agree");
}

/* Rank 0's status and the start of its message, sent as one block of bytes. */
typedef struct save_result {
    int32_t code;
    char msg[252];
} save_result;

ad_status ad_mpi_checkpoint_save(ad_mpi *dp, const char *path, const char *const names[],
                                 const ad_checkpoint_extras *extras)
{
    if (!dp)
        return ad_fail(AD_ERR_NULL, "ad_mpi_checkpoint_save: dp is NULL");
    save_result res;
    memset(&res, 0, sizeof res);
    ad_status rc = AD_OK;
    if (dp->rank == 0) {
        rc = ad_checkpoint_save(path, dp->ps, names, extras);
        res.code = (int32_t)rc;
        if (rc)
            snprintf(res.msg, sizeof res.msg, "%s", ad_last_error());
    }
    ad_status sent = adi_mpi_bcast_raw(dp->comm, &res, sizeof res);
    if (sent)
        return sent;
    if (dp->rank == 0 || res.code == AD_OK)
        return rc;
    res.msg[sizeof res.msg - 1] = '\0';
    return ad_fail(AD_ERR_PEER_FAILED, "ad_mpi_checkpoint_save: rank 0 failed: %s: %s",
                   ad_status_str((ad_status)res.code), res.msg);
}
