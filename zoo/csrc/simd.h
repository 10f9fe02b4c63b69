// AVX2 + FMA helpers shared by zoo's native CPU kernels.
#pragma once
#include <immintrin.h>

namespace zoo_simd {

// exp(x) of 8 floats as 2^n * 2^f with x log2(e) = n + f, |f| <= 1/2: n by rounding with the 1.5 * 2^23 shift
// (its low mantissa bits are then n + 127, the biased exponent of 2^n), f with log2(e) split in two floats, 2^f
// by its degree-6 Taylor polynomial (relative error <= 1.3e-7). x is clamped so that 2^n stays a normal float.
inline __m256 exp8(__m256 x) {
    const __m256 shift = _mm256_set1_ps(12582912.f + 127.f);  // 1.5 * 2^23, with the exponent bias
    const __m256 log2e_hi = _mm256_set1_ps(1.44269504088896341f), log2e_lo = _mm256_set1_ps(1.925963034e-08f);
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
    const __m256 biased = _mm256_fmadd_ps(x, log2e_hi, shift);
    const __m256 n = _mm256_sub_ps(biased, shift);
    const __m256 f = _mm256_fmadd_ps(x, log2e_lo, _mm256_fmsub_ps(x, log2e_hi, n));
    __m256 p = _mm256_set1_ps(1.5403530393381608e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
    const __m256i pow2n = _mm256_slli_epi32(_mm256_castps_si256(biased), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

inline float reduce_max(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

inline float reduce_sum(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_add_ss(m, _mm_shuffle_ps(m, m, 1)));
}

}  // namespace zoo_simd
