// AVX2 + FMA helpers shared by zoo's native CPU kernels.
#pragma once
#include <immintrin.h>

namespace zoo_simd {

// exp(x) of 8 floats: n = round(x / ln 2) by the 1.5 * 2^23 shift (the sum's low mantissa bits are then n + 127,
// the biased exponent of 2^n), r = x - n ln 2 with ln 2 split in two floats (Cody-Waite), exp(r) by Cephes expf's
// degree-6 polynomial: about 1 ulp. (A cheaper 2^f Taylor form, 2.2e-7 relative, was measurably less accurate
// end to end: random-init MaxViT-B logits drifted 3.5x further from float64.) x is clamped so that 2^n stays a
// normal float.
inline __m256 exp8(__m256 x) {
    const __m256 shift = _mm256_set1_ps(12582912.f + 127.f);  // 1.5 * 2^23, with the exponent bias
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0296919f)), _mm256_set1_ps(-87.3365447f));
    const __m256 biased = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), shift);
    const __m256 n = _mm256_sub_ps(biased, shift);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
    const __m256i pow2n = _mm256_slli_epi32(_mm256_castps_si256(biased), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
}

// exp for softmax weights: 0 below exp8's range instead of its floor 2^-126. Masked keys (-inf, Swin's -100)
// must weigh exactly 0: a floor weight, once normalised, is a subnormal float, and subnormals slow every multiply
// that meets them 10-100x on x86 (random-init Swin-L at 73x99 ran 5x slower through them).
inline __m256 softmax_exp8(__m256 x) {
    return _mm256_and_ps(exp8(x), _mm256_cmp_ps(x, _mm256_set1_ps(-87.3365447f), _CMP_GE_OQ));
}

// Flush-to-zero and denormals-are-zero for the calling thread while in scope (the MXCSR is per thread and is
// restored on exit, so PyTorch's own ops are untouched). A kernel's products of tiny softmax weights and values
// (e^-87 * 0.01) are subnormal, and every multiply that makes or meets a subnormal costs 10-100x on x86; flushed,
// such a term is 0 instead of < 1.2e-38, far below float32 rounding of any output.
class FlushDenormals {
public:
    FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ (bit 15) | DAZ (bit 6)
    ~FlushDenormals() { _mm_setcsr(saved_); }
    FlushDenormals(const FlushDenormals &) = delete;
    FlushDenormals &operator=(const FlushDenormals &) = delete;

private:
    unsigned int saved_;
};

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
