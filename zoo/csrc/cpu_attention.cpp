// Fused softmax attention over short sequences for CPU float32 inference (AVX2 + FMA).
//
// One call computes softmax(q k^T * scale + bias) v for every (group, head) pair: the scores of a pair stay in
// an on-stack buffer (at most MAX_KEYS keys), so the (pairs, Lq, Lk) score tensor of the batched-GEMM path is
// never written, and q, k, v are read in place (the views a fused qkv projection gives, no copies). Two entry
// points: zoo_short_attention_f32 (strided groups, dense attention) and zoo_window_attention_f32 (windows of a
// token map gathered through an index, so the roll + partition and its inverse are never materialised).
// Built and loaded by zoo/layers/_native.py; held to the reference path by tests/test_native.py.
#include <cmath>
#include <cstdint>

#include "simd.h"

namespace {

using namespace zoo_simd;

constexpr int64_t MAX_KEYS = 256;
constexpr int64_t MAX_QK_DIM = 64;

// In place, for R rows at once: row[r][0:n] = softmax(row[r][0:n] + bias[r][0:n] + mask[r][0:n]) (bias and mask
// rows optional). The rows go through each step together so their dependency chains (max, exp, sum) overlap;
// everything stays in vector registers (a scalar store into data a vector load reads back stalls store
// forwarding). Lanes past n count as -inf.
template <int R>
inline void softmax_rows(float *const *row, const float *const *bias, const float *const *mask, int64_t n) {
    const int64_t full = n / 8, nv = (n + 7) / 8;
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - full * 8)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 m[R], sum[R];
    for (int r = 0; r < R; r++) m[r] = _mm256_set1_ps(-INFINITY), sum[r] = _mm256_setzero_ps();
    for (int64_t t = 0; t < nv; t++) {
        for (int r = 0; r < R; r++) {
            __m256 x = _mm256_load_ps(row[r] + 8 * t);
            if (t < full) {
                if (bias[r]) x = _mm256_add_ps(x, _mm256_loadu_ps(bias[r] + 8 * t));
                if (mask[r]) x = _mm256_add_ps(x, _mm256_loadu_ps(mask[r] + 8 * t));
            } else {
                if (bias[r]) x = _mm256_add_ps(x, _mm256_maskload_ps(bias[r] + 8 * t, tail));
                if (mask[r]) x = _mm256_add_ps(x, _mm256_maskload_ps(mask[r] + 8 * t, tail));
                x = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, _mm256_castsi256_ps(tail));
            }
            _mm256_store_ps(row[r] + 8 * t, x);
            m[r] = _mm256_max_ps(m[r], x);
        }
    }
    for (int r = 0; r < R; r++) m[r] = _mm256_set1_ps(reduce_max(m[r]));
    for (int64_t t = 0; t < nv; t++) {
        for (int r = 0; r < R; r++) {
            const __m256 e = exp8(_mm256_sub_ps(_mm256_load_ps(row[r] + 8 * t), m[r]));
            _mm256_store_ps(row[r] + 8 * t, e);
            sum[r] = _mm256_add_ps(sum[r], e);
        }
    }
    for (int r = 0; r < R; r++) sum[r] = _mm256_set1_ps(1.f / reduce_sum(sum[r]));
    for (int64_t t = 0; t < nv; t++)
        for (int r = 0; r < R; r++)
            _mm256_store_ps(row[r] + 8 * t, _mm256_mul_ps(_mm256_load_ps(row[r] + 8 * t), sum[r]));
}

// One (group, head): row i of q / k / v / out lives at base + row(i) * stride, where row(i) = tokens[i] when a
// token index is given (gathered windows) and i otherwise. bias and mask rows: base + i * stride (optional).
// q_bias / k_bias / v_bias (optional): the projection's bias, added to every row as it is read.
struct Pair {
    const float *q, *k, *v, *bias, *mask, *q_bias, *k_bias, *v_bias;
    float *out;
    const int64_t *tokens;
    int64_t q_row, k_row, v_row, out_row, bias_row, mask_row;
    int64_t row(int64_t i) const { return tokens ? tokens[i] : i; }
};

// k is packed as scale * k^T, v as contiguous rows and each block of q rows as well (projection biases added on
// the way); scores go in blocks of 4 query rows x 16 keys (8 accumulators, each k^T load feeds 4 FMAs); then the
// 4 rows' softmax and their value sums two rows at a time (DV = value dim / 8 is a template argument so those
// accumulators stay in registers).
template <int DV>
void attend(const Pair &p, int64_t Lq, int64_t Lk, int64_t d, float scale) {
    const int64_t padded = (Lk + 7) / 8 * 8;
    alignas(32) float kT[MAX_QK_DIM * (MAX_KEYS + 16)];
    alignas(32) float v_packed[MAX_KEYS * 64];
    alignas(32) float scores[4][MAX_KEYS + 16];
    for (int64_t j = 0; j < Lk; j++) {
        const float *k = p.k + p.row(j) * p.k_row, *v = p.v + p.row(j) * p.v_row;
        for (int64_t c = 0; c < d; c++) kT[c * padded + j] = (p.k_bias ? k[c] + p.k_bias[c] : k[c]) * scale;
        for (int t = 0; t < DV; t++) {
            __m256 vv = _mm256_loadu_ps(v + 8 * t);
            if (p.v_bias) vv = _mm256_add_ps(vv, _mm256_loadu_ps(p.v_bias + 8 * t));
            _mm256_store_ps(v_packed + (j * DV + t) * 8, vv);
        }
    }
    for (int64_t c = 0; c < d; c++)
        for (int64_t j = Lk; j < padded; j++) kT[c * padded + j] = 0.f;

    for (int64_t i = 0; i < Lq; i += 4) {
        const int rows = Lq - i < 4 ? (int)(Lq - i) : 4;
        const float *q[4], *bias[4], *mask[4];
        float *score_rows[4];
        alignas(32) float q_block[4][MAX_QK_DIM];
        for (int r = 0; r < 4; r++) {  // rows past Lq repeat the last one: computed, never stored
            const int64_t ir = i + (r < rows ? r : rows - 1);
            q[r] = p.q + p.row(ir) * p.q_row;
            if (p.q_bias) {
                for (int64_t c = 0; c < d; c++) q_block[r][c] = q[r][c] + p.q_bias[c];
                q[r] = q_block[r];
            }
            bias[r] = p.bias ? p.bias + ir * p.bias_row : nullptr;
            mask[r] = p.mask ? p.mask + ir * p.mask_row : nullptr;
            score_rows[r] = scores[r];
        }
        int64_t b = 0;
        for (; b + 16 <= padded; b += 16) {
            __m256 s[4][2];
            for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = _mm256_setzero_ps();
            const float *kr = kT + b;
            for (int64_t c = 0; c < d; c++, kr += padded) {
                const __m256 k0 = _mm256_load_ps(kr), k1 = _mm256_load_ps(kr + 8);
                for (int r = 0; r < 4; r++) {
                    const __m256 a = _mm256_broadcast_ss(q[r] + c);
                    s[r][0] = _mm256_fmadd_ps(a, k0, s[r][0]);
                    s[r][1] = _mm256_fmadd_ps(a, k1, s[r][1]);
                }
            }
            for (int r = 0; r < 4; r++) {
                _mm256_store_ps(scores[r] + b, s[r][0]);
                _mm256_store_ps(scores[r] + b + 8, s[r][1]);
            }
        }
        if (b < padded) {  // a last block of 8 keys
            __m256 s[4];
            for (int r = 0; r < 4; r++) s[r] = _mm256_setzero_ps();
            const float *kr = kT + b;
            for (int64_t c = 0; c < d; c++, kr += padded) {
                const __m256 k0 = _mm256_load_ps(kr);
                for (int r = 0; r < 4; r++) s[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[r] + c), k0, s[r]);
            }
            for (int r = 0; r < 4; r++) _mm256_store_ps(scores[r] + b, s[r]);
        }
        softmax_rows<4>(score_rows, bias, mask, Lk);

        for (int r = 0; r < rows; r += 2) {
            const bool two = r + 1 < rows;
            const float *w0 = scores[r], *w1 = scores[two ? r + 1 : r];
            __m256 o0[DV], o1[DV];
            for (int t = 0; t < DV; t++) o0[t] = o1[t] = _mm256_setzero_ps();
            const float *vr = v_packed;
            for (int64_t j = 0; j < Lk; j++, vr += DV * 8) {
                const __m256 a0 = _mm256_broadcast_ss(w0 + j), a1 = _mm256_broadcast_ss(w1 + j);
                for (int t = 0; t < DV; t++) {
                    const __m256 vv = _mm256_load_ps(vr + 8 * t);
                    o0[t] = _mm256_fmadd_ps(a0, vv, o0[t]);
                    o1[t] = _mm256_fmadd_ps(a1, vv, o1[t]);
                }
            }
            float *o = p.out + p.row(i + r) * p.out_row;
            for (int t = 0; t < DV; t++) _mm256_storeu_ps(o + 8 * t, o0[t]);
            if (two) {
                o = p.out + p.row(i + r + 1) * p.out_row;
                for (int t = 0; t < DV; t++) _mm256_storeu_ps(o + 8 * t, o1[t]);
            }
        }
    }
}

bool unsupported(int64_t Lq, int64_t Lk, int64_t d, int64_t dv) {
    return Lq < 1 || Lk < 1 || Lk > MAX_KEYS || d < 1 || d > MAX_QK_DIM || dv % 8 || dv < 8 || dv > 64;
}

void run(const Pair &p, int64_t Lq, int64_t Lk, int64_t d, int64_t dv, float scale) {
    switch (dv / 8) {
        case 1: attend<1>(p, Lq, Lk, d, scale); break;
        case 2: attend<2>(p, Lq, Lk, d, scale); break;
        case 3: attend<3>(p, Lq, Lk, d, scale); break;
        case 4: attend<4>(p, Lq, Lk, d, scale); break;
        case 5: attend<5>(p, Lq, Lk, d, scale); break;
        case 6: attend<6>(p, Lq, Lk, d, scale); break;
        case 7: attend<7>(p, Lq, Lk, d, scale); break;
        case 8: attend<8>(p, Lq, Lk, d, scale); break;
    }
}

}  // namespace

// q: (G, H, Lq, d), k: (G, H, Lk, d), v: (G, H, Lk, dv), each given by a base pointer and (group, head, row)
// strides with a contiguous last dim. bias (optional): (P, H, Lq, Lk) strides, group g reads bias group g % P.
// out: (G, Lq, H, dv) contiguous. Returns 0, or 1 for a shape this kernel does not take (nothing written).
extern "C" int zoo_short_attention_f32(
        const float *q, const float *k, const float *v, int64_t G, int64_t H, int64_t Lq, int64_t Lk, int64_t d,
        int64_t dv, const int64_t *q_strides, const int64_t *k_strides, const int64_t *v_strides,
        const float *bias, int64_t bias_period, const int64_t *bias_strides, float *out, float scale, int threads) {
    if (unsupported(Lq, Lk, d, dv)) return 1;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int64_t g = 0; g < G; g++) {
        for (int64_t h = 0; h < H; h++) {
            Pair p{};
            p.q = q + g * q_strides[0] + h * q_strides[1], p.q_row = q_strides[2];
            p.k = k + g * k_strides[0] + h * k_strides[1], p.k_row = k_strides[2];
            p.v = v + g * v_strides[0] + h * v_strides[1], p.v_row = v_strides[2];
            if (bias) {
                p.bias = bias + (g % bias_period) * bias_strides[0] + h * bias_strides[1];
                p.bias_row = bias_strides[2];
            }
            p.out = out + (g * Lq * H + h) * dv, p.out_row = H * dv;
            run(p, Lq, Lk, d, dv, scale);
        }
    }
    return 0;
}

// Window self-attention on a token map without partitioning it: qkv (B, T, 3, H, d) contiguous, a fused qkv
// projection of B maps of T tokens (qkv_bias, optional: its (3, H, d) bias, when qkv was computed without it).
// Window w holds the N tokens windows[w * N : (w + 1) * N] of each map (any roll / partition / grid, as an
// index). bias (optional): (H, N, N), per head; mask (optional): (nW, N, N), per window. out: (B, T, H, d), each
// token written by the one window that holds it (tokens in no window are left untouched). Returns 0, or 1 for a
// shape this kernel does not take.
extern "C" int zoo_window_attention_f32(
        const float *qkv, const float *qkv_bias, int64_t B, int64_t T, int64_t H, int64_t d, const int64_t *windows,
        int64_t nW, int64_t N, const float *bias, const float *mask, float *out, float scale, int threads) {
    if (unsupported(N, N, d, d)) return 1;
    const int64_t C = H * d;
#pragma omp parallel for collapse(3) schedule(static) num_threads(threads)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t w = 0; w < nW; w++) {
            for (int64_t h = 0; h < H; h++) {
                Pair p{};
                p.tokens = windows + w * N;
                p.q = qkv + b * T * 3 * C + h * d, p.k = p.q + C, p.v = p.q + 2 * C;
                p.q_row = p.k_row = p.v_row = 3 * C;
                if (qkv_bias) p.q_bias = qkv_bias + h * d, p.k_bias = p.q_bias + C, p.v_bias = p.q_bias + 2 * C;
                p.out = out + b * T * C + h * d, p.out_row = C;
                if (bias) p.bias = bias + h * N * N, p.bias_row = N;
                if (mask) p.mask = mask + w * N * N, p.mask_row = N;
                run(p, N, N, d, d, scale);
            }
        }
    }
    return 0;
}
