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

// The epilogue of a vector of 8 scores, keys j0 .. j0 + 7 of a row of n: adds that row's bias and mask (optional),
// sets keys past n to -inf and folds the result into the running row max m. The scores then go to memory once,
// ready for the exp.
inline __m256 finish_scores(__m256 s, const float *bias, const float *mask, int64_t j0, int64_t n, __m256 &m) {
    if (j0 + 8 <= n) {
        if (bias) s = _mm256_add_ps(s, _mm256_loadu_ps(bias + j0));
        if (mask) s = _mm256_add_ps(s, _mm256_loadu_ps(mask + j0));
    } else {  // masked loads: a bias row's end may be its buffer's end
        const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j0)),
                                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        if (bias) s = _mm256_add_ps(s, _mm256_maskload_ps(bias + j0, valid));
        if (mask) s = _mm256_add_ps(s, _mm256_maskload_ps(mask + j0, valid));
        s = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), s, _mm256_castsi256_ps(valid));
    }
    m = _mm256_max_ps(m, s);
    return s;
}

// In place, for R rows of nv vectors at once: row[r] = exp(row[r] - max[r]); returns 1 / sum in inv[r] (the value
// sums are scaled by it at the end instead of normalising every score). The rows go through together so their
// dependency chains (exp, sum) overlap.
template <int R>
inline void exp_rows(float *const *row, const __m256 *max, int64_t nv, float *inv) {
    __m256 m[R], sum[R];
    for (int r = 0; r < R; r++) m[r] = _mm256_set1_ps(reduce_max(max[r])), sum[r] = _mm256_setzero_ps();
    for (int64_t t = 0; t < nv; t++) {
        for (int r = 0; r < R; r++) {
            const __m256 e = softmax_exp8(_mm256_sub_ps(_mm256_load_ps(row[r] + 8 * t), m[r]));
            _mm256_store_ps(row[r] + 8 * t, e);
            sum[r] = _mm256_add_ps(sum[r], e);
        }
    }
    for (int r = 0; r < R; r++) inv[r] = 1.f / reduce_sum(sum[r]);
}

// One (group, head): row i of q / k / v / out lives at base + row(i) * stride, where row(i) = tokens[i] when a
// token index is given (gathered windows) and i otherwise. bias and mask rows: base + i * stride (optional).
// q_bias / v_bias (optional): the projection's q and v biases (see attend for why k's is not needed).
struct Pair {
    const float *q, *k, *v, *bias, *mask, *q_bias, *v_bias;
    float *out;
    const int64_t *tokens;
    int64_t q_row, k_row, v_row, out_row, bias_row, mask_row;
    int64_t row(int64_t i) const { return tokens ? tokens[i] : i; }
};

// dst[c * ld + i] = scale * rows[i][c] for 8 rows (nullptr: a zero row) and channels c < d: an 8 x 8 AVX transpose
// per 8 channels, scalar for the last d % 8.
inline void pack_transposed(const float *const *rows, int64_t d, float scale, float *dst, int64_t ld) {
    const __m256 sc = _mm256_set1_ps(scale);
    int64_t c = 0;
    for (; c + 8 <= d; c += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++)
            r[i] = rows[i] ? _mm256_mul_ps(_mm256_loadu_ps(rows[i] + c), sc) : _mm256_setzero_ps();
        const __m256 a0 = _mm256_unpacklo_ps(r[0], r[1]), a1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 a2 = _mm256_unpacklo_ps(r[2], r[3]), a3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 a4 = _mm256_unpacklo_ps(r[4], r[5]), a5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 a6 = _mm256_unpacklo_ps(r[6], r[7]), a7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
        const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
        const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
        const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
        _mm256_store_ps(dst + (c + 0) * ld, _mm256_permute2f128_ps(b0, b4, 0x20));
        _mm256_store_ps(dst + (c + 1) * ld, _mm256_permute2f128_ps(b1, b5, 0x20));
        _mm256_store_ps(dst + (c + 2) * ld, _mm256_permute2f128_ps(b2, b6, 0x20));
        _mm256_store_ps(dst + (c + 3) * ld, _mm256_permute2f128_ps(b3, b7, 0x20));
        _mm256_store_ps(dst + (c + 4) * ld, _mm256_permute2f128_ps(b0, b4, 0x31));
        _mm256_store_ps(dst + (c + 5) * ld, _mm256_permute2f128_ps(b1, b5, 0x31));
        _mm256_store_ps(dst + (c + 6) * ld, _mm256_permute2f128_ps(b2, b6, 0x31));
        _mm256_store_ps(dst + (c + 7) * ld, _mm256_permute2f128_ps(b3, b7, 0x31));
    }
    for (; c < d; c++)
        for (int i = 0; i < 8; i++) dst[c * ld + i] = rows[i] ? rows[i][c] * scale : 0.f;
}

// k is packed as scale * k^T (8 x 8 transposes), v as contiguous rows and each block of 4 q rows as well (q's
// projection bias added; reading q in place from the token rows measured ~10% slower); scores go in blocks of 4
// query rows x 16 keys (8 accumulators, each k^T load feeds 4 FMAs), bias, mask and row max applied before they
// are stored; then the 4 rows' exps and their value sums two rows at a time, normalised as they are written
// (DV = value dim / 8 is a template argument so those accumulators stay in registers).
// k's projection bias is never added: it shifts all scores of a query row by the same q . k_bias, which its
// softmax ignores. v's comes out of the weighted sum whole (the weights sum to 1): added once per output row.
template <int DV>
void attend(const Pair &p, int64_t Lq, int64_t Lk, int64_t d, float scale) {
    const int64_t padded = (Lk + 7) / 8 * 8;
    alignas(32) float kT[MAX_QK_DIM * (MAX_KEYS + 16)];
    alignas(32) float v_packed[MAX_KEYS * 64];
    alignas(32) float scores[4][MAX_KEYS + 16];
    for (int64_t j0 = 0; j0 < padded; j0 += 8) {
        const float *rows[8];
        for (int i = 0; i < 8; i++) rows[i] = j0 + i < Lk ? p.k + p.row(j0 + i) * p.k_row : nullptr;
        pack_transposed(rows, d, scale, kT + j0, padded);
    }
    for (int64_t j = 0; j < Lk; j++) {
        const float *v = p.v + p.row(j) * p.v_row;
        for (int t = 0; t < DV; t++) _mm256_store_ps(v_packed + (j * DV + t) * 8, _mm256_loadu_ps(v + 8 * t));
    }
    __m256 v_bias[DV];
    for (int t = 0; t < DV; t++) v_bias[t] = p.v_bias ? _mm256_loadu_ps(p.v_bias + 8 * t) : _mm256_setzero_ps();

    for (int64_t i = 0; i < Lq; i += 4) {
        const int rows = Lq - i < 4 ? (int)(Lq - i) : 4;
        const float *q[4], *bias[4], *mask[4];
        float *score_rows[4];
        alignas(32) float q_block[4][MAX_QK_DIM];
        for (int r = 0; r < 4; r++) {  // rows past Lq repeat the last one: computed, never stored
            const int64_t ir = i + (r < rows ? r : rows - 1);
            const float *row = p.q + p.row(ir) * p.q_row;
            int64_t c = 0;
            for (; c + 8 <= d; c += 8) {
                const __m256 x = _mm256_loadu_ps(row + c);
                _mm256_store_ps(q_block[r] + c, p.q_bias ? _mm256_add_ps(x, _mm256_loadu_ps(p.q_bias + c)) : x);
            }
            for (; c < d; c++) q_block[r][c] = p.q_bias ? row[c] + p.q_bias[c] : row[c];
            q[r] = q_block[r];
            bias[r] = p.bias ? p.bias + ir * p.bias_row : nullptr;
            mask[r] = p.mask ? p.mask + ir * p.mask_row : nullptr;
            score_rows[r] = scores[r];
        }
        __m256 row_max[4];
        for (int r = 0; r < 4; r++) row_max[r] = _mm256_set1_ps(-INFINITY);
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
                _mm256_store_ps(scores[r] + b, finish_scores(s[r][0], bias[r], mask[r], b, Lk, row_max[r]));
                _mm256_store_ps(scores[r] + b + 8, finish_scores(s[r][1], bias[r], mask[r], b + 8, Lk, row_max[r]));
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
            for (int r = 0; r < 4; r++)
                _mm256_store_ps(scores[r] + b, finish_scores(s[r], bias[r], mask[r], b, Lk, row_max[r]));
        }
        float inv_sum[4];
        exp_rows<4>(score_rows, row_max, padded / 8, inv_sum);

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
            const __m256 s0 = _mm256_set1_ps(inv_sum[r]), s1 = _mm256_set1_ps(inv_sum[two ? r + 1 : r]);
            float *o = p.out + p.row(i + r) * p.out_row;
            for (int t = 0; t < DV; t++) _mm256_storeu_ps(o + 8 * t, _mm256_fmadd_ps(o0[t], s0, v_bias[t]));
            if (two) {
                o = p.out + p.row(i + r + 1) * p.out_row;
                for (int t = 0; t < DV; t++) _mm256_storeu_ps(o + 8 * t, _mm256_fmadd_ps(o1[t], s1, v_bias[t]));
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
#pragma omp parallel num_threads(threads)
    {
    const FlushDenormals flush;
#pragma omp for collapse(2) schedule(static)
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
#pragma omp parallel num_threads(threads)
    {
    const FlushDenormals flush;
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t w = 0; w < nW; w++) {
            for (int64_t h = 0; h < H; h++) {
                Pair p{};
                p.tokens = windows + w * N;
                p.q = qkv + b * T * 3 * C + h * d, p.k = p.q + C, p.v = p.q + 2 * C;
                p.q_row = p.k_row = p.v_row = 3 * C;
                if (qkv_bias) p.q_bias = qkv_bias + h * d, p.v_bias = p.q_bias + 2 * C;
                p.out = out + b * T * C + h * d, p.out_row = C;
                if (bias) p.bias = bias + h * N * N, p.bias_row = N;
                if (mask) p.mask = mask + w * N * N, p.mask_row = N;
                run(p, N, N, d, d, scale);
            }
        }
    }
    }
    return 0;
}
