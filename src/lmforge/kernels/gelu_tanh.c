/* GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), forward and backward, on fp32
 * or bf16 values (computed in fp32 either way, as PyTorch computes bf16).
 *
 * Written as x * sigmoid(2z), the same function (0.5 (1 + tanh z) = sigmoid(2z)), with exp from
 * a Taylor polynomial on a reduced range, so that the compiler turns each loop into plain vector
 * arithmetic. PyTorch's own kernel spends most of its time in a general-purpose vector tanh.
 *
 * One function per instruction set (AVX-512, AVX2 + FMA, and the compiler's baseline), chosen by
 * the caller, so that a machine with AVX-512 can still run and test the others. Threads: the
 * caller's count, each on one contiguous slice, through OpenMP. Built with -fopenmp, this library
 * needs libgomp.so.1, and the dynamic loader hands it the copy PyTorch has already loaded, so the
 * threads are PyTorch's own. Threads of our own (pthreads) lost more than they won on 2 cores:
 * PyTorch's idle OpenMP workers spin for a while after each matmul and took the second core.
 *
 * Build flags that matter (kernels/build.py): -O3 -fno-trapping-math -ffinite-math-only
 * -fno-signed-zeros. Without the last two, GCC turns the clamp in exp_approx (vector_math.h) into branches that it
 * if-converts by computing both sides, and the side with a constant argument divides every x by
 * 5.5e34: denormal results on every lane, and AVX2 runs ten times slower. A NaN still comes out
 * as NaN (x itself is a factor of both results).
 */
#include "vector_math.h"

#define SQRT_2_OVER_PI_X2 1.5957691216057308f   /* 2 sqrt(2/pi): 2z = x (A + B x^2) */
#define CUBIC_X2 0.0713548162726008f            /* 2 sqrt(2/pi) 0.044715 */

#define GELU_LOOPS(NAME, TARGET, T, LOAD, STORE)                                                     \
    TARGET static void forward_##NAME(const void *xs, void *ys, int64_t n) {                        \
        const T *restrict x = xs;                                                                   \
        T *restrict y = ys;                                                                         \
        for (int64_t i = 0; i < n; i++) {                                                           \
            float v = LOAD(x[i]);                                                                   \
            y[i] = STORE(v / (1.0f + exp_approx(-v * (SQRT_2_OVER_PI_X2 + CUBIC_X2 * v * v))));     \
        }                                                                                           \
    }                                                                                               \
    TARGET static void backward_##NAME(const void *gs, const void *xs, void *dxs, int64_t n) {      \
        const T *restrict g = gs, *restrict x = xs;                                                 \
        T *restrict dx = dxs;                                                                       \
        for (int64_t i = 0; i < n; i++) {                                                           \
            float v = LOAD(x[i]), v2 = v * v;                                                       \
            float s = 1.0f / (1.0f + exp_approx(-v * (SQRT_2_OVER_PI_X2 + CUBIC_X2 * v2)));         \
            /* d/dx x s(2z) = s + x s (1 - s) d(2z)/dx */                                           \
            float slope = s + v * s * (1.0f - s) * (SQRT_2_OVER_PI_X2 + 3.0f * CUBIC_X2 * v2);      \
            dx[i] = STORE(LOAD(g[i]) * slope);                                                      \
        }                                                                                           \
    }

#define GELU_VARIANT(SUFFIX, TARGET)                                                                 \
    GELU_LOOPS(SUFFIX##_f32, TARGET, float, load_f32, store_f32)                                    \
    GELU_LOOPS(SUFFIX##_bf16, TARGET, uint16_t, load_bf16, store_bf16)

typedef void (*forward_fn)(const void *, void *, int64_t);
typedef void (*backward_fn)(const void *, const void *, void *, int64_t);

GELU_VARIANT(baseline, )
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
GELU_VARIANT(avx512, __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))))
GELU_VARIANT(avx2, __attribute__((target("avx2,fma"))))
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
int lmforge_gelu_tanh_best_variant(void) { return BEST_VARIANT; }

/* out = GELU(x), or out = g * GELU'(x) when `backward`; n values, fp32 or (when `bf16`) bf16, in
 * `threads` slices; `variant` 0 (baseline), 1 (AVX2) or 2 (AVX-512), at most the best built. */
void lmforge_gelu_tanh(int backward, int variant, int bf16, const void *g, const void *x, void *out,
                       int64_t n, int threads) {
    if (n <= 0) return;
    if (variant < 0 || variant > BEST_VARIANT) variant = 0;
    if (threads < 1) threads = 1;
    size_t size = bf16 ? 2 : 4;
    int64_t per = ((n + threads - 1) / threads + 31) / 32 * 32; /* whole cache lines in both */
    int count = (int)((n + per - 1) / per);
    forward_fn forward = FORWARD[variant][bf16 != 0];
    backward_fn backward_slice = BACKWARD[variant][bf16 != 0];
#pragma omp parallel for num_threads(count) schedule(static, 1)
    for (int t = 0; t < count; t++) {
        int64_t start = t * per, length = n - start < per ? n - start : per;
        const char *xt = (const char *)x + start * size;
        char *ot = (char *)out + start * size;
        if (backward) backward_slice((const char *)g + start * size, xt, ot, length);
        else forward(xt, ot, length);
    }
}
