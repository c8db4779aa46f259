// Fast CPU kernels: BLAS for GEMM, OpenMP over rows / heads / channel blocks, auto-vectorised
// inner loops. Each is tested against its jamba::ref twin (tests/test_kernels.cpp).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
// GCC 12 reports its own _mm512_undefined_*() inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "core/dtype.h"
#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/kernels.h"

namespace jamba::cpu {

void gemm(const GemmArgs& a) {
  if (a.M == 0 || a.N == 0) return;
  float beta = a.accumulate ? 1.0f : 0.0f;
  if (a.bias) {
    for (int64_t m = 0; m < a.M; ++m) {
      float* c = a.C + m * a.ldc;
      if (a.accumulate)
        for (int64_t n = 0; n < a.N; ++n) c[n] += a.bias[n];
      else
        std::memcpy(c, a.bias, size_t(a.N) * sizeof(float));
    }
    beta = 1.0f;
  }
  if (a.K == 0) {
    if (beta == 0.0f)
      for (int64_t m = 0; m < a.M; ++m) std::fill_n(a.C + m * a.ldc, a.N, 0.0f);
    return;
  }
  if (a.M == 1) {
    // y[N] = W[N,K] x[K]; gemv is 2-4x faster than sgemm with M=1 (ANCHORS.md).
    cblas_sgemv(CblasRowMajor, CblasNoTrans, blasint(a.N), blasint(a.K), 1.0f, a.W,
                blasint(a.ldw), a.A, 1, beta, a.C, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(a.M), blasint(a.N), blasint(a.K),
              1.0f, a.A, blasint(a.lda), a.W, blasint(a.ldw), beta, a.C, blasint(a.ldc));
}

void rmsnorm(const RmsNormArgs& a) {
#pragma omp parallel for schedule(static) if (a.M * a.D > 32768)
  for (int64_t m = 0; m < a.M; ++m) {
    const float* x = a.x + m * a.ldx;
    float ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t d = 0; d < a.D; ++d) ss += x[d] * x[d];
    const float r = 1.0f / std::sqrt(ss / float(a.D) + a.eps);
    float* y = a.y + m * a.ldy;
#pragma omp simd
    for (int64_t d = 0; d < a.D; ++d) y[d] = a.w[d] * (x[d] * r);
  }
}

namespace {
constexpr int64_t kQTile = 16;   // queries per tile (per head)
constexpr int64_t kKTile = 256;  // keys per tile

// One query row of a score tile s[j - j0], keys [j0, j1): keys at or past jmax (causal) or
// invalid get -inf; returns the max of the rest (-inf if none). all_valid: every key of the
// tile is valid (then a tile below the causal edge is a plain vectorised max).
float mask_scores(float* s, int64_t j0, int64_t j1, int64_t jmax, const uint8_t* key_valid,
                  bool all_valid) {
  float m = -INFINITY;
  if (all_valid && j1 <= jmax) {
    const int64_t n = j1 - j0;
    int64_t j = 0;
#if defined(__AVX512F__)
    // GCC keeps the out-of-line copy of an `omp simd reduction(max)` loop scalar: one vmaxss
    // chain, ~2 cycles a score, as much as the QK^T matmul itself. Four vector chains instead.
    __m512 v[4] = {_mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY),
                   _mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY)};
    for (; j + 64 <= n; j += 64)
      for (int u = 0; u < 4; ++u) v[u] = _mm512_max_ps(v[u], _mm512_loadu_ps(s + j + 16 * u));
    for (; j + 16 <= n; j += 16) v[0] = _mm512_max_ps(v[0], _mm512_loadu_ps(s + j));
    m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3])));
#endif
    for (; j < n; ++j) m = std::max(m, s[j]);
    return m;
  }
  for (int64_t j = j0; j < j1; ++j) {
    if (j < jmax && (!key_valid || key_valid[j])) m = std::max(m, s[j - j0]);
    else s[j - j0] = -INFINITY;
  }
  return m;
}

bool tile_all_valid(const uint8_t* key_valid, int64_t j0, int64_t j1) {
  if (!key_valid) return true;
  for (int64_t j = j0; j < j1; ++j)
    if (!key_valid[j]) return false;
  return true;
}

// n bf16 values -> f32 (exact: a bf16 is the high half of an f32).
void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(src[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    dst[i] = f;
  }
}

// Rows [j0, j1) of kv head g's K or V as f32: the f32 cache in place, or the bf16 cache widened
// into buf (nk * hd floats).
const float* kv_rows(const float* f32, const uint16_t* b16, const AttentionArgs& a, int64_t g,
                     int64_t j0, int64_t j1, float* buf) {
  const int64_t off = g * a.kv_head_stride + j0 * a.hd;
  if (!b16) return f32 + off;
  widen_bf16(b16 + off, buf, (j1 - j0) * a.hd);
  return buf;
}

// No allowed key (fully-masked left-padding row): the uniform average of all T values (the
// reference's additive finfo.min mask; see kernels.h).
void uniform_average(const AttentionArgs& a, int64_t g, float* o) {
  std::fill(o, o + a.hd, 0.0f);
  std::vector<float> row(static_cast<size_t>(a.hd));
  for (int64_t j = 0; j < a.T; ++j) {
    const float* V = kv_rows(a.v, a.v16, a, g, j, j + 1, row.data());
    for (int64_t e = 0; e < a.hd; ++e) o[e] += V[e];
  }
  for (int64_t e = 0; e < a.hd; ++e) o[e] /= float(a.T);
}
}  // namespace

// One row's online-softmax step over a tile of scores sr[0, nk) (masked keys -inf) whose max is
// tile_max (finite): the weights exp(s - m_new) replace the scores — or, with p16, go there
// rounded to bf16 (nearest even) and the denominator sums the rounded values — and the running
// max m, denominator l and accumulator row acc[0, hd) are rescaled to m_new.
void online_softmax_step(float* sr, int64_t nk, float tile_max, float& m, float& l, float* acc,
                         int64_t hd, uint16_t* p16 = nullptr) {
  const float m_new = std::max(m, tile_max);
  const float corr = exp_fast(m - m_new);  // 0 the first time (clamped)
  float lsum = 0.0f;
  if (p16) {
#pragma omp simd reduction(+ : lsum)
    for (int64_t j = 0; j < nk; ++j) {
      const float pj = sr[j] == -INFINITY ? 0.0f : exp_fast(sr[j] - m_new);
      uint32_t u;  // pj is finite and >= 0
      std::memcpy(&u, &pj, 4);
      u += 0x7fffu + ((u >> 16) & 1u);
      p16[j] = uint16_t(u >> 16);
      const uint32_t w = u & 0xffff0000u;
      float pw;
      std::memcpy(&pw, &w, 4);
      lsum += pw;
    }
  } else {
#pragma omp simd reduction(+ : lsum)
    for (int64_t j = 0; j < nk; ++j) {
      const float pj = sr[j] == -INFINITY ? 0.0f : exp_fast(sr[j] - m_new);
      sr[j] = pj;
      lsum += pj;
    }
  }
  l = l * corr + lsum;
  m = m_new;
#pragma omp simd
  for (int64_t e = 0; e < hd; ++e) acc[e] *= corr;
}

// Output rows of one (kv head g, query tile [i0, i1)): acc / l, or the uniform average for a
// row that saw no allowed key.
void write_tile_output(const AttentionArgs& a, int64_t g, int64_t i0, int64_t i1, const float* acc,
                       const float* l) {
  const int64_t G = a.nh / a.nkv, hd = a.hd;
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t hh = 0; hh < G; ++hh) {
      const int64_t r = (i - i0) * G + hh;
      float* o = a.out + i * a.ldo + (g * G + hh) * hd;
      if (l[r] > 0) {
        const float inv = 1.0f / l[r];
        for (int64_t e = 0; e < hd; ++e) o[e] = acc[r * hd + e] * inv;
      } else {
        uniform_average(a, g, o);
      }
    }
}

// C[M,N] (ldc) = A[M,K] (bf16, lda) @ W (bf16: [N,K] row stride ldw, or [K,N] if w_kn) (+ C if
// accumulate), on the calling thread: oneDNN's bf16 matmul, or (without it) both operands
// widened into the buffers and sgemm (the same exact products, f32 sums).
void gemm16(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* W,
            int64_t ldw, bool w_kn, float* C, int64_t ldc, bool accumulate, std::vector<float>& abuf,
            std::vector<float>& wbuf) {
  if (detail::dnnl_matmul_bf16(M, N, K, A, lda, W, ldw, C, ldc, nullptr, accumulate, w_kn)) return;
  abuf.resize(static_cast<size_t>(M * K));
  wbuf.resize(static_cast<size_t>(N * K));
  for (int64_t m = 0; m < M; ++m) widen_bf16(A + m * lda, abuf.data() + m * K, K);
  const int64_t wr = w_kn ? K : N, wc = w_kn ? N : K;
  for (int64_t r = 0; r < wr; ++r) widen_bf16(W + r * ldw, wbuf.data() + r * wc, wc);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, w_kn ? CblasNoTrans : CblasTrans, blasint(M), blasint(N),
              blasint(K), 1.0f, abuf.data(), blasint(K), wbuf.data(), blasint(wc),
              accumulate ? 1.0f : 0.0f, C, blasint(ldc));
}

// Decode at depth is a stream over the bf16 cache (a few query rows, up to 512 MiB of K/V per
// token at 256K): oneDNN's per-call cost on a 4 x 1024 x 64 matmul held it to ~9 GB/s, so with
// AVX512-BF16 a few rows get one pass over each K and V row with vdpbf16ps instead — the same
// arithmetic as the matmuls: exact bf16 x bf16 products, f32 sums. kStreamRows bounds the rows
// (R = Lq x group): past it the work is compute-bound and oneDNN's tiles win.
constexpr int64_t kStreamRows = 8;
constexpr int64_t kStreamKeyBlock = 64;  // keys per block: the block's V rows stay in L1

#if defined(__AVX512BF16__)

// Lane i of the result = the sum of the 16 lanes of v[i] (a transposing add tree, 45 ops).
inline __m512 sum16(const __m512 (&v)[16]) {
  __m512 w[8], x[4];
  for (int i = 0; i < 8; ++i)
    w[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // 128-bit lane L of x[i]: lane L's partial sums of v[4i..4i+3]
    x[i] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 z01 = _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 z23 = _mm512_add_ps(_mm512_shuffle_f32x4(x[2], x[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(x[2], x[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(z01, z23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(z01, z23, _MM_SHUFFLE(3, 1, 3, 1)));
}

inline __m512bh load_bh(const uint16_t* p) {
  return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
}

// Rows [j0, j0 + n) of S (n <= 16) for one query row q (NB vectors of 32 bf16): one vdpbf16ps
// per key and 32 elements, the 16 keys' lanes summed by sum16. FULL: n == 16 (no tests).
template <int NB, bool FULL>
inline void scores_block16(const __m512bh (&q)[NB], const uint16_t* K, int64_t n, float* S) {
  __m512 t[16];
  for (int64_t jj = 0; jj < 16; ++jj) {
    t[jj] = _mm512_setzero_ps();
    if (!FULL && jj >= n) continue;
    for (int b = 0; b < NB; ++b)
      t[jj] = _mm512_dpbf16_ps(t[jj], q[b], load_bh(K + jj * 32 * NB + 32 * b));
  }
  if (FULL) _mm512_storeu_ps(S, sum16(t));
  else _mm512_mask_storeu_ps(S, __mmask16((1u << n) - 1u), sum16(t));
}

// S[r * lds + j] = q16[r] . K[j] for R rows of q16 (R x hd) and nk keys of K (row stride hd),
// hd = 32 NB, 16 keys at a time (a block of K is read from L1 by each row after the first).
template <int NB>
void scores_stream(int64_t R, int64_t nk, const uint16_t* q16, const uint16_t* K, float* S,
                   int64_t lds) {
  constexpr int64_t hd = 32 * NB;
  for (int64_t j0 = 0; j0 < nk; j0 += 16) {
    const int64_t n = std::min<int64_t>(16, nk - j0);
    for (int64_t r = 0; r < R; ++r) {
      __m512bh q[NB];
      for (int b = 0; b < NB; ++b) q[b] = load_bh(q16 + r * hd + 32 * b);
      if (n == 16) scores_block16<NB, true>(q, K + j0 * hd, 16, S + r * lds + j0);
      else scores_block16<NB, false>(q, K + j0 * hd, n, S + r * lds + j0);
    }
  }
}

// acc[r * hd + e] = sum_j P16[r * ldp + j] * V[j * hd + e] (f32 out), R rows, hd = 32 NB: keys in
// pairs, the two V rows interleaved (unpack) so one vdpbf16ps adds both keys' terms with the
// pair's two weights (adjacent in P16: one 32-bit broadcast); the accumulators hold the columns
// in unpack order and are put back in order at the end.
template <int NB, int R>
void pv_stream(int64_t nk, const uint16_t* P16, int64_t ldp, const uint16_t* V, float* acc) {
  constexpr int64_t hd = 32 * NB;
  __m512 a[NB][R][2];
  for (int b = 0; b < NB; ++b)
    for (int r = 0; r < R; ++r) a[b][r][0] = a[b][r][1] = _mm512_setzero_ps();
  const int64_t npair = nk / 2;
  for (int64_t j0 = 0; j0 < npair; j0 += kStreamKeyBlock / 2) {
    const int64_t j1 = std::min(npair, j0 + kStreamKeyBlock / 2);
    for (int b = 0; b < NB; ++b)
      for (int64_t jp = j0; jp < j1; ++jp) {
        const uint16_t* v = V + 2 * jp * hd + 32 * b;
        const __m512i v0 = _mm512_loadu_si512(v), v1 = _mm512_loadu_si512(v + hd);
        const __m512bh lo = reinterpret_cast<__m512bh>(_mm512_unpacklo_epi16(v0, v1));
        const __m512bh hi = reinterpret_cast<__m512bh>(_mm512_unpackhi_epi16(v0, v1));
        for (int r = 0; r < R; ++r) {
          int32_t pp;
          std::memcpy(&pp, P16 + r * ldp + 2 * jp, 4);
          const __m512bh p = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pp));
          a[b][r][0] = _mm512_dpbf16_ps(a[b][r][0], p, lo);
          a[b][r][1] = _mm512_dpbf16_ps(a[b][r][1], p, hi);
        }
      }
  }
  if (nk % 2) {  // the last key alone: its weight beside a zero
    const int64_t j = nk - 1;
    for (int b = 0; b < NB; ++b) {
      const __m512i v0 = _mm512_loadu_si512(V + j * hd + 32 * b), z = _mm512_setzero_si512();
      const __m512bh lo = reinterpret_cast<__m512bh>(_mm512_unpacklo_epi16(v0, z));
      const __m512bh hi = reinterpret_cast<__m512bh>(_mm512_unpackhi_epi16(v0, z));
      for (int r = 0; r < R; ++r) {
        const __m512bh p = reinterpret_cast<__m512bh>(_mm512_set1_epi32(P16[r * ldp + j]));
        a[b][r][0] = _mm512_dpbf16_ps(a[b][r][0], p, lo);
        a[b][r][1] = _mm512_dpbf16_ps(a[b][r][1], p, hi);
      }
    }
  }
  // Unpack order: dword 4L + i of the lo (hi) half holds column 32b + 8L + i (+ 4).
  alignas(64) float A[2][16];
  for (int b = 0; b < NB; ++b)
    for (int r = 0; r < R; ++r) {
      _mm512_store_ps(A[0], a[b][r][0]);
      _mm512_store_ps(A[1], a[b][r][1]);
      for (int h = 0; h < 2; ++h)
        for (int L = 0; L < 4; ++L)
          for (int i = 0; i < 4; ++i) acc[r * hd + 32 * b + 8 * L + 4 * h + i] = A[h][4 * L + i];
    }
}

template <int NB>
void pv_stream_rows(int64_t R, int64_t nk, const uint16_t* P16, int64_t ldp, const uint16_t* V,
                    float* acc) {
  static_assert(kStreamRows == 8);
  switch (R) {
    case 1: return pv_stream<NB, 1>(nk, P16, ldp, V, acc);
    case 2: return pv_stream<NB, 2>(nk, P16, ldp, V, acc);
    case 3: return pv_stream<NB, 3>(nk, P16, ldp, V, acc);
    case 4: return pv_stream<NB, 4>(nk, P16, ldp, V, acc);
    case 5: return pv_stream<NB, 5>(nk, P16, ldp, V, acc);
    case 6: return pv_stream<NB, 6>(nk, P16, ldp, V, acc);
    case 7: return pv_stream<NB, 7>(nk, P16, ldp, V, acc);
    default: return pv_stream<NB, 8>(nk, P16, ldp, V, acc);
  }
}

bool stream_head_size(int64_t hd) { return hd == 32 || hd == 64 || hd == 128; }

void scores_stream_any(int64_t R, int64_t nk, int64_t hd, const uint16_t* q16, const uint16_t* K,
                       float* S, int64_t lds) {
  if (hd == 32) return scores_stream<1>(R, nk, q16, K, S, lds);
  if (hd == 64) return scores_stream<2>(R, nk, q16, K, S, lds);
  return scores_stream<4>(R, nk, q16, K, S, lds);
}

void pv_stream_any(int64_t R, int64_t nk, int64_t hd, const uint16_t* P16, int64_t ldp,
                   const uint16_t* V, float* acc) {
  if (hd == 32) return pv_stream_rows<1>(R, nk, P16, ldp, V, acc);
  if (hd == 64) return pv_stream_rows<2>(R, nk, P16, ldp, V, acc);
  return pv_stream_rows<4>(R, nk, P16, ldp, V, acc);
}
#else
bool stream_head_size(int64_t) { return false; }  // no AVX512-BF16: oneDNN's matmuls
void scores_stream_any(int64_t, int64_t, int64_t, const uint16_t*, const uint16_t*, float*,
                       int64_t) {}
void pv_stream_any(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, float*) {}
#endif

// Decode-shaped attention (a few queries, a long cache): the keys are split into chunks, each
// (kv head, chunk) task keeps its own online-softmax partial (m, l, acc) per query row and the
// partials are merged, so a long context uses every thread even with one KV head. A task's rows
// are the Lq x G queries of its GQA group, which share the chunk's K/V: S = Q K^T and acc = P V
// are two small sgemms, the exp vectorised over the chunk.
void attention_split_keys(const AttentionArgs& a) {
  // bf16 dot products (AttentionArgs::bf16_dot on a bf16 cache): the chunk's K and V are read in
  // place, streamed (few rows) or by oneDNN (bigger chunks: fewer calls); else 256-key chunks
  // through sgemm.
  const bool dot = a.bf16_dot && a.k16 && a.v16;
  const int64_t kChunk = dot ? 1024 : 256;
  const int64_t G = a.nh / a.nkv, hd = a.hd, R = a.Lq * G;
  const bool stream = dot && R <= kStreamRows && stream_head_size(hd);  // one pass over K, V
  const int64_t kend = std::min(a.T, a.pos0 + a.Lq);
  const int64_t nc = (kend + kChunk - 1) / kChunk;
  const int64_t stride = hd + 2;  // per partial: m, l, acc[hd]
  std::vector<float> part(static_cast<size_t>(a.nh * a.Lq * nc * stride));
#pragma omp parallel
  {
    std::vector<float> qg(static_cast<size_t>(R * hd)), S(static_cast<size_t>(R * kChunk)),
        acc(static_cast<size_t>(R * hd)), kbuf, vbuf, mrow(static_cast<size_t>(R)),
        lrow(static_cast<size_t>(R));
    std::vector<uint16_t> q16, p16;
    if (dot) q16.resize(static_cast<size_t>(R * hd)), p16.resize(static_cast<size_t>(R * kChunk));
    else if (a.k16) kbuf.resize(static_cast<size_t>(kChunk * hd)), vbuf.resize(kbuf.size());
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t g = 0; g < a.nkv; ++g)
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t j0 = c * kChunk, j1 = std::min(kend, j0 + kChunk), nk = j1 - j0;
        const bool all_valid = tile_all_valid(a.key_valid, j0, j1);
        if (dot) {  // scores = (bf16(q) . k) * scale, weights rounded to bf16, f32 sums
          for (int64_t r = 0; r < R; ++r) {
            const float* q = a.q + (r / G) * a.ldq + (g * G + r % G) * hd;
            for (int64_t e = 0; e < hd; ++e) q16[size_t(r * hd + e)] = f32_to_bf16(q[e]);
          }
          const uint16_t* K = a.k16 + g * a.kv_head_stride + j0 * hd;
          const uint16_t* V = a.v16 + g * a.kv_head_stride + j0 * hd;
          if (stream) {
            scores_stream_any(R, nk, hd, q16.data(), K, S.data(), nk);
          } else {
            gemm16(R, nk, hd, q16.data(), hd, K, hd, false, S.data(), nk, false, kbuf, vbuf);
          }
          for (int64_t r = 0; r < R; ++r) {
            float* sr = S.data() + r * nk;
            uint16_t* pr = p16.data() + r * nk;
#pragma omp simd
            for (int64_t j = 0; j < nk; ++j) sr[j] *= a.scale;
            float m = mask_scores(sr, j0, j1, std::min(j1, a.pos0 + r / G + 1), a.key_valid, all_valid);
            float l = 0.0f;
            if (m == -INFINITY) {
              std::fill(pr, pr + nk, uint16_t(0));
            } else {
              float run_max = -INFINITY;  // one step from nothing: weights exp(s - m)
              online_softmax_step(sr, nk, m, run_max, l, nullptr, 0, pr);
            }
            mrow[size_t(r)] = m;
            lrow[size_t(r)] = l;
          }
          if (stream) {
            pv_stream_any(R, nk, hd, p16.data(), nk, V, acc.data());
          } else {
            gemm16(R, hd, nk, p16.data(), nk, V, hd, true, acc.data(), hd, false, kbuf, vbuf);
          }
        } else {
        const float* K = kv_rows(a.k, a.k16, a, g, j0, j1, kbuf.data());
        const float* V = kv_rows(a.v, a.v16, a, g, j0, j1, vbuf.data());
        for (int64_t r = 0; r < R; ++r) {  // row r = query i, head g * G + hh
          const float* q = a.q + (r / G) * a.ldq + (g * G + r % G) * hd;
          for (int64_t e = 0; e < hd; ++e)
            qg[size_t(r * hd + e)] = (a.bf16_dot ? bf16_to_f32(f32_to_bf16(q[e])) : q[e]) * a.scale;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(R), blasint(nk), blasint(hd),
                    1.0f, qg.data(), blasint(hd), K, blasint(hd), 0.0f, S.data(),
                    blasint(nk));
        for (int64_t r = 0; r < R; ++r) {
          float* sr = S.data() + r * nk;
          const float m =
              mask_scores(sr, j0, j1, std::min(j1, a.pos0 + r / G + 1), a.key_valid, all_valid);
          float l = 0.0f;
          if (m != -INFINITY) {
#pragma omp simd reduction(+ : l)
            for (int64_t j = 0; j < nk; ++j) {
              const float pj = sr[j] == -INFINITY ? 0.0f : exp_fast(sr[j] - m);
              sr[j] = pj;
              l += pj;
            }
          } else {
            std::fill(sr, sr + nk, 0.0f);
          }
          mrow[size_t(r)] = m;
          lrow[size_t(r)] = l;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(R), blasint(hd), blasint(nk),
                    1.0f, S.data(), blasint(nk), V, blasint(hd), 0.0f, acc.data(),
                    blasint(hd));
        }
        for (int64_t r = 0; r < R; ++r) {
          const int64_t i = r / G, h = g * G + r % G;
          float* pr = part.data() + ((h * a.Lq + i) * nc + c) * stride;
          pr[0] = mrow[size_t(r)];
          pr[1] = lrow[size_t(r)];
          std::copy_n(acc.data() + r * hd, hd, pr + 2);
        }
      }
  }
  for (int64_t h = 0; h < a.nh; ++h)
    for (int64_t i = 0; i < a.Lq; ++i) {
      const float* base = part.data() + (h * a.Lq + i) * nc * stride;
      float M = -INFINITY;
      for (int64_t c = 0; c < nc; ++c) M = std::max(M, base[c * stride]);
      float* o = a.out + i * a.ldo + h * hd;
      std::fill(o, o + hd, 0.0f);
      if (M == -INFINITY) {  // no allowed key
        uniform_average(a, h / G, o);
        continue;
      }
      float L = 0.0f;
      for (int64_t c = 0; c < nc; ++c) {
        const float* pr = base + c * stride;
        if (pr[0] == -INFINITY) continue;
        const float w = std::exp(pr[0] - M);
        L += pr[1] * w;
        for (int64_t e = 0; e < hd; ++e) o[e] += w * pr[2 + e];
      }
      const float inv = 1.0f / L;
      for (int64_t e = 0; e < hd; ++e) o[e] *= inv;
    }
}

// A bf16 model's attention (AttentionArgs::bf16_dot): flash-style like attention() below, with
// the queries and the softmax weights rounded to bf16 so that S = Q K^T and acc += P V are bf16
// matmuls on the cache in place. Larger key tiles than the f32 path: one oneDNN call has a fixed
// cost, and R x 512 scores still fit in L2.
void attention_bf16_dot(const AttentionArgs& a) {
  constexpr int64_t kQ = 32, kK = 512;
  const int64_t G = a.nh / a.nkv, hd = a.hd;
  const int64_t n_qt = (a.Lq + kQ - 1) / kQ;
  const bool par = a.Lq * a.T * a.nh * hd > 65536;
#pragma omp parallel if (par)
  {
    const int64_t rows = kQ * G;
    std::vector<float> acc(static_cast<size_t>(rows * hd)), m(static_cast<size_t>(rows)),
        l(static_cast<size_t>(rows)), S(static_cast<size_t>(rows * kK)), abuf, wbuf;
    std::vector<uint16_t> q16(static_cast<size_t>(rows * hd)), p16(static_cast<size_t>(rows * kK));
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t g = 0; g < a.nkv; ++g)
      for (int64_t qt = 0; qt < n_qt; ++qt) {
        const int64_t i0 = qt * kQ, i1 = std::min(a.Lq, i0 + kQ), R = (i1 - i0) * G;
        std::fill(acc.begin(), acc.end(), 0.0f);
        std::fill(m.begin(), m.end(), -INFINITY);
        std::fill(l.begin(), l.end(), 0.0f);
        for (int64_t i = i0; i < i1; ++i)  // row r = (i - i0) * G + hh
          for (int64_t hh = 0; hh < G; ++hh) {
            const float* q = a.q + i * a.ldq + (g * G + hh) * hd;
            uint16_t* dst = q16.data() + ((i - i0) * G + hh) * hd;
            for (int64_t e = 0; e < hd; ++e) dst[e] = f32_to_bf16(q[e]);
          }
        const int64_t kend = std::min(a.T, a.pos0 + i1);
        for (int64_t j0 = 0; j0 < kend; j0 += kK) {
          const int64_t j1 = std::min(kend, j0 + kK), nk = j1 - j0;
          const uint16_t* K = a.k16 + g * a.kv_head_stride + j0 * hd;
          const uint16_t* V = a.v16 + g * a.kv_head_stride + j0 * hd;
          const bool all_valid = tile_all_valid(a.key_valid, j0, j1);
          gemm16(R, nk, hd, q16.data(), hd, K, hd, false, S.data(), nk, false, abuf, wbuf);
          for (int64_t r = 0; r < R; ++r) {
            const int64_t p = a.pos0 + i0 + r / G;
            float* sr = S.data() + r * nk;
            uint16_t* pr = p16.data() + r * nk;
#pragma omp simd
            for (int64_t j = 0; j < nk; ++j) sr[j] *= a.scale;
            const float tile_max =
                mask_scores(sr, j0, j1, std::min(j1, p + 1), a.key_valid, all_valid);
            if (tile_max == -INFINITY) {  // nothing allowed in this tile: the row adds nothing
              std::fill(pr, pr + nk, uint16_t(0));
              continue;
            }
            online_softmax_step(sr, nk, tile_max, m[size_t(r)], l[size_t(r)], acc.data() + r * hd,
                                hd, pr);
          }
          gemm16(R, hd, nk, p16.data(), nk, V, hd, true, acc.data(), hd, true, abuf, wbuf);
        }
        write_tile_output(a, g, i0, i1, acc.data(), l.data());
      }
  }
}

// Flash-style attention: for each (kv head, query tile) the K/V tile is shared by the G query
// heads of the group; online softmax (running max m, denominator l, accumulator acc), no T x T
// matrix.
void attention(const AttentionArgs& a) {
  if (a.Lq <= 4 && a.T >= 256) {
    attention_split_keys(a);
    return;
  }
  if (a.bf16_dot && a.k16 && a.v16) {
    attention_bf16_dot(a);
    return;
  }
  const int64_t G = a.nh / a.nkv;
  const int64_t n_qt = (a.Lq + kQTile - 1) / kQTile;
  const int64_t hd = a.hd;
  // Small problems (decode on tiny models) run on the calling thread: a parallel region costs
  // more than the work.
  const bool par = a.Lq * a.T * a.nh * hd > 65536;
#pragma omp parallel if (par)
  {
    // Per tile of kQTile queries x G heads (R rows) and kKTile keys: S = Q K^T and acc += P V are
    // two small sgemms (OpenBLAS runs them on this thread inside the parallel region); the mask,
    // the online-softmax update and exp are vectorised over the tile's keys.
    const int64_t rows = kQTile * G;
    std::vector<float> acc(static_cast<size_t>(rows * hd));
    std::vector<float> m(static_cast<size_t>(rows));
    std::vector<float> l(static_cast<size_t>(rows));
    std::vector<float> qt_buf(static_cast<size_t>(rows * hd));
    std::vector<float> S(static_cast<size_t>(rows * kKTile)), kbuf, vbuf;
    if (a.k16) kbuf.resize(static_cast<size_t>(kKTile * hd)), vbuf.resize(kbuf.size());
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t g = 0; g < a.nkv; ++g)
      for (int64_t qt = 0; qt < n_qt; ++qt) {
        const int64_t i0 = qt * kQTile, i1 = std::min(a.Lq, i0 + kQTile);
        const int64_t R = (i1 - i0) * G;
        std::fill(acc.begin(), acc.end(), 0.0f);
        std::fill(m.begin(), m.end(), -INFINITY);
        std::fill(l.begin(), l.end(), 0.0f);
        // Q rows of the tile, row r = (i - i0) * G + hh, pre-scaled (bf16_dot without a bf16
        // cache: the queries rounded, the rest f32).
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t hh = 0; hh < G; ++hh) {
            const float* q = a.q + i * a.ldq + (g * G + hh) * hd;
            float* dst = qt_buf.data() + ((i - i0) * G + hh) * hd;
            for (int64_t e = 0; e < hd; ++e)
              dst[e] = (a.bf16_dot ? bf16_to_f32(f32_to_bf16(q[e])) : q[e]) * a.scale;
          }
        const int64_t kend = std::min(a.T, a.pos0 + i1);  // keys beyond are masked for all rows
        for (int64_t j0 = 0; j0 < kend; j0 += kKTile) {
          const int64_t j1 = std::min(kend, j0 + kKTile), nk = j1 - j0;
          const float* K = kv_rows(a.k, a.k16, a, g, j0, j1, kbuf.data());
          const bool all_valid = tile_all_valid(a.key_valid, j0, j1);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(R), blasint(nk), blasint(hd),
                      1.0f, qt_buf.data(), blasint(hd), K, blasint(hd), 0.0f, S.data(),
                      blasint(nk));
          for (int64_t r = 0; r < R; ++r) {
            const int64_t p = a.pos0 + i0 + r / G;
            float* sr = S.data() + r * nk;
            const float tile_max =
                mask_scores(sr, j0, j1, std::min(j1, p + 1), a.key_valid, all_valid);
            if (tile_max == -INFINITY) {  // nothing allowed in this tile: the row adds nothing
              std::fill(sr, sr + nk, 0.0f);
              continue;
            }
            online_softmax_step(sr, nk, tile_max, m[size_t(r)], l[size_t(r)], acc.data() + r * hd, hd);
          }
          const float* V = kv_rows(a.v, a.v16, a, g, j0, j1, vbuf.data());
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(R), blasint(hd), blasint(nk),
                      1.0f, S.data(), blasint(nk), V, blasint(hd), 1.0f, acc.data(),
                      blasint(hd));
        }
        write_tile_output(a, g, i0, i1, acc.data(), l.data());
      }
  }
}

void conv1d_silu(const ConvArgs& a) {
  const int64_t K = a.K, L = a.L, Din = a.Din;
  constexpr int64_t kBlock = 64;
  const int64_t nb = (Din + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (L * Din > 16384)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t d0 = b * kBlock, d1 = std::min(Din, d0 + kBlock), w = d1 - d0;
    // Local transposed copy of the old state: hist[j][c] = input at time (j - K) (j < K).
    float hist[16][kBlock];
    float wt[16][kBlock];
    const bool small = K <= 16;
    std::vector<float> hist_big, wt_big;
    float* H = &hist[0][0];
    float* Wt = &wt[0][0];
    if (!small) {
      hist_big.resize(static_cast<size_t>(K * kBlock));
      wt_big.resize(static_cast<size_t>(K * kBlock));
      H = hist_big.data();
      Wt = wt_big.data();
    }
    for (int64_t j = 0; j < K; ++j)
      for (int64_t c = 0; c < w; ++c) {
        H[j * kBlock + c] = a.state[(d0 + c) * K + j];
        Wt[j * kBlock + c] = a.w[(d0 + c) * K + j];
      }
    for (int64_t t = 0; t < L; ++t) {
      float acc[kBlock];
      for (int64_t c = 0; c < w; ++c) acc[c] = a.bias ? a.bias[d0 + c] : 0.0f;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t src = t - (K - 1) + j;
        const float* xs = src >= 0 ? a.x + src * a.ldx + d0 : H + (K + src) * kBlock;
        const float* wj = Wt + j * kBlock;
#pragma omp simd
        for (int64_t c = 0; c < w; ++c) acc[c] += wj[c] * xs[c];
      }
      float* o = a.out + t * a.ldo + d0;
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) o[c] = silu_fast(acc[c]);
    }
    // New state: the last K inputs.
    for (int64_t j = 0; j < K; ++j) {
      const int64_t src = L - K + j;
      for (int64_t c = 0; c < w; ++c)
        a.state[(d0 + c) * K + j] = src >= 0 ? a.x[src * a.ldx + d0 + c] : H[(K + src) * kBlock + c];
    }
  }
}

// Channel-vectorised scan: 16 channels per lane group, state kept in a local [N][16] block.
void selective_scan(const ScanArgs& a) {
  constexpr int64_t W = 16;
  const int64_t N = a.N;
  std::vector<float> hbuf(static_cast<size_t>(N * W));
  for (int64_t c0 = a.d0; c0 < a.d1; c0 += W) {
    const int64_t w = std::min(W, a.d1 - c0);
    float Ab[W * 64];
    std::vector<float> Abig;
    float* Al = Ab;
    if (N > 64) {
      Abig.resize(static_cast<size_t>(N * W));
      Al = Abig.data();
    }
    float* h = hbuf.data();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < W; ++c) {
        h[n * W + c] = c < w ? a.h[(c0 + c) * N + n] : 0.0f;
        Al[n * W + c] = c < w ? a.A[(c0 + c) * N + n] : 0.0f;
      }
    for (int64_t t = 0; t < a.L; ++t) {
      float dt[W], x[W], dtx[W], y[W], z[W];
      for (int64_t c = 0; c < W; ++c) {
        const bool in = c < w;
        dt[c] = in ? a.dt[t * a.lddt + c0 + c] : 0.0f;
        x[c] = in ? a.x[t * a.ldx + c0 + c] : 0.0f;
        z[c] = in ? a.z[t * a.ldz + c0 + c] : 0.0f;
        dtx[c] = dt[c] * x[c];
        y[c] = 0.0f;
      }
      const float* Bt = a.Bm + t * a.ldb;
      const float* Ct = a.Cm + t * a.ldc;
      for (int64_t n = 0; n < N; ++n) {
        const float bn = Bt[n], cn = Ct[n];
        float* hn = h + n * W;
        const float* An = Al + n * W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) {
          hn[c] = exp_fast(dt[c] * An[c]) * hn[c] + dtx[c] * bn;
          y[c] += hn[c] * cn;
        }
      }
      float* yo = a.y + t * a.ldy + c0;
      for (int64_t c = 0; c < w; ++c) yo[c] = (y[c] + a.D[c0 + c] * x[c]) * silu_fast(z[c]);
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < w; ++c) a.h[(c0 + c) * N + n] = h[n * W + c];
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = silu_fast(gate[i]) * up[i];
}

void softplus(float* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] = softplus_fast(x[i]);
}

}  // namespace jamba::cpu
