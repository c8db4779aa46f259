// GEMM with quantized weights (int8 per-row scales, q4 groups of 32) and rounded activations
// (see kernels.h, kernels/quant.h). The structure of gemm_bf16.cpp: M <= 32 streams the
// quantized weights (decode is memory-bound: int8 multiplies its sign-extended weights with
// int16-rounded activations, q4 its nibbles with int8-rounded ones, by AVX-512 VNNI, each
// weight load serving up to 8 activation rows). Larger M: int8 runs oneDNN's VNNI int8 matmul
// on the exact byte split of its int16 activations (gemm_q8_dnnl), or without oneDNN the same
// dots as decode over cached panels of weight rows (blocked; sgemm on widened panels without
// VNNI); q4 rounds its rows again to int8 per row and takes the int8 path (kernels.h).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
// int8 at large M without oneDNN: the streaming kernels over cached panels where they are VNNI
// (blocked() below); elsewhere the weights widened to f32 for sgemm.
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define JAMBA_QUANT_VNNI 1
#else
#define JAMBA_QUANT_VNNI 0
#endif
// GCC 12 reports its own _mm512_undefined_epi32() inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "core/alloc.h"
#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba::cpu {

namespace {

constexpr int64_t kMaxSmallM = 8;    // activation rows per register-blocked pass
constexpr int64_t kStreamMaxM = kQ4StreamMaxM;  // up to this many rows, stream the weights M/8 times

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

// Grows a per-thread scratch vector to at least n elements (never shrinks, never clears).
template <typename V>
void grow(V& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
}

// An activation row rounded per row to int16, or to int8 held as int16 (act8: the large-M q4
// product), for the int8 product's int16 kernels.
void round_row16(const float* x, int64_t K, bool act8, int16_t* q, float* d) {
  if (!act8) {
    quantize_act_int16(x, K, q, d);
    return;
  }
  thread_local std::vector<int8_t> q8;
  grow(q8, K);
  quantize_act_int8(x, K, q8.data(), d);
  for (int64_t k = 0; k < K; ++k) q[k] = q8[size_t(k)];
}

// One int8 weight row against MR activation rows rounded to int16 (kernels.h): vpdpwssd adds 32
// products (int16 pairs) into 16 int32 lanes, from the weights sign-extended to int16 and the
// rows' int16 values (zero-padded to a multiple of 32). A lane gains at most 2 * 127 * 32767
// per step; the int32 sums move to f32 every kFlush columns (128 steps: <= 1.07e9 < 2^31).
// kAct8: the rows rounded to int8 instead (the large-M q4 product, kernels.h), held as int16.
template <bool kAct8>
struct DotQ8T {
  static constexpr int64_t kFlush = 4096;
  // Software prefetch distance (bytes; past a row's end it fetches the thread's next rows),
  // measured M = 8 / 4 on 10240 x 2560, 2 threads: 512 ahead 15 / 34 GB/s, 1024 18 / 38,
  // 2048 20 / 41, 4096 23 / 37.
  template <int MR>
  static constexpr int64_t kAhead = MR > 4 ? 4096 : 2048;
  const GemmQ8Args& a;
  int64_t Kp = 0;
  AlignedVector<int16_t> qa;  // [rows, Kp]
  std::vector<float> da;      // [rows]

  void prepare(const float* A, int64_t rows) {
    Kp = (a.K + 31) / 32 * 32;
    qa.assign(static_cast<size_t>(rows * Kp), 0);
    da.resize(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static) if (rows > kMaxSmallM)
    for (int64_t m = 0; m < rows; ++m)
      round_row16(A + m * a.lda, a.K, kAct8, qa.data() + m * Kp, &da[size_t(m)]);
  }

  template <int MR>
  void run(int64_t m0, int64_t n, float* out) const {
    const int8_t* w = a.W + n * a.ldw;
    const int16_t* q0 = qa.data() + m0 * Kp;
    const float* d0 = da.data() + m0;
    const int64_t K = a.K;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    constexpr int U = MR <= 2 ? 4 : (MR <= 4 ? 2 : 1);  // chains per row (vpdpwssd latency)
    // The unroll pragmas keep the accumulators in registers (GCC -O2 left MR = 8 on the stack).
    __m512 f[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) f[m] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < K; k0 += kFlush) {
      const int64_t k1 = std::min(K, k0 + kFlush);
      __m512i acc[U][MR];
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
        for (int m = 0; m < MR; ++m) acc[u][m] = _mm512_setzero_si512();
      int64_t k = k0;
      for (; k + 32 * U <= k1; k += 32 * U)
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          // More rows of work per weight line leave the stream latency-bound without a
          // software prefetch (M = 8, 10240 x 2560: 8 -> 23 GB/s), as in gemm_bf16.cpp.
          if (u % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(w + k + 32 * u + kAhead<MR>), _MM_HINT_T0);
          const __m512i wv = _mm512_cvtepi8_epi16(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k + 32 * u)));
#pragma GCC unroll 8
          for (int m = 0; m < MR; ++m)
            acc[u][m] = _mm512_dpwssd_epi32(acc[u][m], wv, _mm512_load_si512(q0 + m * Kp + k + 32 * u));
        }
      // The last steps into their own sums: sharing acc with the loop above made GCC copy
      // every accumulator twice per step (M = 8: 16 extra moves per 8 products).
      __m512i tail[MR];
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) tail[m] = _mm512_setzero_si512();
      for (; k < k1; k += 32) {
        const __mmask32 mk = k1 - k >= 32 ? ~__mmask32(0) : __mmask32((1u << (k1 - k)) - 1u);
        const __m512i wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mk, w + k));
#pragma GCC unroll 8
        for (int m = 0; m < MR; ++m)
          tail[m] = _mm512_dpwssd_epi32(tail[m], wv, _mm512_load_si512(q0 + m * Kp + k));
      }
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        __m512i t = _mm512_add_epi32(acc[0][m], tail[m]);
#pragma GCC unroll 4
        for (int u = 1; u < U; ++u) t = _mm512_add_epi32(t, acc[u][m]);
        f[m] = _mm512_add_ps(f[m], _mm512_cvtepi32_ps(t));
      }
    }
    for (int m = 0; m < MR; ++m) out[m] = a.scale[n] * d0[m] * _mm512_reduce_add_ps(f[m]);
#else
    for (int m = 0; m < MR; ++m) {
      int64_t dot = 0;
      for (int64_t k = 0; k < K; ++k) dot += int64_t(w[k]) * q0[m * Kp + k];
      out[m] = a.scale[n] * d0[m] * float(dot);
    }
#endif
  }
};
using DotQ8 = DotQ8T<false>;

// One q4 weight row against MR activation rows rounded per group to int8 (kernels.h). Groups go
// in quads: the 64 bytes of groups g0..g3 give, masked, their low nibbles (values 0-15 of each
// group, byte order) and, shifted, their high nibbles (values 16-31); prepare() stores each
// row's int8 activations in both orders, so two dpbusd (u8 nibbles x s8 activations) add the
// 128 products of the quad into 16 int32 lanes, lanes 4j..4j+3 belonging to group gj, converted
// once and scaled per lane by sw * da. With n = q + 8, a group gives sw * da * (sum n * qa -
// 8 * sum qa): the -8 term is one dot of the weight scales with c = da * sum qa per row. A last
// quad with fewer than 4 full groups is masked (zero activations and scales for the missing
// ones); a partial last group (K % 32) runs scalar on the same integers.
struct DotQ4 {
  const GemmQ4Args& a;
  int64_t G = 0, FG = 0, quads = 0;
  std::vector<int8_t> qa;    // [rows, G * 32] natural order
  std::vector<int8_t> qlo;   // [rows, quads * 64] values 0-15 of each group of the quad
  std::vector<int8_t> qhi;   // [rows, quads * 64] values 16-31
  std::vector<float> da;     // [rows, G]
  std::vector<float> dpat;   // [rows, quads * 16] lane scales: da of group 4q + lane / 4
  std::vector<float> c;      // [rows, G] da * sum qa

  void prepare(const float* A, int64_t rows) {
    G = q4_groups(a.K);
    FG = a.K / kQ4Group;
    quads = (FG + 3) / 4;
    qa.resize(static_cast<size_t>(rows * G * kQ4Group));
    qlo.assign(static_cast<size_t>(rows * quads * 64), 0);
    qhi.assign(static_cast<size_t>(rows * quads * 64), 0);
    da.resize(static_cast<size_t>(rows * G));
    dpat.assign(static_cast<size_t>(rows * quads * 16), 0.0f);
    c.resize(static_cast<size_t>(rows * G));
    for (int64_t m = 0; m < rows; ++m) {
      int8_t* q = qa.data() + m * G * kQ4Group;
      float* d = da.data() + m * G;
      quantize_act_q4(A + m * a.lda, a.K, q, d);
      for (int64_t g = 0; g < G; ++g) {
        int32_t t = 0;
        for (int64_t j = 0; j < kQ4Group; ++j) t += q[g * kQ4Group + j];
        c[size_t(m * G + g)] = d[g] * float(t);
      }
      for (int64_t g = 0; g < FG; ++g) {
        const int64_t qd = g / 4, j = g % 4;
        int8_t* lo = qlo.data() + (m * quads + qd) * 64 + j * 16;
        int8_t* hi = qhi.data() + (m * quads + qd) * 64 + j * 16;
        for (int i = 0; i < 16; ++i) {
          lo[i] = q[g * kQ4Group + i];
          hi[i] = q[g * kQ4Group + 16 + i];
        }
        for (int i = 0; i < 4; ++i) dpat[size_t((m * quads + qd) * 16 + j * 4 + i)] = d[g];
      }
    }
  }

  template <int MR>
  void run(int64_t m0, int64_t n, float* out) const {
    const uint8_t* w = a.W + n * a.ldw;
    const uint16_t* s = a.scale + n * a.lds;  // bf16 bits
    const int64_t K = a.K;
    for (int m = 0; m < MR; ++m) out[m] = 0.0f;
    int64_t g_done = 0;
#if defined(__AVX512VNNI__)
    // Quads per step, one accumulator chain each: with one or two rows a single chain would be
    // bound by the FMA latency, not by memory.
    constexpr int U = MR <= 2 ? 2 : 1;
    __m512 acc[U][MR];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) acc[u][m] = _mm512_setzero_ps();
    const __m512i low = _mm512_set1_epi8(0x0F);
    const __m512i pat = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    auto quad = [&](int64_t qd, __m512(&ac)[MR], int ng) __attribute__((always_inline)) {
      // As DotQ8: a software prefetch (one per quad = cache line) when several rows share it.
      _mm_prefetch(reinterpret_cast<const char*>(w + qd * 64 + 4096), _MM_HINT_T0);
      __m512i raw;
      __m128i h4;  // the quad's 4 bf16 scales
      if (ng == 4) {
        raw = _mm512_loadu_si512(w + qd * 64);
        h4 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + qd * 4));
      } else {  // the last, partial quad: only its ng full groups
        raw = _mm512_maskz_loadu_epi8(__mmask64((uint64_t(1) << (16 * ng)) - 1), w + qd * 64);
        h4 = _mm_maskz_loadu_epi16(__mmask8((1u << ng) - 1), s + qd * 4);
      }
      const __m128 s4 = _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h4), 16));
      const __m512i lo = _mm512_and_si512(raw, low);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
      const __m512 sw = _mm512_permutexvar_ps(pat, _mm512_castps128_ps512(s4));
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        const int64_t o = (m0 + m) * quads + qd;
        __m512i t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(qlo.data() + o * 64));
        t = _mm512_dpbusd_epi32(t, hi, _mm512_loadu_si512(qhi.data() + o * 64));
        const __m512 sc = _mm512_mul_ps(sw, _mm512_loadu_ps(dpat.data() + o * 16));
        ac[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), sc, ac[m]);
      }
    };
    const int64_t full = FG / 4;
    int64_t qd = 0;
    for (; qd + U <= full; qd += U)
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) quad(qd + u, acc[u], 4);
    for (; qd < full; ++qd) quad(qd, acc[0], 4);
    if (FG % 4) quad(full, acc[0], int(FG % 4));
    g_done = FG;
    for (int m = 0; m < MR; ++m) {
      __m512 t = acc[0][m];
      for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, acc[u][m]);
      const float* cm = c.data() + (m0 + m) * G;
      __m512 o = _mm512_setzero_ps();
      int64_t h = 0;
      for (; h + 16 <= g_done; h += 16) {
        const __m512 sh = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + h))), 16));
        o = _mm512_fmadd_ps(sh, _mm512_loadu_ps(cm + h), o);
      }
      float r = _mm512_reduce_add_ps(t) - 8.0f * _mm512_reduce_add_ps(o);
      for (; h < g_done; ++h) r -= 8.0f * bf16_to_f32(s[h]) * cm[h];
      out[m] = r;
    }
#endif
    for (int64_t g = g_done; g < G; ++g)
      for (int m = 0; m < MR; ++m) {
        const int8_t* q = qa.data() + ((m0 + m) * G + g) * kQ4Group;
        int32_t dot = 0;
        for (int64_t k = g * kQ4Group; k < std::min(K, (g + 1) * kQ4Group); ++k)
          dot += q4_value(w, k) * q[k - g * kQ4Group];
        out[m] += bf16_to_f32(s[g]) * da[size_t((m0 + m) * G + g)] * float(dot);
      }
  }
};

template <int MR, typename Dot>
void small_m(const Common& c, const Dot& dot) {
#pragma omp parallel for schedule(static) if (c.N * c.K > 65536)
  for (int64_t n = 0; n < c.N; ++n) {
    float r[MR];
    dot.template run<MR>(0, n, r);
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
      case 1:
        small_m<1>(s, dot);
        break;
      case 2:
        small_m<2>(s, dot);
        break;
      case 3:
        small_m<3>(s, dot);
        break;
      case 4:
        small_m<4>(s, dot);
        break;
      case 5:
        small_m<5>(s, dot);
        break;
      case 6:
        small_m<6>(s, dot);
        break;
      case 7:
        small_m<7>(s, dot);
        break;
      default:
        small_m<8>(s, dot);
        break;
    }
  }
}

#if JAMBA_QUANT_VNNI
// Large M: every activation row rounded once, then per task a panel of weight rows that stays in
// the cache while all rows pass over it, 8 at a time: the integer dots of the streaming path
// (decode and prefill compute the same products), without streaming the matrix M / 8 times.
template <int MR, typename Dot>
void panel_rows(const Common& c, const Dot& dot, int64_t m0, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    float r[MR];
    dot.template run<MR>(m0, n, r);
    for (int m = 0; m < MR; ++m) {
      const float v = r[m] + (c.bias ? c.bias[n] : 0.0f);
      float& y = c.C[(m0 + m) * c.ldc + n];
      y = c.accumulate ? y + v : v;
    }
  }
}

template <typename Args, typename Dot>
void blocked(const Common& c, const Args& a) {
  Dot dot{a};
  dot.prepare(c.A, c.M);
  // ~256 KiB of weight rows per panel (L2), at least 8 rows, at most 128.
  const int64_t nb = std::clamp<int64_t>((int64_t(1) << 18) / std::max<int64_t>(1, a.ldw), 8, 128);
  const int64_t panels_n = (c.N + nb - 1) / nb;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t p = 0; p < panels_n; ++p) {
    const int64_t n0 = p * nb, n1 = std::min(c.N, n0 + nb);
    for (int64_t m0 = 0; m0 < c.M; m0 += kMaxSmallM) {
      switch (std::min(kMaxSmallM, c.M - m0)) {
        case 1: panel_rows<1>(c, dot, m0, n0, n1); break;
        case 2: panel_rows<2>(c, dot, m0, n0, n1); break;
        case 3: panel_rows<3>(c, dot, m0, n0, n1); break;
        case 4: panel_rows<4>(c, dot, m0, n0, n1); break;
        case 5: panel_rows<5>(c, dot, m0, n0, n1); break;
        case 6: panel_rows<6>(c, dot, m0, n0, n1); break;
        case 7: panel_rows<7>(c, dot, m0, n0, n1); break;
        default: panel_rows<8>(c, dot, m0, n0, n1); break;
      }
    }
  }
}
#endif  // JAMBA_QUANT_VNNI

#if !JAMBA_QUANT_VNNI
void widen_q8(const int8_t* q, float scale, int64_t K, float* out) {
  int64_t k = 0;
#if defined(__AVX512F__)
  const __m512 sc = _mm512_set1_ps(scale);
  for (; k + 16 <= K; k += 16) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k));
    _mm512_storeu_ps(out + k, _mm512_mul_ps(sc, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw))));
  }
#endif
  for (; k < K; ++k) out[k] = scale * float(q[k]);
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

// A [M, K] with each row replaced by its rounded values (round(row, out)), packed [M, K].
template <typename Round>
std::vector<float> rounded_rows(const Common& c, const Round& round) {
  std::vector<float> out(static_cast<size_t>(c.M * c.K));
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < c.M; ++m) round(c.A + m * c.lda, out.data() + m * c.K);
  return out;
}

#endif  // !JAMBA_QUANT_VNNI

// The large-M product with oneDNN's VNNI int8 matmul on the weights in place. int16 activations
// (the int8 type) split exactly into a signed high and an unsigned low byte (q = 256 hi + lo, hi
// in [-128, 127], lo in [0, 255]): two matmuls give both integer dots, combined exactly in
// double, i.e. the streaming kernels' integer dot (float rounding aside). int8 activations (act8,
// the large-M q4 product) take one s8 x s8 matmul. False: not taken.
bool gemm_q8_dnnl(const GemmQ8Args& a, bool act8) {
  const int64_t M = a.M, N = a.N, K = a.K;
  // Sums stay in int32: |hi * w| <= 128 * 127 per product, |lo * w| <= 255 * 127 (K < 66,000).
  if (!detail::dnnl_available() || K > 65536) return false;
  // Kept per calling thread between calls: fresh buffers cost page faults on every prefill chunk.
  thread_local AlignedVector<int8_t> hi;
  thread_local AlignedVector<uint8_t> lo;
  thread_local std::vector<float> da;
  thread_local std::vector<int32_t> chi, clo;
  grow(hi, M * K);
  grow(da, M);
  grow(chi, M * N);
  if (!act8) {
    grow(lo, M * K);
    grow(clo, M * N);
  }
  // Plain pointers: inside the parallel regions below a thread_local name is the worker's own.
  int8_t* const hp = hi.data();
  uint8_t* const lp = lo.data();
  float* const dp = da.data();
  int32_t* const chp = chi.data();
  int32_t* const clp = clo.data();
#pragma omp parallel
  {
    std::vector<int16_t> q(act8 ? 0 : static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      int8_t* h = hp + m * K;
      if (act8) {
        quantize_act_int8(a.A + m * a.lda, K, h, dp + m);
        continue;
      }
      quantize_act_int16(a.A + m * a.lda, K, q.data(), dp + m);
      uint8_t* l = lp + m * K;
      for (int64_t k = 0; k < K; ++k) {
        h[k] = int8_t(q[size_t(k)] >> 8);
        l[k] = uint8_t(q[size_t(k)] & 0xFF);
      }
    }
  }
  if (!detail::dnnl_matmul_i8(M, N, K, hp, false, K, a.W, a.ldw, chp, N) ||
      (!act8 && !detail::dnnl_matmul_i8(M, N, K, lp, true, K, a.W, a.ldw, clp, N)))
    return false;
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const size_t i = size_t(m * N + n);
      const double dot = act8 ? double(chp[i]) : 256.0 * double(chp[i]) + double(clp[i]);
      const float v = a.scale[n] * dp[m] * float(dot) + (a.bias ? a.bias[n] : 0.0f);
      float& y = a.C[m * a.ldc + n];
      y = a.accumulate ? y + v : v;
    }
  return true;
}

// M > kStreamMaxM: activations rounded per row to int16, or to int8 (act8).
void gemm_q8_large(const GemmQ8Args& a, bool act8) {
  if (gemm_q8_dnnl(a, act8)) return;
  const Common c{a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate};
#if JAMBA_QUANT_VNNI
  if (act8)
    blocked<GemmQ8Args, DotQ8T<true>>(c, a);
  else
    blocked<GemmQ8Args, DotQ8>(c, a);
#else
  // The rounded activations as f32 for sgemm.
  const std::vector<float> Ar = rounded_rows(c, [&](const float* x, float* out) {
    float d = 0.0f;
    std::vector<int16_t> q(static_cast<size_t>(a.K));
    round_row16(x, a.K, act8, q.data(), &d);
    for (int64_t k = 0; k < a.K; ++k) out[k] = d * float(q[size_t(k)]);
  });
  Common r = c;
  r.A = Ar.data();
  r.lda = a.K;
  panels(r, [&](int64_t n, float* out) { widen_q8(a.W + n * a.ldw, a.scale[n], a.K, out); });
#endif
}

}  // namespace

void gemm_q8(const GemmQ8Args& a) {
  if (a.M == 0 || a.N == 0) return;
  const Common c{a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate};
  if (a.M <= kStreamMaxM) {
    stream<GemmQ8Args, DotQ8>(c, a);
    return;
  }
  gemm_q8_large(a, false);
}

void gemm_q4(const GemmQ4Args& a) {
  if (a.M == 0 || a.N == 0) return;
  const Common c{a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate};
  if (a.M <= kStreamMaxM) {
    stream<GemmQ4Args, DotQ4>(c, a);
    return;
  }
  // Prefill (kernels.h): the rows rounded again to int8 per row, then the int8 product of int8
  // activation rows.
  thread_local AlignedVector<int8_t> w8;
  thread_local std::vector<float> s8;  // the requantized rows' f32 scales
  grow(w8, a.N * a.K);
  grow(s8, a.N);
  int8_t* const wp = w8.data();  // plain pointers: in the region a thread_local is the worker's
  float* const sp = s8.data();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < a.N; ++n)
    requantize_row_q4_int8(a.W + n * a.ldw, a.scale + n * a.lds, a.K, wp + n * a.K, sp + n);
  gemm_q8_large({.M = a.M, .N = a.N, .K = a.K, .A = a.A, .lda = a.lda, .W = wp, .ldw = a.K,
                 .scale = sp, .C = a.C, .ldc = a.ldc, .bias = a.bias, .accumulate = a.accumulate},
                true);
}

}  // namespace jamba::cpu
