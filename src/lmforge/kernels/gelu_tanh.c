/* GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), forward and backward, fp32.
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
 * -fno-signed-zeros. Without the last two, GCC turns the clamp below into branches that it
 * if-converts by computing both sides, and the side with a constant argument divides every x by
 * 5.5e34: denormal results on every lane, and AVX2 runs ten times slower. A NaN still comes out
 * as NaN (x itself is a factor of both results).
 */
#include <stdint.h>
#include <string.h>

#define SQRT_2_OVER_PI_X2 1.5957691216057308f   /* 2 sqrt(2/pi): 2z = x (A + B x^2) */
#define CUBIC_X2 0.0713548162726008f            /* 2 sqrt(2/pi) 0.044715 */

/* exp(y) = 2^k e^r, k = round(y / ln 2), |r| <= ln(2) / 2. y is clamped to [-86, 80], where the
 * result, and the sigmoid 1 / (1 + exp) built on it, stay normal floats: a denormal costs a
 * microcode assist per lane. Outside, the GELU is x or 0 to within 1e-34. */
static inline __attribute__((always_inline)) float exp_approx(float y) {
    y = y < -86.0f ? -86.0f : (y > 80.0f ? 80.0f : y);
    float k = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = y - k * 0.693145751953125f;                               /* ln 2, high bits */
    r = r - k * 1.428606765330187045e-06f;                              /* ln 2, low bits */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#define GELU_LOOPS(SUFFIX, TARGET)                                                                   \
    TARGET static void forward_##SUFFIX(const float *restrict x, float *restrict y, int64_t n) {    \
        for (int64_t i = 0; i < n; i++) {                                                           \
            float v = x[i];                                                                         \
            y[i] = v / (1.0f + exp_approx(-v * (SQRT_2_OVER_PI_X2 + CUBIC_X2 * v * v)));            \
        }                                                                                           \
    }                                                                                               \
    TARGET static void backward_##SUFFIX(const float *restrict g, const float *restrict x,          \
                                         float *restrict dx, int64_t n) {                           \
        for (int64_t i = 0; i < n; i++) {                                                           \
            float v = x[i], v2 = v * v;                                                             \
            float s = 1.0f / (1.0f + exp_approx(-v * (SQRT_2_OVER_PI_X2 + CUBIC_X2 * v2)));         \
            /* d/dx x s(2z) = s + x s (1 - s) d(2z)/dx */                                           \
            dx[i] = g[i] * (s + v * s * (1.0f - s) * (SQRT_2_OVER_PI_X2 + 3.0f * CUBIC_X2 * v2));   \
        }                                                                                           \
    }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
GELU_LOOPS(avx512, __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))))
GELU_LOOPS(avx2, __attribute__((target("avx2,fma"))))
#define HAS_X86_VARIANTS 1
#endif
GELU_LOOPS(baseline, )

typedef struct {
    int backward, variant;
    const float *g, *x;
    float *out;
    int64_t n;
} slice;

static void run(const slice *s) {
    switch (s->variant) {
#ifdef HAS_X86_VARIANTS
    case 2:
        if (s->backward) backward_avx512(s->g, s->x, s->out, s->n);
        else forward_avx512(s->x, s->out, s->n);
        return;
    case 1:
        if (s->backward) backward_avx2(s->g, s->x, s->out, s->n);
        else forward_avx2(s->x, s->out, s->n);
        return;
#endif
    default:
        if (s->backward) backward_baseline(s->g, s->x, s->out, s->n);
        else forward_baseline(s->x, s->out, s->n);
    }
}

/* Which variants this build has: 2 = AVX-512, 1 = AVX2, 0 = baseline only. */
int lmforge_gelu_tanh_best_variant(void) {
#ifdef HAS_X86_VARIANTS
    return 2;
#else
    return 0;
#endif
}

/* out = GELU(x), or out = g * GELU'(x) when backward; n floats in `threads` slices. */
void lmforge_gelu_tanh(int backward, int variant, const float *g, const float *x, float *out, int64_t n,
                       int threads) {
    if (n <= 0) return;
    if (threads < 1) threads = 1;
    int64_t per = ((n + threads - 1) / threads + 15) / 16 * 16; /* whole cache lines */
    int count = (int)((n + per - 1) / per);
#pragma omp parallel for num_threads(count) schedule(static, 1)
    for (int t = 0; t < count; t++) {
        int64_t start = t * per, length = n - start < per ? n - start : per;
        slice s = {backward, variant, g ? g + start : NULL, x + start, out + start, length};
        run(&s);
    }
}
