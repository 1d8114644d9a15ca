/* Llama's gated feed-forward activation, silu(gate) * up, forward and backward, on fp32 or bf16
 * values (computed in fp32 either way, as PyTorch computes bf16).
 *
 * The input is the fused projection's output, each row [gate | up] of 2 x width values (what
 * models/layers.SwiGLU's c_fc gives); the forward writes a row of width values, the backward
 * both halves of the input's gradient into one [d gate | d up] row. PyTorch runs the same step
 * as a silu and a mul forward, and backward two muls, a silu backward and a concatenation of the
 * two halves' gradients: six passes over memory where this takes two.
 *
 * sigmoid(a) = 1 / (1 + exp(-a)) with exp_approx (vector_math.h): a SiLU within a few float
 * roundings of PyTorch's. One function per instruction set and dtype, threads through OpenMP,
 * build flags: as gelu_tanh.c says.
 */
#include "vector_math.h"

#define SWIGLU_LOOPS(NAME, TARGET, T, LOAD, STORE)                                                   \
    TARGET static void forward_##NAME(const void *hs, void *ys, int64_t rows, int64_t width) {       \
        for (int64_t r = 0; r < rows; r++) {                                                        \
            const T *restrict gate = (const T *)hs + r * 2 * width;                                 \
            const T *restrict up = gate + width;                                                    \
            T *restrict y = (T *)ys + r * width;                                                    \
            for (int64_t j = 0; j < width; j++) {                                                   \
                float a = LOAD(gate[j]);                                                            \
                y[j] = STORE(a / (1.0f + exp_approx(-a)) * LOAD(up[j]));                            \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    TARGET static void backward_##NAME(const void *dys, const void *hs, void *dhs, int64_t rows,     \
                                       int64_t width) {                                             \
        for (int64_t r = 0; r < rows; r++) {                                                        \
            const T *restrict gate = (const T *)hs + r * 2 * width;                                 \
            const T *restrict up = gate + width;                                                    \
            const T *restrict dy = (const T *)dys + r * width;                                      \
            T *restrict dgate = (T *)dhs + r * 2 * width;                                           \
            T *restrict dup = dgate + width;                                                        \
            for (int64_t j = 0; j < width; j++) {                                                   \
                float a = LOAD(gate[j]), g = LOAD(dy[j]);                                           \
                float s = 1.0f / (1.0f + exp_approx(-a));                                           \
                dup[j] = STORE(g * (a * s));                                                        \
                /* d silu / da = s + a s (1 - s) */                                                 \
                dgate[j] = STORE(g * LOAD(up[j]) * (s * (1.0f + a * (1.0f - s))));                  \
            }                                                                                       \
        }                                                                                           \
    }

#define SWIGLU_VARIANT(SUFFIX, TARGET)                                                               \
    SWIGLU_LOOPS(SUFFIX##_f32, TARGET, float, load_f32, store_f32)                                  \
    SWIGLU_LOOPS(SUFFIX##_bf16, TARGET, uint16_t, load_bf16, store_bf16)

typedef void (*forward_fn)(const void *, void *, int64_t, int64_t);
typedef void (*backward_fn)(const void *, const void *, void *, int64_t, int64_t);

SWIGLU_VARIANT(baseline, )
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
SWIGLU_VARIANT(avx512, __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))))
SWIGLU_VARIANT(avx2, __attribute__((target("avx2,fma"))))
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
int lmforge_swiglu_best_variant(void) { return BEST_VARIANT; }

/* Forward: out (rows x width) = silu(h[:, :width]) * h[:, width:] for h (rows x 2 width).
 * Backward (`backward` set): out (rows x 2 width) = the gradient of h, given dy (rows x width).
 * fp32, or bf16 when `bf16`; rows split into `threads` slices; `variant` as gelu_tanh.c's. */
void lmforge_swiglu(int backward, int variant, int bf16, const void *dy, const void *h, void *out,
                    int64_t rows, int64_t width, int threads) {
    if (rows <= 0 || width <= 0) return;
    if (variant < 0 || variant > BEST_VARIANT) variant = 0;
    if (threads < 1) threads = 1;
    size_t size = bf16 ? 2 : 4;
    int64_t per = (rows + threads - 1) / threads;
    int count = (int)((rows + per - 1) / per);
    forward_fn forward = FORWARD[variant][bf16 != 0];
    backward_fn backward_slice = BACKWARD[variant][bf16 != 0];
#pragma omp parallel for num_threads(count) schedule(static, 1)
    for (int t = 0; t < count; t++) {
        int64_t start = t * per, length = rows - start < per ? rows - start : per;
        const char *ht = (const char *)h + start * 2 * width * size;
        if (backward)
            backward_slice((const char *)dy + start * width * size, ht,
                           (char *)out + start * 2 * width * size, length, width);
        else
            forward(ht, (char *)out + start * width * size, length, width);
    }
}
