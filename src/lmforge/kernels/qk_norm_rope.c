/* The heads of a fused q/k/v projection made ready for attention, forward and backward, on fp32
 * or bf16 values (computed in fp32 either way): each query and key head RMS-normalised with its
 * gain (QK-norm, optional), then rotated by its position (rotary embedding, rotate-half form,
 * optional), and every head written out in the (batch, head, time, dim) layout attention reads.
 *
 * PyTorch runs this as a dozen small kernels over the queries and keys (a power, a mean, an
 * add, a reciprocal square root, three products, a roll, a fused multiply-add, the splits and
 * their concatenating backward): on gpt-nano (4 heads of 32, 16 x 64 tokens) 3 ms of every
 * layer's forward and backward on 2 cores, where this takes a tenth of it.
 *
 * Input row (one per token): nq query heads, nkv key heads, nkv value heads, `dim` values each.
 * Rotation (rotate-half): out[j] = x[j] cos[j] - x[j + h] sin[j] and
 * out[j + h] = x[j + h] cos[j + h] + x[j] sin[j + h] for j < h = dim / 2, with cos and sin rows
 * of `dim` values per position (per batch row too when cos_batch_stride is not 0).
 * One function per instruction set and dtype, threads through OpenMP: as gelu_tanh.c says.
 */
#include <math.h>
#include <stdlib.h>

#include "vector_math.h"

#define MAX_DIM 512
#define LANES 16

struct heads {
    int64_t batch, time;
    int nq, nkv, dim;
    const float *gains; /* [2][dim]: queries', then keys'; NULL: no norm */
    float eps;
    const float *cos, *sin; /* NULL: no rotation */
    int64_t cos_batch_stride;
};

/* sum of x[j] y[j] in LANES partial sums, so that the compiler can vectorize without reassociating */
static inline __attribute__((always_inline)) float sum_of_products(const float *x, const float *y, int dim) {
    float partial[LANES] = {0};
    int j = 0;
    for (; j + LANES <= dim; j += LANES)
        for (int l = 0; l < LANES; l++) partial[l] += x[j + l] * y[j + l];
    float total = 0.0f;
    for (int l = 0; l < LANES; l++) total += partial[l];
    for (; j < dim; j++) total += x[j] * y[j];
    return total;
}

/* where head h of token (b, t) goes in the (batch, head, time, dim) outputs; *kind: 0 q, 1 k, 2 v */
static inline int64_t out_offset(const struct heads *a, int64_t b, int64_t t, int h, int *kind) {
    int n = a->nq, head = h;
    *kind = 0;
    if (h >= a->nq) {
        n = a->nkv;
        head = h - a->nq;
        *kind = 1;
        if (head >= a->nkv) {
            head -= a->nkv;
            *kind = 2;
        }
    }
    return ((b * n + head) * a->time + t) * a->dim;
}

#define HEADS_LOOPS(NAME, TARGET, T, LOAD, STORE)                                                    \
    TARGET static void forward_##NAME(const struct heads *a, const void *qkv, void *const outs[3],  \
                                      int64_t row0, int64_t row1) {                                 \
        float x[MAX_DIM];                                                                           \
        const int dim = a->dim, half = dim / 2, heads = a->nq + 2 * a->nkv;                         \
        for (int64_t row = row0; row < row1; row++) {                                               \
            const int64_t b = row / a->time, t = row % a->time;                                     \
            const float *c = a->cos ? a->cos + b * a->cos_batch_stride + t * dim : NULL;            \
            const float *s = a->cos ? a->sin + b * a->cos_batch_stride + t * dim : NULL;            \
            for (int h = 0; h < heads; h++) {                                                       \
                const T *restrict src = (const T *)qkv + (row * heads + h) * dim;                   \
                int kind;                                                                           \
                const int64_t offset = out_offset(a, b, t, h, &kind);                               \
                T *restrict dst = (T *)outs[kind] + offset;                                         \
                if (kind == 2) {                                                                    \
                    for (int j = 0; j < dim; j++) dst[j] = src[j];                                  \
                    continue;                                                                       \
                }                                                                                   \
                for (int j = 0; j < dim; j++) x[j] = LOAD(src[j]);                                  \
                if (a->gains) {                                                                     \
                    const float r = 1.0f / sqrtf(sum_of_products(x, x, dim) / dim + a->eps);            \
                    const float *restrict g = a->gains + kind * dim;                                \
                    for (int j = 0; j < dim; j++) x[j] = x[j] * r * g[j];                           \
                }                                                                                   \
                if (c) {                                                                            \
                    for (int j = 0; j < half; j++)                                                  \
                        dst[j] = STORE(x[j] * c[j] - x[j + half] * s[j]);                           \
                    for (int j = 0; j < half; j++)                                                  \
                        dst[j + half] = STORE(x[j + half] * c[j + half] + x[j] * s[j + half]);      \
                } else {                                                                            \
                    for (int j = 0; j < dim; j++) dst[j] = STORE(x[j]);                             \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    TARGET static void backward_##NAME(const struct heads *a, const void *qkv,                      \
                                       const void *const grads[3], void *dqkv, float *dgains,       \
                                       int64_t row0, int64_t row1) {                                \
        float x[MAX_DIM], dn[MAX_DIM];                                                              \
        const int dim = a->dim, half = dim / 2, heads = a->nq + 2 * a->nkv;                         \
        for (int64_t row = row0; row < row1; row++) {                                               \
            const int64_t b = row / a->time, t = row % a->time;                                     \
            const float *c = a->cos ? a->cos + b * a->cos_batch_stride + t * dim : NULL;            \
            const float *s = a->cos ? a->sin + b * a->cos_batch_stride + t * dim : NULL;            \
            for (int h = 0; h < heads; h++) {                                                       \
                const int64_t at = (row * heads + h) * dim;                                         \
                int kind;                                                                           \
                const int64_t offset = out_offset(a, b, t, h, &kind);                               \
                const T *restrict dz = (const T *)grads[kind] + offset;                             \
                T *restrict dx = (T *)dqkv + at;                                                    \
                if (kind == 2) {                                                                    \
                    for (int j = 0; j < dim; j++) dx[j] = dz[j];                                    \
                    continue;                                                                       \
                }                                                                                   \
                if (c) { /* the rotation's transpose */                                             \
                    for (int j = 0; j < half; j++)                                                  \
                        dn[j] = LOAD(dz[j]) * c[j] + LOAD(dz[j + half]) * s[j + half];              \
                    for (int j = 0; j < half; j++)                                                  \
                        dn[j + half] = LOAD(dz[j + half]) * c[j + half] - LOAD(dz[j]) * s[j];       \
                } else {                                                                            \
                    for (int j = 0; j < dim; j++) dn[j] = LOAD(dz[j]);                              \
                }                                                                                   \
                if (!a->gains) {                                                                    \
                    for (int j = 0; j < dim; j++) dx[j] = STORE(dn[j]);                             \
                    continue;                                                                       \
                }                                                                                   \
                const T *restrict src = (const T *)qkv + at;                                        \
                for (int j = 0; j < dim; j++) x[j] = LOAD(src[j]);                                  \
                const float r = 1.0f / sqrtf(sum_of_products(x, x, dim) / dim + a->eps);                \
                const float *restrict g = a->gains + kind * dim;                                    \
                float *restrict dg = dgains + kind * dim;                                           \
                /* y = x r (normalised), dy = dn g; dx = r (dy - y mean(dy y)) */                   \
                for (int j = 0; j < dim; j++) {                                                     \
                    x[j] *= r;                                                                      \
                    dg[j] += dn[j] * x[j];                                                          \
                    dn[j] *= g[j];                                                                  \
                }                                                                                   \
                const float mean = sum_of_products(dn, x, dim) / dim;                               \
                for (int j = 0; j < dim; j++) dx[j] = STORE(r * (dn[j] - x[j] * mean));             \
            }                                                                                       \
        }                                                                                           \
    }

#define HEADS_VARIANT(SUFFIX, TARGET)                                                                \
    HEADS_LOOPS(SUFFIX##_f32, TARGET, float, load_f32, store_f32)                                   \
    HEADS_LOOPS(SUFFIX##_bf16, TARGET, uint16_t, load_bf16, store_bf16)

typedef void (*forward_fn)(const struct heads *, const void *, void *const[3], int64_t, int64_t);
typedef void (*backward_fn)(const struct heads *, const void *, const void *const[3], void *, float *,
                            int64_t, int64_t);

HEADS_VARIANT(baseline, )
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
HEADS_VARIANT(avx512, __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))))
HEADS_VARIANT(avx2, __attribute__((target("avx2,fma"))))
#define BEST_VARIANT 2
static const forward_fn FORWARD[3][2] = {{forward_baseline_f32, forward_baseline_bf16},
                                         {forward_avx2_f32, forward_avx2_bf16},
                                         {forward_avx512_f32, forward_avx512_bf16}};
static const backward_fn BACKWARD[3][2] = {{backward_baseline_f32, backward_baseline_bf16},
                                           {backward_avx2_f32, backward_avx2_bf16},
                                           {backward_avx512_f32, backward_avx512_bf16}};
#else
#define BEST_VARIANT 0
static const forward_fn FORWARD[1][2] = {{forward_baseline_f32, forward_baseline_bf16}};
static const backward_fn BACKWARD[1][2] = {{backward_baseline_f32, backward_baseline_bf16}};
#endif

/* Which variants this build has: 2 = AVX-512 and AVX2, 0 = the baseline only. */
int lmforge_qk_norm_rope_best_variant(void) { return BEST_VARIANT; }
/* The largest head size the kernel takes. */
int lmforge_qk_norm_rope_max_dim(void) { return MAX_DIM; }

/* Forward: qkv (batch, time, nq + 2 nkv, dim) -> q (batch, nq, time, dim), k and v (batch, nkv,
 * time, dim). Backward (`backward` set): the gradients of q, k, v (same layouts) -> dqkv (qkv's
 * layout) and dgains ([2][dim], fp32, overwritten; only with gains). `dim` even, <= MAX_DIM.
 * Returns 0, or -1 when the arguments are out of range or memory ran out (nothing written). */
int lmforge_qk_norm_rope(int backward, int variant, int bf16, const void *qkv, void *q, void *k, void *v,
                         const void *dq, const void *dk, const void *dv, void *dqkv, float *dgains,
                         int64_t batch, int64_t time, int nq, int nkv, int dim, const float *gains,
                         float eps, const float *cos, const float *sin, int64_t cos_batch_stride,
                         int threads) {
    if (dim <= 0 || dim > MAX_DIM || dim % 2 || nq < 1 || nkv < 1 || batch < 0 || time < 0) return -1;
    if (variant < 0 || variant > BEST_VARIANT) variant = 0;
    if (threads < 1) threads = 1;
    const struct heads a = {batch, time, nq, nkv, dim, gains, eps, cos, sin, cos_batch_stride};
    const int64_t rows = batch * time;
    if (rows == 0) {
        if (backward && gains)
            for (int j = 0; j < 2 * dim; j++) dgains[j] = 0.0f;
        return 0;
    }
    const int64_t per = (rows + threads - 1) / threads;
    const int count = (int)((rows + per - 1) / per);
    float *partial = NULL;
    if (backward && gains) {
        partial = calloc((size_t)count * 2 * dim, sizeof(float));
        if (!partial) return -1;
    }
    void *const outs[3] = {q, k, v};
    const void *const grads[3] = {dq, dk, dv};
    const forward_fn forward_rows = FORWARD[variant][bf16 != 0];
    const backward_fn backward_rows = BACKWARD[variant][bf16 != 0];
#pragma omp parallel for num_threads(count) schedule(static, 1)
    for (int t = 0; t < count; t++) {
        const int64_t start = t * per, end = rows - start < per ? rows : start + per;
        if (backward)
            backward_rows(&a, qkv, grads, dqkv, partial ? partial + (int64_t)t * 2 * dim : NULL, start, end);
        else
            forward_rows(&a, qkv, outs, start, end);
    }
    if (partial) {
        for (int j = 0; j < 2 * dim; j++) dgains[j] = 0.0f;
        for (int t = 0; t < count; t++)
            for (int j = 0; j < 2 * dim; j++) dgains[j] += partial[(int64_t)t * 2 * dim + j];
        free(partial);
    }
    return 0;
}
