/*
** conv_blocks.c: the im2col path's blocks (conv.c), over adtape's threads.
**
** A block is FOLD_COLUMNS or so columns of im2col(x): a few images. Its GEMMs are
** small (W6's first layer: 32 x 1568 x 75), and OpenBLAS gains nothing by splitting
** one of them over two threads (W6 ran at the same speed at one and two threads), so
** with T threads (OpenBLAS's count, or adtape's own if larger) the blocks are shared
** out in T parts on adtape's pool, each with its own column buffer and block, and
** OpenBLAS runs one thread inside the region. Its count is put back after: a GEMM
** another thread of the caller's starts meanwhile runs on one thread too (slower,
** never wrong; a GEMM's bits depend on OpenBLAS's count, as they do anywhere).
**
** Same bits at any thread count: a forward block writes only its own images, col2im
** of a block only its own images' dX, and dW is summed in a number of groups of
** blocks fixed by the batch alone (MAX_GROUPS at most), each group into its own
** partial sum, added to dW in group order at the end; a part takes whole groups.
*/
#include <cblas.h>
#include <pthread.h>

#include "../base/parallel.h"
#include "conv_internal.h"

enum { MAX_GROUPS = 8 };

ad_status adi_conv_scratch(ad_ctx *cx, ad_dtype dt, int64_t rows, int64_t cols, void **out)
{
    ad_tensor *t;
    ad_status rc = ad_scratch(cx, dt, 2, (int64_t[]){rows, cols}, &t);
    if (!rc)
        *out = t->data;
    return rc;
}


/* Block i: its first image and its number of images. */
static int64_t block_images(const adi_conv_plan *p, int64_t i, int64_t *n0)
{
    *n0 = i * p->nb;
    return p->g.n - *n0 < p->nb ? p->g.n - *n0 : p->nb;
}

/* One block's output: blk (Cout x ld) = b 1' (or 0) + W_g cols_g per group. */
static void forward_block(const adi_conv_plan *p, const ad_tensor *w, const ad_tensor *b,
                          const void *cols, void *blk, int64_t ld)
{
    ad_dtype dt = w->dtype;
    size_t es = ad_dtype_size(dt);
    if (b)
        AD_DISPATCH_FLOAT(dt, T, {
            const T *bs = b->data;
            T *ys = blk;
            for (int64_t o = 0; o < p->co; o++)
                for (int64_t q = 0; q < ld; q++)
                    ys[o * ld + q] = bs[o];
        });
    else if (p->kg == 0) /* no input channels: y = 0 (and w's data may be NULL) */
        memset(blk, 0, (size_t)(p->co * ld) * es);
    if (p->kg == 0)
        return;
    for (int64_t g = 0; g < p->groups; g++)
        adi_gemm(dt, false, false, p->cog, ld, p->kg, 1.0,
                 (const char *)w->data + (size_t)(g * p->cog * p->kg) * es, p->kg,
                 (const char *)cols + (size_t)(g * p->kg * ld) * es, ld, b ? 1.0 : 0.0,
                 (char *)blk + (size_t)(g * p->cog * ld) * es, ld);
}

/* Part k's share of a per-part buffer (NULL when the buffer is: no offset on NULL). */
static void *part_buffer(char *base, int64_t k, size_t bytes)
{
    return base ? base + (size_t)k * bytes : NULL;
}

/* Parts lo .. hi of the forward: part k computes blocks [n_blocks k / parts, ...). */
static void forward_parts(void *arg, int64_t lo, int64_t hi)
{
    const adi_conv_blocks *j = arg;
    const adi_conv_plan *p = j->p;
    ad_dtype dt = j->x->dtype;
    int64_t P = p->g.ho * p->g.wo;
    for (int64_t k = lo; k < hi; k++) {
        void *cols = part_buffer(j->cols, k, j->cols_bytes);
        void *blk = part_buffer(j->blk, k, j->blk_bytes);
        for (int64_t i = j->n_blocks * k / j->parts; i < j->n_blocks * (k + 1) / j->parts; i++) {
            int64_t n0, nb = block_images(p, i, &n0), ld = nb * P;
            adi_conv_im2col(dt, &p->g, j->x->data, n0, nb, cols, ld);
            if (nb == 1) { /* the block is image n0's output as it is */
                forward_block(p, j->w, j->b, cols,
                              (char *)j->y + (size_t)(n0 * p->co * P) * ad_dtype_size(dt), ld);
            } else {
                forward_block(p, j->w, j->b, cols, blk, ld);
                adi_conv_scatter_block(dt, p->co, P, n0, nb, blk, j->y);
            }
        }
    }
}

/*
** OpenBLAS's count is process-wide, so the regions of tapes in several threads share
** one "single-threaded" section: the first in saves the count and sets 1, the last out
** puts it back. Inside, the count the blocks share out is the saved one.
*/
static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;
static int blas_depth, blas_saved;

static int blas_enter(void)
{
    pthread_mutex_lock(&blas_lock);
    if (blas_depth++ == 0) {
        blas_saved = openblas_get_num_threads();
        openblas_set_num_threads(1);
    }
    int threads = blas_saved;
    pthread_mutex_unlock(&blas_lock);
    return threads;
}

static void blas_leave(void)
{
    pthread_mutex_lock(&blas_lock);
    if (--blas_depth == 0)
        openblas_set_num_threads(blas_saved);
    pthread_mutex_unlock(&blas_lock);
}

/* Runs fn over the parts: with several blocks, on as many threads as OpenBLAS had (or
** adtape's own, if more; never more parts than items), OpenBLAS on one thread inside,
** so that a block's GEMMs are the same calls at any count; a single block as it is,
** its GEMMs threaded by OpenBLAS. */
static void run_parts(adi_conv_blocks *j, int64_t items, adi_part_fn fn)
{
    if (j->n_blocks < 2) {
        j->parts = 1;
        fn(j, 0, 1);
        return;
    }
    int64_t threads = blas_enter(), own = ad_get_num_threads();
    threads = own > threads ? own : threads;
    j->parts = threads < items ? threads : items;
    if (j->parts > j->max_parts)
        j->parts = j->max_parts;
    adi_parallel_parts((int)j->parts, fn, j);
    blas_leave();
}

/* The most parts a region can have: scratch is taken for that many before it runs. */
static int64_t max_parts(int64_t items)
{
    int64_t t = openblas_get_num_threads(), own = ad_get_num_threads();
    pthread_mutex_lock(&blas_lock);
    if (blas_depth > 0)
        t = blas_saved;
    pthread_mutex_unlock(&blas_lock);
    t = own > t ? own : t;
    return t < items ? t : items;
}

/* Scratch of `parts` column buffers (and blocks, when blocks hold several images). */
static ad_status part_scratch(ad_ctx *cx, adi_conv_blocks *j, int64_t block_rows)
{
    const adi_conv_plan *p = j->p;
    ad_dtype dt = j->x->dtype;
    int64_t P = p->g.ho * p->g.wo, rows = p->g.c * p->g.kh * p->g.kw;
    size_t es = ad_dtype_size(dt);
    void *cols = NULL, *blk = NULL;
    ad_status rc = adi_conv_scratch(cx, dt, j->max_parts * rows, p->nb * P, &cols);
    if (!rc && p->nb > 1)
        rc = adi_conv_scratch(cx, dt, j->max_parts * block_rows, p->nb * P, &blk);
    j->cols = cols, j->cols_bytes = (size_t)(rows * p->nb * P) * es;
    j->blk = blk, j->blk_bytes = (size_t)(block_rows * p->nb * P) * es;
    return rc;
}

ad_status adi_conv_blocks_forward(ad_ctx *cx, const adi_conv_plan *p, const ad_tensor *x,
                                  const ad_tensor *w, const ad_tensor *b, ad_tensor *y)
{
    adi_conv_blocks j = {.p = p, .x = x, .w = w, .b = b, .y = y->data,
                    .n_blocks = (p->g.n + p->nb - 1) / p->nb};
    j.max_parts = max_parts(j.n_blocks);
    ad_status rc = part_scratch(cx, &j, p->co);
    if (rc)
        return rc;
    run_parts(&j, j.n_blocks, forward_parts);
    return AD_OK;
}

/* One block: dW_g (into acc) += dY_g cols_g' (cols = im2col(x)), beta 0 for a group's
** first block; dcols_g = F_g' dY_g, then dX += col2im(dcols). dyb: the block's dY
** (Cout x ld). */
static void backward_block(const adi_conv_blocks *j, const void *dyb, void *cols, void *acc,
                           bool first, int64_t n0, int64_t nb)
{
    const adi_conv_plan *p = j->p;
    ad_dtype dt = j->x->dtype;
    size_t es = ad_dtype_size(dt);
    int64_t ld = nb * p->g.ho * p->g.wo, cog = p->cog, kg = p->kg;
    if (j->dw) {
        adi_conv_im2col(dt, &p->g, j->x->data, n0, nb, cols, ld);
        for (int64_t g = 0; g < p->groups; g++)
            adi_gemm(dt, false, true, cog, kg, ld, 1.0,
                     (const char *)dyb + (size_t)(g * cog * ld) * es, ld,
                     (const char *)cols + (size_t)(g * kg * ld) * es, ld, first ? 0.0 : 1.0,
                     (char *)acc + (size_t)(g * cog * kg) * es, kg);
    }
    if (j->dx) {
        for (int64_t g = 0; g < p->groups; g++)
            adi_gemm(dt, true, false, kg, ld, cog, 1.0,
                     (const char *)j->w->data + (size_t)(g * cog * kg) * es, kg,
                     (const char *)dyb + (size_t)(g * cog * ld) * es, ld, 0.0,
                     (char *)cols + (size_t)(g * kg * ld) * es, ld);
        adi_conv_col2im_add(dt, &p->g, cols, ld, n0, nb, j->dx->data);
    }
}

/* Parts lo .. hi of the backward: part k takes groups [n_groups k / parts, ...), group
** q blocks [n_blocks q / n_groups, ...), summing dW into partial q. */
static void backward_parts(void *arg, int64_t lo, int64_t hi)
{
    const adi_conv_blocks *j = arg;
    const adi_conv_plan *p = j->p;
    ad_dtype dt = j->x->dtype;
    size_t es = ad_dtype_size(dt);
    int64_t P = p->g.ho * p->g.wo;
    for (int64_t k = lo; k < hi; k++) {
        void *cols = part_buffer(j->cols, k, j->cols_bytes);
        void *dyt = part_buffer(j->blk, k, j->blk_bytes);
        for (int64_t q = j->n_groups * k / j->parts; q < j->n_groups * (k + 1) / j->parts; q++) {
            void *acc = part_buffer(j->partial, q, (size_t)(p->co * p->kg) * es);
            int64_t first = j->n_blocks * q / j->n_groups;
            for (int64_t i = first; i < j->n_blocks * (q + 1) / j->n_groups; i++) {
                int64_t n0, nb = block_images(p, i, &n0);
                const void *dyb = (const char *)j->dy + (size_t)(n0 * p->co * P) * es;
                if (nb > 1) {
                    adi_conv_gather_block(dt, p->co, P, n0, nb, j->dy, dyt);
                    dyb = dyt;
                }
                backward_block(j, dyb, cols, acc, i == first, n0, nb);
            }
        }
    }
}

/* dw += the partial sums, in group order. */
static void add_partials(const adi_conv_blocks *j)
{
    int64_t m = j->p->co * j->p->kg;
    AD_DISPATCH_FLOAT(j->x->dtype, T, {
        const T *s = (const T *)j->partial;
        T *d = j->dw->data;
        for (int64_t e = 0; e < m; e++) {
            T sum = s[e];
            for (int64_t q = 1; q < j->n_groups; q++)
                sum += s[q * m + e];
            d[e] += sum;
        }
    });
}

ad_status adi_conv_blocks_backward_prepare(ad_ctx *cx, const adi_conv_plan *p,
                                           const ad_tensor *x, const ad_tensor *fb,
                                           const ad_tensor *dy, ad_tensor *dx,
                                           ad_tensor *dw, adi_conv_blocks *j)
{
    *j = (adi_conv_blocks){.p = p, .x = x, .w = fb, .dy = dy->data, .dx = dx, .dw = dw,
                           .n_blocks = (p->g.n + p->nb - 1) / p->nb};
    j->n_groups = j->n_blocks < MAX_GROUPS ? j->n_blocks : MAX_GROUPS;
    j->max_parts = max_parts(j->n_groups);
    void *partial = NULL;
    ad_status rc = part_scratch(cx, j, p->co);
    if (!rc && dw)
        rc = adi_conv_scratch(cx, x->dtype, j->n_groups * p->co, p->kg, &partial);
    j->partial = partial;
    return rc;
}

void adi_conv_blocks_backward(adi_conv_blocks *j)
{
    run_parts(j, j->n_groups, backward_parts);
    if (j->dw)
        add_partials(j);
}
