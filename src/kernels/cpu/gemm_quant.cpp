// GEMM with quantized weights (int8 per-row scales, q4 groups of 32) and f32 activations (see
// kernels.h, kernels/quant.h). The structure of gemm_bf16.cpp: M <= 32 streams the quantized
// weights (decode is memory-bound: the weights are widened to f32 in registers and reused for
// up to 8 activation rows); larger M widens panels of weight rows to f32 and runs sgemm.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
// GCC 12 reports its own _mm512_undefined_epi32() inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba::cpu {

namespace {

constexpr int64_t kMaxSmallM = 8;    // activation rows per register-blocked pass
constexpr int64_t kStreamMaxM = 32;  // up to this many rows, stream the weights M/8 times

// The fields both argument structs share.
struct Common {
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  float* C;
  int64_t ldc;
  const float* bias;
  bool accumulate;
};

#if defined(__AVX512F__)
inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }
#endif

// Independent accumulator chains per activation row: with few rows, one FMA chain per 16 weights
// would be bound by the FMA latency (4 cycles), not by memory; 4 chains per row hide it.
template <int MR>
constexpr int kChains = MR <= 2 ? 4 : 2;

// out[m] = sum_k A[m,k] * q[k] (unscaled) for one int8 weight row and MR activation rows.
struct DotQ8 {
  const GemmQ8Args& a;
  void prepare(const float*, int64_t) {}
  template <int MR>
  void run(const float* A, int64_t n, float* out) const {
    const int8_t* w = a.W + n * a.ldw;
    const int64_t K = a.K, lda = a.lda;
    int64_t k = 0;
#if defined(__AVX512F__)
    constexpr int U = kChains<MR>;
    __m512 acc[U][MR];
    for (int u = 0; u < U; ++u)
      for (int m = 0; m < MR; ++m) acc[u][m] = _mm512_setzero_ps();
    for (; k + 16 * U <= K; k += 16 * U)
      for (int u = 0; u < U; ++u) {
        const __m512 wf = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k + 16 * u))));
        for (int m = 0; m < MR; ++m)
          acc[u][m] = _mm512_fmadd_ps(_mm512_loadu_ps(A + m * lda + k + 16 * u), wf, acc[u][m]);
      }
    for (; k + 16 <= K; k += 16) {
      const __m512 wf = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k))));
      for (int m = 0; m < MR; ++m)
        acc[0][m] = _mm512_fmadd_ps(_mm512_loadu_ps(A + m * lda + k), wf, acc[0][m]);
    }
    for (int m = 0; m < MR; ++m) {
      __m512 t = acc[0][m];
      for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, acc[u][m]);
      out[m] = hsum(t);
    }
#else
    for (int m = 0; m < MR; ++m) out[m] = 0.0f;
#endif
    for (; k < K; ++k)
      for (int m = 0; m < MR; ++m) out[m] += A[m * lda + k] * float(w[k]);
    for (int m = 0; m < MR; ++m) out[m] *= a.scale[n];
  }
};

// out[m] = sum_k A[m,k] * s[k/32] * q[k] for one q4 weight row and MR activation rows. With n
// the stored nibble (q = n - 8), a full group g adds s_g * (sum_j n_j x_j - 8 * xsum_g): the
// scale is applied once per group and the -8 once per call (xsum_g = sum of the group's
// activations, made by prepare() for each chunk of rows), so a weight costs only its widening.
struct DotQ4 {
  const GemmQ4Args& a;
  std::vector<float> xsum;  // [MR, full groups] of the current chunk of rows

  void prepare(const float* A, int64_t rows) {
    const int64_t full = a.K / kQ4Group;
    xsum.assign(static_cast<size_t>(rows * full), 0.0f);
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t g = 0; g < full; ++g) {
        float t = 0.0f;
        for (int64_t j = 0; j < kQ4Group; ++j) t += A[m * a.lda + g * kQ4Group + j];
        xsum[size_t(m * full + g)] = t;
      }
  }

  template <int MR>
  void run(const float* A, int64_t n, float* out) const {
    const uint8_t* w = a.W + n * a.ldw;
    const float* s = a.scale + n * a.lds;
    const int64_t K = a.K, lda = a.lda, full = K / kQ4Group;
    for (int m = 0; m < MR; ++m) out[m] = 0.0f;
    int64_t k = 0;
#if defined(__AVX512F__)
    constexpr int U = kChains<MR> / 2;  // groups per step, one chain each
    __m512 acc[U][MR];
    for (int u = 0; u < U; ++u)
      for (int m = 0; m < MR; ++m) acc[u][m] = _mm512_setzero_ps();
    const __m512i low = _mm512_set1_epi32(0x0F);
    auto group = [&](int64_t g, __m512 (&ac)[MR]) {
      const __m512i v = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + g * kQ4GroupBytes)));
      const __m512 n0 = _mm512_cvtepi32_ps(_mm512_and_si512(v, low));  // values 0..15
      const __m512 n1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));   // values 16..31
      const __m512 sc = _mm512_set1_ps(s[g]);
      const int64_t k0 = g * kQ4Group;
      for (int m = 0; m < MR; ++m) {
        const __m512 t = _mm512_fmadd_ps(_mm512_loadu_ps(A + m * lda + k0 + 16), n1,
                                         _mm512_mul_ps(_mm512_loadu_ps(A + m * lda + k0), n0));
        ac[m] = _mm512_fmadd_ps(t, sc, ac[m]);
      }
    };
    int64_t g = 0;
    for (; g + U <= full; g += U)
      for (int u = 0; u < U; ++u) group(g + u, acc[u]);
    for (; g < full; ++g) group(g, acc[0]);
    for (int m = 0; m < MR; ++m) {
      __m512 t = acc[0][m];
      for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, acc[u][m]);
      // - 8 * sum_g s_g * xsum_g
      const float* xs = xsum.data() + m * full;
      __m512 o = _mm512_setzero_ps();
      int64_t h = 0;
      for (; h + 16 <= full; h += 16)
        o = _mm512_fmadd_ps(_mm512_loadu_ps(s + h), _mm512_loadu_ps(xs + h), o);
      float r = hsum(t) - 8.0f * hsum(o);
      for (; h < full; ++h) r -= 8.0f * s[h] * xs[h];
      out[m] = r;
    }
    k = full * kQ4Group;
#endif
    for (; k < K; ++k) {
      const float wk = s[k / kQ4Group] * float(q4_value(w, k));
      for (int m = 0; m < MR; ++m) out[m] += A[m * lda + k] * wk;
    }
  }
};

template <int MR, typename Dot>
void small_m(const Common& c, const Dot& dot) {
#pragma omp parallel for schedule(static) if (c.N * c.K > 65536)
  for (int64_t n = 0; n < c.N; ++n) {
    float r[MR];
    dot.template run<MR>(c.A, n, r);
    for (int m = 0; m < MR; ++m) {
      const float v = r[m] + (c.bias ? c.bias[n] : 0.0f);
      float& y = c.C[m * c.ldc + n];
      y = c.accumulate ? y + v : v;
    }
  }
}

// Chunks of up to 8 activation rows; Dot reads the rows from the pointer it is given.
template <typename Args, typename Dot>
void stream(const Common& c, const Args& a) {
  Dot dot{a};
  for (int64_t m0 = 0; m0 < c.M; m0 += kMaxSmallM) {
    Common s = c;
    s.M = std::min(kMaxSmallM, c.M - m0);
    s.A = c.A + m0 * c.lda;
    s.C = c.C + m0 * c.ldc;
    dot.prepare(s.A, s.M);
    switch (s.M) {
      case 1: small_m<1>(s, dot); break;
      case 2: small_m<2>(s, dot); break;
      case 3: small_m<3>(s, dot); break;
      case 4: small_m<4>(s, dot); break;
      case 5: small_m<5>(s, dot); break;
      case 6: small_m<6>(s, dot); break;
      case 7: small_m<7>(s, dot); break;
      default: small_m<8>(s, dot); break;
    }
  }
}

void widen_q8(const int8_t* q, float scale, int64_t K, float* out) {
  int64_t k = 0;
#if defined(__AVX512F__)
  const __m512 sc = _mm512_set1_ps(scale);
  for (; k + 16 <= K; k += 16)
    _mm512_storeu_ps(out + k, _mm512_mul_ps(sc, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k))))));
#endif
  for (; k < K; ++k) out[k] = scale * float(q[k]);
}

void widen_q4(const uint8_t* q, const float* s, int64_t K, float* out) {
  int64_t k = 0;
#if defined(__AVX512F__)
  const __m512i low = _mm512_set1_epi32(0x0F);
  for (int64_t g = 0; g < K / kQ4Group; ++g, k += kQ4Group) {
    const __m512i v = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + g * kQ4GroupBytes)));
    const __m512 sc = _mm512_set1_ps(s[g]), off = _mm512_set1_ps(-8.0f * s[g]);
    _mm512_storeu_ps(out + k, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, low)), sc, off));
    _mm512_storeu_ps(out + k + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), sc, off));
  }
#endif
  for (; k < K; ++k) out[k] = s[k / kQ4Group] * float(q4_value(q, k));
}

// Panels of NB weight rows widened to f32 (per thread), each multiplied by all M rows with a
// single-threaded sgemm inside the parallel loop (the OpenMP OpenBLAS runs serially there).
template <typename Widen>
void panels(const Common& a, const Widen& widen) {
  constexpr int64_t NB = 128;
  const int64_t nb = (a.N + NB - 1) / NB;
#pragma omp parallel
  {
    std::vector<float> panel(static_cast<size_t>(NB * a.K));
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t n0 = b * NB, n1 = std::min(a.N, n0 + NB), rows = n1 - n0;
      for (int64_t r = 0; r < rows; ++r) widen(n0 + r, panel.data() + r * a.K);
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

}  // namespace

void gemm_q8(const GemmQ8Args& a) {
  if (a.M == 0 || a.N == 0) return;
  const Common c{a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate};
  if (a.M <= kStreamMaxM)
    stream<GemmQ8Args, DotQ8>(c, a);
  else
    panels(c, [&](int64_t n, float* out) { widen_q8(a.W + n * a.ldw, a.scale[n], a.K, out); });
}

void gemm_q4(const GemmQ4Args& a) {
  if (a.M == 0 || a.N == 0) return;
  const Common c{a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate};
  if (a.M <= kStreamMaxM)
    stream<GemmQ4Args, DotQ4>(c, a);
  else
    panels(c, [&](int64_t n, float* out) {
      widen_q4(a.W + n * a.ldw, a.scale + n * a.lds, a.K, out);
    });
}

}  // namespace jamba::cpu
