#include "kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
// GCC 12 reports its own _mm512_undefined_*() inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace jamba {

namespace {

#if defined(__AVX512F__)
// std::round (half away from zero) of 16 floats, bit for bit: truncate, then one step away from
// zero where the fraction (exact: v - trunc(v)) is at least one half.
inline __m512 round_half_away(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_abs_ps(_mm512_sub_ps(v, t));
  const __mmask16 up = _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN));
  const __m512 step = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_castps_si512(_mm512_set1_ps(1.0f))));
  return _mm512_mask_add_ps(t, up, t, step);
}

#endif

// max |x[k]| (exact in any order), 16 values at a time.
float max_abs(const float* x, int64_t K) {
  float amax = 0.0f;
  int64_t k = 0;
#if defined(__AVX512F__)
  __m512 vmax = _mm512_setzero_ps();
  for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
  amax = _mm512_reduce_max_ps(vmax);
#endif
  for (; k < K; ++k) amax = std::max(amax, std::fabs(x[k]));
  return amax;
}

#if defined(__AVX512F__)
// clamp(round_half_away(x / s), lo, hi) as int32 lanes.
inline __m512i round_div_clamp(__m512 x, __m512 s, float lo, float hi) {
  const __m512 r = round_half_away(_mm512_div_ps(x, s));
  return _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(lo)), _mm512_set1_ps(hi)));
}
#endif

}  // namespace

// Both row quantizers run at load for every matrix (`--dtype int8 / q4`, `jamba quantize`):
// vectorised 16 values at a time with the scalar code's exact arithmetic (the maximum in any
// order; w / s by division; std::round's ties away from zero), the scalar code on tails.
void quantize_row_int8(const float* w, int64_t K, int8_t* q, float* scale) {
  const float s = max_abs(w, K) / 127.0f;
  *scale = s;
  int64_t k = 0;
#if defined(__AVX512F__)
  if (s > 0.0f) {
    const __m512 sv = _mm512_set1_ps(s);
    for (; k + 16 <= K; k += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k),
                       _mm512_cvtepi32_epi8(round_div_clamp(_mm512_loadu_ps(w + k), sv, -127.0f, 127.0f)));
  }
#endif
  for (; k < K; ++k) {
    const float v = s > 0.0f ? std::round(w[k] / s) : 0.0f;
    q[k] = int8_t(std::clamp(v, -127.0f, 127.0f));
  }
}

void quantize_row_q4(const float* w, int64_t K, uint8_t* q, uint16_t* scales) {
  int64_t g0 = 0;
#if defined(__AVX512F__)
  for (; (g0 + 1) * kQ4Group <= K; ++g0) {
    const float* x = w + g0 * kQ4Group;
    const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    const __m512 a0 = _mm512_abs_ps(x0), a1 = _mm512_abs_ps(x1);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    // m: the first element of largest magnitude, as the scalar loop's strict > picks it
    float m = 0.0f;
    if (amax > 0.0f) {
      const __m512 av = _mm512_set1_ps(amax);
      const uint32_t hit = uint32_t(_mm512_cmp_ps_mask(a0, av, _CMP_EQ_OQ)) |
                           (uint32_t(_mm512_cmp_ps_mask(a1, av, _CMP_EQ_OQ)) << 16);
      m = x[__builtin_ctz(hit)];
    }
    scales[g0] = f32_to_bf16(m / -8.0f);
    const float s = bf16_to_f32(scales[g0]);
    __m128i lo = _mm_set1_epi8(8), hi = _mm_set1_epi8(8);
    if (s != 0.0f) {
      const __m512 sv = _mm512_set1_ps(s);
      lo = _mm512_cvtepi32_epi8(_mm512_add_epi32(round_div_clamp(x0, sv, -8.0f, 7.0f), _mm512_set1_epi32(8)));
      hi = _mm512_cvtepi32_epi8(_mm512_add_epi32(round_div_clamp(x1, sv, -8.0f, 7.0f), _mm512_set1_epi32(8)));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + g0 * kQ4GroupBytes),
                     _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
  }
#endif
  for (int64_t g = g0; g < q4_groups(K); ++g) {
    const int64_t k0 = g * kQ4Group, n = std::min(kQ4Group, K - k0);
    float m = 0.0f;  // the element of largest magnitude, sign kept
    for (int64_t j = 0; j < n; ++j)
      if (std::fabs(w[k0 + j]) > std::fabs(m)) m = w[k0 + j];
    scales[g] = f32_to_bf16(m / -8.0f);
    const float s = bf16_to_f32(scales[g]);
    uint8_t nib[kQ4Group];
    for (int64_t j = 0; j < kQ4Group; ++j) {
      const float v = (j < n && s != 0.0f) ? std::round(w[k0 + j] / s) : 0.0f;
      nib[j] = uint8_t(int(std::clamp(v, -8.0f, 7.0f)) + 8);
    }
    uint8_t* dst = q + g * kQ4GroupBytes;
    for (int64_t j = 0; j < kQ4GroupBytes; ++j) dst[j] = uint8_t(nib[j] | (nib[j + 16] << 4));
  }
}

void quantize_act_q4(const float* x, int64_t K, int8_t* q, float* d) {
  // Decode rounds every activation row of every q4 matrix, on the thread between the GEMVs:
  // full groups vectorised (max exact in any order; x / s as in the scalar code; vcvtps2dq
  // rounds to nearest even like nearbyint), the same values bit for bit.
  int64_t g = 0;
#if defined(__AVX512F__)
  const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
  for (; (g + 1) * kQ4Group <= K; ++g) {
    const __m512 x0 = _mm512_loadu_ps(x + g * kQ4Group), x1 = _mm512_loadu_ps(x + g * kQ4Group + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    const float s = amax / 127.0f;
    d[g] = s;
    if (!(s > 0.0f)) {
      std::memset(q + g * kQ4Group, 0, kQ4Group);
      continue;
    }
    const __m512 sv = _mm512_set1_ps(s);
    auto half = [&](__m512 v) {
      const __m512i r = _mm512_cvtps_epi32(_mm512_div_ps(v, sv));
      return _mm512_cvtepi32_epi8(_mm512_min_epi32(_mm512_max_epi32(r, nlim), lim));
    };
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + g * kQ4Group), half(x0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + g * kQ4Group + 16), half(x1));
  }
#endif
  for (; g < q4_groups(K); ++g) {
    const int64_t k0 = g * kQ4Group, n = std::min(kQ4Group, K - k0);
    float amax = 0.0f;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[k0 + j]));
    const float s = amax / 127.0f;
    d[g] = s;
    for (int64_t j = 0; j < kQ4Group; ++j) {
      const float v = (j < n && s > 0.0f) ? std::nearbyint(x[k0 + j] / s) : 0.0f;
      q[k0 + j] = int8_t(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

namespace {

// One scale per row, d = max|x| / kMax, q = nearest-even(x * (kMax / max|x|)) in [-kMax, kMax]
// (all 0 when x is 0). Vectorised (prefill rounds every activation row of every quantized
// matrix): the maximum is exact in any order and vcvtps2dq rounds to nearest even like nearbyint
// in the default mode, so both loops give the scalar tails' values bit for bit.
template <typename T, int kMax>
void quantize_act_row(const float* x, int64_t K, T* q, float* d) {
  const float amax = max_abs(x, K);
  *d = amax / float(kMax);
  const float inv = amax > 0.0f ? float(kMax) / amax : 0.0f;
  int64_t k = 0;
#if defined(__AVX512F__)
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-kMax), hi = _mm512_set1_epi32(kMax);
  for (; k + 16 <= K; k += 16) {
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv));
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    if constexpr (sizeof(T) == 2)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm512_cvtepi32_epi16(v));
    else
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(v));
  }
#endif
  for (; k < K; ++k)
    q[k] = T(std::clamp(std::nearbyint(x[k] * inv), -float(kMax), float(kMax)));
}

}  // namespace

void quantize_act_int16(const float* x, int64_t K, int16_t* q, float* d) {
  quantize_act_row<int16_t, 32767>(x, K, q, d);
}

void quantize_act_int8(const float* x, int64_t K, int8_t* q, float* d) {
  quantize_act_row<int8_t, 127>(x, K, q, d);
}

void dequantize_row_int8(const int8_t* q, float scale, int64_t K, float* out) {
  for (int64_t k = 0; k < K; ++k) out[k] = scale * float(q[k]);
}

void dequantize_row_q4(const uint8_t* q, const uint16_t* scales, int64_t K, float* out) {
  for (int64_t k = 0; k < K; ++k) out[k] = bf16_to_f32(scales[k / kQ4Group]) * float(q4_value(q, k));
}

void requantize_row_q4_int8(const uint8_t* q, const uint16_t* scales, int64_t K, int8_t* out,
                            float* scale) {
  // |q| <= 8, so 8 * max|s| bounds every value (and is their maximum for rows quantize_row_q4
  // wrote: each group's largest element is exactly -8 * s). A group then needs only the 16
  // values t[j] = nearest-even((j - 8) * (s * inv)) of its nibbles: a table per group, looked up
  // by pshufb, 4 groups per 512-bit step (each 128-bit lane its own group's table and bytes).
  const int64_t G = q4_groups(K), full = K / kQ4Group;
  float smax = 0.0f;
  for (int64_t g = 0; g < G; ++g) smax = std::max(smax, std::fabs(bf16_to_f32(scales[g])));
  const float amax = 8.0f * smax;
  *scale = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  auto entry = [](int j, float f) {
    return int8_t(std::clamp(std::nearbyint(float(j - 8) * f), -127.0f, 127.0f));
  };
  int64_t g = 0;
#if defined(__AVX512BW__)
  const __m512 jv = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i lim = _mm512_set1_epi32(127), low = _mm512_set1_epi8(0x0F);
  const __m512i lo_idx = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i hi_idx = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  auto table = [&](int64_t gi) {  // t[0..15] of group gi, as 16 bytes
    __m512i t = _mm512_cvtps_epi32(_mm512_mul_ps(jv, _mm512_set1_ps(bf16_to_f32(scales[gi]) * inv)));
    t = _mm512_min_epi32(_mm512_max_epi32(t, _mm512_sub_epi32(_mm512_setzero_si512(), lim)), lim);
    return _mm512_cvtepi32_epi8(t);
  };
  for (; g + 4 <= full; g += 4) {
    __m512i tbl = _mm512_castsi128_si512(table(g));
    tbl = _mm512_inserti32x4(tbl, table(g + 1), 1);
    tbl = _mm512_inserti32x4(tbl, table(g + 2), 2);
    tbl = _mm512_inserti32x4(tbl, table(g + 3), 3);
    const __m512i raw = _mm512_loadu_si512(q + g * kQ4GroupBytes);
    // lane i: values 0-15 (low nibbles) and 16-31 (high nibbles) of group g + i
    const __m512i lo = _mm512_shuffle_epi8(tbl, _mm512_and_si512(raw, low));
    const __m512i hi = _mm512_shuffle_epi8(tbl, _mm512_and_si512(_mm512_srli_epi16(raw, 4), low));
    _mm512_storeu_si512(out + g * kQ4Group, _mm512_permutex2var_epi64(lo, lo_idx, hi));
    _mm512_storeu_si512(out + g * kQ4Group + 64, _mm512_permutex2var_epi64(lo, hi_idx, hi));
  }
#endif
  for (; g < G; ++g) {
    int8_t t[16];
    const float f = bf16_to_f32(scales[g]) * inv;
    for (int j = 0; j < 16; ++j) t[j] = entry(j, f);
    for (int64_t k = g * kQ4Group; k < std::min(K, (g + 1) * kQ4Group); ++k)
      out[k] = t[q4_value(q, k) + 8];
  }
}

}  // namespace jamba
