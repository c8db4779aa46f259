// GEMM with bf16 weights and f32 activations (see kernels.h).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
// GCC 12 reports its own _mm512_undefined_epi32() inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "core/alloc.h"
#include "core/dtype.h"
#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/kernels.h"

namespace jamba::cpu {

namespace {

constexpr int64_t kMaxSmallM = 8;   // rows per register-blocked pass
constexpr int64_t kStreamMaxM = 32;  // up to this many rows, stream the bf16 weights M/8 times
                                     // rather than widening every panel to f32
// bf16 activations: from this many rows oneDNN's bf16 matmul beats the vdpbf16ps kernel (2
// threads, 2048 x 1024 expert matrix: M = 8: 198 vs 224 GFLOP/s; M = 16: 297 vs 221).
constexpr int64_t kDnnlMinM = 9;
// Software prefetch distance in each weight row (bf16 elements), measured on a 16384 x 4096
// matrix (2 threads): M = 1 streams 28 GB/s without, 50 with 256 ahead (43 with 1024); M = 8
// (64-byte aligned rows, k blocks of 512) goes 26 -> 34 GB/s with 512 ahead (32 with 1024).
template <int MR>
constexpr int64_t kPrefetchAhead = MR <= 2 ? 0 : 512;
// The f32-activation kernel with two activation rows (one row: gemv_streams, below) prefetches in
// each weight row: for short rows (NR rows <= kPrefetchNextRowsMax elements) the same column of
// the next NR rows (the rows the thread streams next), else 512 elements (1 KiB) ahead in the row.
// Measured when one-row decode took this kernel too, alternating runs, bf16 decode: moe1b (1024-
// and 2048-wide rows) 31.9-34.1 t/s with 1 KiB ahead -> 36.4-38.5 with the next rows (8-16 KiB
// ahead); r3b (2560-8192-wide) 4.12-4.13 with 1 KiB ahead, 3.93-4.06 with the next rows (20+ KiB
// ahead).
template <int MR>
constexpr bool kPrefetchF32 = MR <= 2;
constexpr int64_t kPrefetchNextRowsMax = 8192;
// One activation row (decode): each thread reads its rows as kGemvStreams runs of consecutive
// rows far apart in memory (a weight row from each run per pass) rather than as one run: a core
// keeps more DRAM reads in flight with several streams for the hardware prefetcher plus a software
// prefetch kGemvPrefetch elements ahead in each. The r3b decode matrices walked in a row
// (2.1 GB, 2 threads, medians of 11 interleaved passes, two runs): one run of 4 rows at a time
// 26.4-26.8 GB/s; 4 streams 29.4-29.7 (8 streams 29.3-29.7, 2 streams 27.2-28.8; 4 streams
// without the software prefetch 25.1-25.3, 256 ahead 28.4-28.5).
constexpr int kGemvStreams = 4;
constexpr int64_t kGemvPrefetch = 512;

// out[m][r] = sum_k A[m,k] * W[r,k] for NR weight rows (row r at w + r * rstep) and MR activation
// rows, prefetching pf elements ahead in each weight row when MR <= 2 (pf < 0: the rule above).
// Every (m, r) has its own accumulator walked in the same k order for any MR and NR, so a result
// does not depend on the other rows computed with it (bitwise); NR > 1 only gives one or two
// activation rows independent FMA chains (one chain is bound by the FMA latency: 16384 x 4096,
// M = 1, one thread 9.6 GB/s with NR = 1).
template <int MR, int NR>
void dot_rows(const float* A, int64_t lda, const uint16_t* w, int64_t rstep, int64_t K,
              float (*out)[NR], int64_t pf = -1) {
  int64_t k = 0;
#if defined(__AVX512F__)
  if (pf < 0) pf = NR * rstep <= kPrefetchNextRowsMax ? NR * rstep : 512;  // elements ahead
  __m512 acc[MR][NR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  for (; k + 16 <= K; k += 16) {
    __m512 wf[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      if constexpr (kPrefetchF32<MR>)  // (a prefetch past the matrix never faults)
        _mm_prefetch(reinterpret_cast<const char*>(w + r * rstep + k + pf), _MM_HINT_T0);
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * rstep + k));
      wf[r] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 av = _mm512_loadu_ps(A + m * lda + k);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(av, wf[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) {
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, acc[m][r]);
      float t = 0.0f;
      for (float v : lanes) t += v;
      out[m][r] = t;
    }
#else
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) out[m][r] = 0.0f;
#endif
  for (; k < K; ++k)  // explicit fma: the same rounding whether or not the m loop vectorises
    for (int r = 0; r < NR; ++r) {
      const float wk = bf16_to_f32(w[r * rstep + k]);
      for (int m = 0; m < MR; ++m) out[m][r] = std::fma(A[m * lda + k], wk, out[m][r]);
    }
}

// float32 activations: up to 16 rows per pass over the weights (16 zmm accumulators + the
// widened weights fit the 32 registers). Each row has its own accumulator walked in the same k
// order whatever MR is, so a row's result does not depend on the other rows in the batch
// (bitwise; the server relies on it, test KernelGemmBf16.F32RowsAreBatchInvariant).
constexpr int64_t kMaxSmallMF32 = 16;

// One activation row: C[n] = A . W[n] (+ bias, + C), kGemvStreams streams per thread.
void gemv_streams(const GemmBf16Args& a) {
  constexpr int S = kGemvStreams;
#pragma omp parallel if (a.N * a.K > 65536)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t n0 = a.N * t / nt, n1 = a.N * (t + 1) / nt, q = (n1 - n0) / S;
    auto put = [&](int64_t n, float v) {
      v += a.bias ? a.bias[n] : 0.0f;
      float& c = a.C[n];
      c = a.accumulate ? c + v : v;
    };
    for (int64_t i = 0; i < q; ++i) {
      float r[1][S];
      dot_rows<1, S>(a.A, a.lda, a.W + (n0 + i) * a.ldw, q * a.ldw, a.K, r, kGemvPrefetch);
      for (int s = 0; s < S; ++s) put(n0 + i + s * q, r[0][s]);
    }
    for (int64_t n = n0 + S * q; n < n1; ++n) {  // the last < S rows
      float r[1][1];
      dot_rows<1, 1>(a.A, a.lda, a.W + n * a.ldw, a.ldw, a.K, r, kGemvPrefetch);
      put(n, r[0][0]);
    }
  }
}

template <int MR>
void small_m(const GemmBf16Args& a) {
  constexpr int NR = MR <= 3 ? 2 : 1;  // weight rows per call (chains)
  const int64_t nblocks = (a.N + NR - 1) / NR;
#pragma omp parallel for schedule(static) if (a.N * a.K > 65536)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t n0 = b * NR, nr = std::min<int64_t>(NR, a.N - n0);
    float r[MR][NR];
    if (nr == NR) {
      dot_rows<MR, NR>(a.A, a.lda, a.W + n0 * a.ldw, a.ldw, a.K, r);
    } else {
      for (int64_t j = 0; j < nr; ++j) {
        float r1[MR][1];
        dot_rows<MR, 1>(a.A, a.lda, a.W + (n0 + j) * a.ldw, a.ldw, a.K, r1);
        for (int m = 0; m < MR; ++m) r[m][j] = r1[m][0];
      }
    }
    for (int64_t j = 0; j < nr; ++j)
      for (int m = 0; m < MR; ++m) {
        const float v = r[m][j] + (a.bias ? a.bias[n0 + j] : 0.0f);
        float& c = a.C[m * a.ldc + n0 + j];
        c = a.accumulate ? c + v : v;
      }
  }
}

// small_m<m> for a runtime m in [1, MR].
template <int MR>
void small_m_rows(int m, const GemmBf16Args& a) {
  if (m == 1) {
    gemv_streams(a);
  } else if (m == MR) {
    small_m<MR>(a);
  } else if constexpr (MR > 2) {
    small_m_rows<MR - 1>(m, a);
  }
}

void widen(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16)));
  }
#endif
  for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

// A[M, K] (lda) rounded to bf16 (nearest even), packed [M, K], 64-byte aligned.
Buffer<uint16_t> round_rows(const float* A, int64_t lda, int64_t M, int64_t K) {
  Buffer<uint16_t> out(static_cast<size_t>(M * K));
#pragma omp parallel for schedule(static) if (M * K > 65536)
  for (int64_t m = 0; m < M; ++m) {
    const float* src = A + m * lda;
    uint16_t* dst = out.data() + m * K;
    int64_t k = 0;
#if defined(__AVX512BF16__)
    for (; k + 16 <= K; k += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k))));
#endif
    for (; k < K; ++k) dst[k] = f32_to_bf16(src[k]);
  }
  return out;
}

#if defined(__AVX512BF16__)
// out[m][r] = sum_k A[m,k] * W[r,k] for NR weight rows and MR activation rows, all bf16, with
// vdpbf16ps (two products per f32 lane): each activation load serves NR weight rows.
template <int MR, int NR>
void dot_rows_bf16(const uint16_t* A, int64_t lda, const uint16_t* w, int64_t ldw, int64_t K,
                   float (*out)[NR]) {
  // The unroll pragmas keep all MR x NR accumulators in registers: left to itself GCC -O2 does
  // not peel 24 iterations and stored every accumulator to the stack after each product.
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  // Full 32-element steps use plain loads (masked ones ran the M = 1 kernel at half speed), the
  // tail a masked step.
  auto step = [&](int64_t k, __mmask32 mk, auto masked) __attribute__((always_inline)) {
    auto load = [&](const uint16_t* p) {
      if constexpr (decltype(masked)::value)
        return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mk, p));
      else
        return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
    };
    __m512bh wv[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      // The weights come from DRAM once; with MR rows of work per cache line the hardware
      // prefetcher alone leaves M = 8 latency-bound (a third of the M = 1 rate).
      if constexpr (kPrefetchAhead<MR> > 0)
        _mm_prefetch(reinterpret_cast<const char*>(w + r * ldw + k + kPrefetchAhead<MR>), _MM_HINT_T0);
      wv[r] = load(w + r * ldw + k);
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512bh av = load(A + m * lda + k);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], av, wv[r]);
    }
  };
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) step(k, 0, std::false_type{});
  if (k < K) step(k, __mmask32((1u << (K - k)) - 1u), std::true_type{});
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) out[m][r] = _mm512_reduce_add_ps(acc[m][r]);
}

template <int MR>
void small_m_bf16(const GemmBf16Args& a, const uint16_t* A, int64_t lda) {
  constexpr int NR = MR <= 4 ? 4 : 3;
  // Rows are taken kChunk blocks at a time and walked kblock columns at a time, so the MR x
  // kblock slice of A stays in L1 while the weights stream past it (a whole 8 x 4096 bf16 A is
  // 64 KB and was re-read from L2 for every block): 16384 x 4096 matrix, M = 8, 2 threads:
  // 26 -> 34 GB/s. One or two rows of A fit in L1 whole.
  constexpr int64_t kChunk = 64;
  const int64_t kblock = MR <= 2 ? a.K : 512;
  const int64_t nblocks = (a.N + NR - 1) / NR;
#pragma omp parallel if (a.N * a.K > 65536)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t b0 = nblocks * t / nt, b1 = nblocks * (t + 1) / nt;
    float part[kChunk * NR][MR];  // sums over the k blocks done so far, per weight row
    for (int64_t c0 = b0; c0 < b1; c0 += kChunk) {
      const int64_t c1 = std::min(b1, c0 + kChunk);
      for (int64_t k0 = 0; k0 < a.K; k0 += kblock) {
        const int64_t kl = std::min(kblock, a.K - k0);
        for (int64_t b = c0; b < c1; ++b) {
          const int64_t n0 = b * NR, nr = std::min<int64_t>(NR, a.N - n0);
          float r[MR][NR];
          if (nr == NR) {
            dot_rows_bf16<MR, NR>(A + k0, lda, a.W + n0 * a.ldw + k0, a.ldw, kl, r);
          } else {
            for (int64_t j = 0; j < nr; ++j) {
              float r1[MR][1];
              dot_rows_bf16<MR, 1>(A + k0, lda, a.W + (n0 + j) * a.ldw + k0, a.ldw, kl, r1);
              for (int m = 0; m < MR; ++m) r[m][j] = r1[m][0];
            }
          }
          float (*p)[MR] = part + (b - c0) * NR;
          for (int64_t j = 0; j < nr; ++j)
            for (int m = 0; m < MR; ++m) p[j][m] = k0 == 0 ? r[m][j] : p[j][m] + r[m][j];
        }
      }
      for (int64_t n = c0 * NR; n < std::min(a.N, c1 * NR); ++n)
        for (int m = 0; m < MR; ++m) {
          const float v = part[n - c0 * NR][m] + (a.bias ? a.bias[n] : 0.0f);
          float& c = a.C[m * a.ldc + n];
          c = a.accumulate ? c + v : v;
        }
    }
  }
}
#endif

// bf16_activations: round A, then oneDNN (large M, when bf16_route() says so) or the vdpbf16ps
// kernel (small M); otherwise (false) the rounded activations go through the f32-activation
// paths below.
bool gemm_bf16_rounded(const GemmBf16Args& a) {
  // One row: the f32 kernel on the rounded row (gemv_streams) was faster than the dot-product
  // kernel here (from DRAM, 2 threads: 2048 x 1024 matrices 47-49 vs 41-45
  // GB/s, 65536 x 1024 57 vs 48).
  if (a.M == 1) return false;
  const bool dnnl = a.M >= kDnnlMinM && bf16_route().route == Bf16Route::kOneDnn;
  if (!dnnl && a.M > kStreamMaxM) return false;  // the f32 panels (bf16_route)
  const Buffer<uint16_t> ab = round_rows(a.A, a.lda, a.M, a.K);
  if (dnnl && detail::dnnl_matmul_bf16(a.M, a.N, a.K, ab.data(), a.K, a.W, a.ldw, a.C, a.ldc,
                                       a.bias, a.accumulate))
    return true;
#if defined(__AVX512BF16__)
  if (a.M <= kStreamMaxM) {
    GemmBf16Args s = a;
    for (int64_t m0 = 0; m0 < a.M; m0 += kMaxSmallM) {
      s.M = std::min(kMaxSmallM, a.M - m0);
      s.C = a.C + m0 * a.ldc;
      const uint16_t* A = ab.data() + m0 * a.K;
      switch (s.M) {
        case 1: small_m_bf16<1>(s, A, a.K); break;
        case 2: small_m_bf16<2>(s, A, a.K); break;
        case 3: small_m_bf16<3>(s, A, a.K); break;
        case 4: small_m_bf16<4>(s, A, a.K); break;
        case 5: small_m_bf16<5>(s, A, a.K); break;
        case 6: small_m_bf16<6>(s, A, a.K); break;
        case 7: small_m_bf16<7>(s, A, a.K); break;
        default: small_m_bf16<8>(s, A, a.K); break;
      }
    }
    return true;
  }
#endif
  return false;
}

}  // namespace

bool have_dnnl() { return detail::dnnl_available(); }

namespace {
std::atomic<Bf16Route> g_route{Bf16Route::kAuto};

// Seconds of the faster of 3 runs of f (after one warm-up run).
template <class F>
double best_seconds(F&& f) {
  f();
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

Bf16RouteChoice measure_bf16_route() {
  if (!detail::dnnl_available()) return {Bf16Route::kF32Panels};
  // A prefill-like product (1.8 GFLOP, ~10 ms a run): with 256 x 1024 x 1024 (2 MiB of
  // weights, cached) the two routes measured closer than on the models' matrices (146 vs 166
  // GFLOP/s where r3b's prefill then ran 152 vs 241) and the choice flipped between runs.
  constexpr int64_t M = 384, N = 1536, K = 1536;
  std::vector<float> A(size_t(M * K)), C(size_t(M * N));
  std::vector<uint16_t> W(size_t(N * K));
  for (size_t i = 0; i < A.size(); ++i) A[i] = float(int(i % 17) - 8) * 0.125f;
  for (size_t i = 0; i < W.size(); ++i) W[i] = f32_to_bf16(float(int(i % 13) - 6) * 0.0625f);
  const Buffer<uint16_t> ab = round_rows(A.data(), K, M, K);
  bool ok = true;
  const double t_dnnl = best_seconds([&] {
    ok = ok && detail::dnnl_matmul_bf16(M, N, K, ab.data(), K, W.data(), K, C.data(), N, nullptr, false);
  });
  if (!ok) return {Bf16Route::kF32Panels};
  GemmBf16Args f{.M = M, .N = N, .K = K, .A = A.data(), .lda = K, .W = W.data(), .ldw = K,
                 .C = C.data(), .ldc = N};
  const double t_panels = best_seconds([&] { gemm_bf16(f); });
  const double flop = 2.0 * M * N * K / 1e9;
  return {t_dnnl > 1.1 * t_panels ? Bf16Route::kF32Panels : Bf16Route::kOneDnn, flop / t_dnnl,
          flop / t_panels};
}
}  // namespace

void set_bf16_route(Bf16Route r) { g_route = r; }

Bf16RouteChoice bf16_route() {
  const Bf16Route r = g_route;
  if (r != Bf16Route::kAuto) return {r};
  if (omp_in_parallel()) return {Bf16Route::kOneDnn};
  static const Bf16RouteChoice measured = measure_bf16_route();
  return measured;
}

void gemm_bf16_kn(const GemmBf16KnArgs& a) {
  if (a.M == 0 || a.N == 0) return;
  if (a.K == 0) {
    if (!a.accumulate)
      for (int64_t m = 0; m < a.M; ++m) std::fill_n(a.C + m * a.ldc, a.N, 0.0f);
    return;
  }
  const Buffer<uint16_t> ab = round_rows(a.A, a.lda, a.M, a.K);
  if (detail::dnnl_matmul_bf16(a.M, a.N, a.K, ab.data(), a.K, a.W, a.ldw, a.C, a.ldc, nullptr,
                               a.accumulate, /*w_kn=*/true))
    return;
  Scratch af(ab.size());
  widen(ab.data(), af.data(), int64_t(ab.size()));
  // Blocks of kRows rows of W widened to f32, each a rank-kRows update of C.
  constexpr int64_t kRows = 256;
  Scratch wf(static_cast<size_t>(std::min(kRows, a.K) * a.N));
  for (int64_t k0 = 0; k0 < a.K; k0 += kRows) {
    const int64_t kb = std::min(kRows, a.K - k0);
    for (int64_t r = 0; r < kb; ++r) widen(a.W + (k0 + r) * a.ldw, wf.data() + r * a.N, a.N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(a.M), blasint(a.N),
                blasint(kb), 1.0f, af.data() + k0, blasint(a.K), wf.data(), blasint(a.N),
                (a.accumulate || k0 > 0) ? 1.0f : 0.0f, a.C, blasint(a.ldc));
  }
}

void gemm_bf16(const GemmBf16Args& a) {
  if (a.M == 0 || a.N == 0) return;
  if (a.bf16_activations) {
    if (gemm_bf16_rounded(a)) return;
    // The f32-activation paths on the rounded values (widened back, exact).
    const Buffer<uint16_t> ab = round_rows(a.A, a.lda, a.M, a.K);
    Scratch rounded(ab.size());
    widen(ab.data(), rounded.data(), int64_t(ab.size()));
    GemmBf16Args f = a;
    f.A = rounded.data();
    f.lda = a.K;
    f.bf16_activations = false;
    gemm_bf16(f);
    return;
  }
  if (a.M <= kStreamMaxM) {
    // Split M into chunks the register-blocked kernel handles.
    GemmBf16Args s = a;
    for (int64_t m0 = 0; m0 < a.M; m0 += kMaxSmallMF32) {
      s.M = std::min(kMaxSmallMF32, a.M - m0);
      s.A = a.A + m0 * a.lda;
      s.C = a.C + m0 * a.ldc;
      small_m_rows<kMaxSmallMF32>(int(s.M), s);
    }
    return;
  }
  // Panels of NB weight rows widened to f32 (per thread), each multiplied by all M rows with a
  // single-threaded sgemm inside the parallel loop (the OpenMP OpenBLAS runs serially there).
  constexpr int64_t NB = 128;
  const int64_t nb = (a.N + NB - 1) / NB;
#pragma omp parallel
  {
    std::vector<float> panel(static_cast<size_t>(NB * a.K));
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t n0 = b * NB, n1 = std::min(a.N, n0 + NB), rows = n1 - n0;
      for (int64_t r = 0; r < rows; ++r) widen(a.W + (n0 + r) * a.ldw, panel.data() + r * a.K, a.K);
      float beta = a.accumulate ? 1.0f : 0.0f;
      if (a.bias) {
        for (int64_t m = 0; m < a.M; ++m) {
          float* c = a.C + m * a.ldc + n0;
          for (int64_t r = 0; r < rows; ++r) c[r] = (a.accumulate ? c[r] : 0.0f) + a.bias[n0 + r];
        }
        beta = 1.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(a.M), blasint(rows),
                  blasint(a.K), 1.0f, a.A, blasint(a.lda), panel.data(), blasint(a.K), beta,
                  a.C + n0, blasint(a.ldc));
    }
  }
}

}  // namespace jamba::cpu
