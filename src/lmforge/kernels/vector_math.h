/* Scalar helpers that GCC and clang vectorize inside a kernel's loops: exp on a reduced range,
 * and fp32 <-> bf16 as PyTorch converts. Included by the kernels' sources (kernels/build.py
 * hashes this file with each of them, so an edit rebuilds every kernel). */
#ifndef LMFORGE_VECTOR_MATH_H
#define LMFORGE_VECTOR_MATH_H

#include <stdint.h>
#include <string.h>

/* exp(y) = 2^k e^r, k = round(y / ln 2), |r| <= ln(2) / 2. y is clamped to [-86, 80], where the
 * result, and the sigmoid 1 / (1 + exp) built on it, stay normal floats: a denormal costs a
 * microcode assist per lane. Outside, a GELU or SiLU is x or 0 to within 1e-33. */
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

/* fp32 as it is; bf16 widened exactly, and rounded back to nearest-even as PyTorch rounds */
static inline __attribute__((always_inline)) float load_f32(float x) { return x; }
static inline __attribute__((always_inline)) float store_f32(float x) { return x; }
static inline __attribute__((always_inline)) float load_bf16(uint16_t x) {
    uint32_t bits = (uint32_t)x << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
static inline __attribute__((always_inline)) uint16_t store_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

#endif
