// Bias + GELU in one pass over an MLP's hidden activations, for CPU float32 inference (AVX2 + FMA): the first
// projection then runs as a plain GEMM (no bias broadcast into its output first, no read-back of it), and this
// pass adds the bias and applies GELU in place while streaming the hidden once.
// Built and loaded by zoo/layers/_native.py; held to torch's GELU by tests/test_native.py.
#include <cstdint>

#include "simd.h"

namespace {

using namespace zoo_simd;

// erf(x) of 8 floats: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), odd extension for x < 0.
inline __m256 erf8(__m256 x) {
    const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.f));
    const __m256 z = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x);
    const __m256 one = _mm256_set1_ps(1.f);
    const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z, one));
    __m256 poly = _mm256_set1_ps(1.061405429f);
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
    const __m256 decay = exp8(_mm256_mul_ps(_mm256_mul_ps(z, z), _mm256_set1_ps(-1.f)));
    const __m256 y = _mm256_fnmadd_ps(_mm256_mul_ps(poly, t), decay, _mm256_set1_ps(1.f));
    return _mm256_or_ps(y, sign);
}

// x * (1 + erf(x / sqrt 2)) / 2
inline __m256 gelu8(__m256 x) {
    const __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(e, _mm256_set1_ps(1.f)));
}

}  // namespace

// x: (rows, cols) contiguous, in place: x = gelu(x + bias) (bias: cols floats, or NULL).
extern "C" void zoo_bias_gelu_f32(float *x, const float *bias, int64_t rows, int64_t cols, int threads) {
    const int64_t full = cols / 8 * 8;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++) {
        float *row = x + r * cols;
        int64_t c = 0;
        for (; c < full; c += 8) {
            __m256 v = _mm256_loadu_ps(row + c);
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + c));
            _mm256_storeu_ps(row + c, gelu8(v));
        }
        if (c < cols) {  // a last partial vector through a zero-padded copy
            alignas(32) float tail[8] = {0};
            for (int64_t j = c; j < cols; j++) tail[j - c] = row[j] + (bias ? bias[j] : 0.f);
            _mm256_store_ps(tail, gelu8(_mm256_load_ps(tail)));
            for (int64_t j = c; j < cols; j++) row[j] = tail[j - c];
        }
    }
}
