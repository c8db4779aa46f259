#include "kernels/quant.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace jamba {

void quantize_row_int8(const float* w, int64_t K, int8_t* q, float* scale) {
  float amax = 0.0f;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(w[k]));
  const float s = amax / 127.0f;
  *scale = s;
  for (int64_t k = 0; k < K; ++k) {
    const float v = s > 0.0f ? std::round(w[k] / s) : 0.0f;
    q[k] = int8_t(std::clamp(v, -127.0f, 127.0f));
  }
}

void quantize_row_q4(const float* w, int64_t K, uint8_t* q, float* scales) {
  for (int64_t g = 0; g < q4_groups(K); ++g) {
    const int64_t k0 = g * kQ4Group, n = std::min(kQ4Group, K - k0);
    float m = 0.0f;  // the element of largest magnitude, sign kept
    for (int64_t j = 0; j < n; ++j)
      if (std::fabs(w[k0 + j]) > std::fabs(m)) m = w[k0 + j];
    const float s = m / -8.0f;
    scales[g] = s;
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
  for (int64_t g = 0; g < q4_groups(K); ++g) {
    const int64_t k0 = g * kQ4Group, n = std::min(kQ4Group, K - k0);
    float amax = 0.0f;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[k0 + j]));
    const float s = amax / 127.0f;
    d[g] = s;
    for (int64_t j = 0; j < kQ4Group; ++j) {
      const float v = (j < n && s > 0.0f) ? std::round(x[k0 + j] / s) : 0.0f;
      q[k0 + j] = int8_t(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

void quantize_act_int16(const float* x, int64_t K, int16_t* q, float* d) {
  // Vectorised (prefill rounds every activation row of every quantized matrix): the maximum is
  // exact in any order and vcvtps2dq rounds to nearest even like nearbyint in the default mode,
  // so both loops give the scalar tails' values bit for bit.
  float amax = 0.0f;
  int64_t k = 0;
#if defined(__AVX512F__)
  __m512 vmax = _mm512_setzero_ps();
  for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
  amax = _mm512_reduce_max_ps(vmax);
#endif
  for (; k < K; ++k) amax = std::max(amax, std::fabs(x[k]));
  *d = amax / 32767.0f;
  const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
  k = 0;
#if defined(__AVX512F__)
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-32767), hi = _mm512_set1_epi32(32767);
  for (; k + 16 <= K; k += 16) {
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv));
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm512_cvtepi32_epi16(v));
  }
#endif
  for (; k < K; ++k)
    q[k] = int16_t(std::clamp(std::nearbyint(x[k] * inv), -32767.0f, 32767.0f));
}

void dequantize_row_int8(const int8_t* q, float scale, int64_t K, float* out) {
  for (int64_t k = 0; k < K; ++k) out[k] = scale * float(q[k]);
}

void dequantize_row_q4(const uint8_t* q, const float* scales, int64_t K, float* out) {
  for (int64_t k = 0; k < K; ++k) out[k] = scales[k / kQ4Group] * float(q4_value(q, k));
}

void requantize_row_q4_int8(const uint8_t* q, const float* scales, int64_t K, int8_t* out,
                            float* scale) {
  // Two passes over the values (the maximum, then the rounding), each vectorised per full group
  // with the scalar formula on a last partial group: the same floats in both (s * q), vcvtps2dq
  // rounding to nearest even like nearbyint in the default mode.
  const int64_t full = K / kQ4Group;
  float amax = 0.0f;
#if defined(__AVX512F__)
  const __m512i low = _mm512_set1_epi32(0x0F), eight = _mm512_set1_epi32(8);
  auto group = [&](int64_t g, __m512& v0, __m512& v1) __attribute__((always_inline)) {
    const __m512i b = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + g * kQ4GroupBytes)));
    const __m512 sc = _mm512_set1_ps(scales[g]);
    v0 = _mm512_mul_ps(sc, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(b, low), eight)));
    v1 = _mm512_mul_ps(sc, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(b, 4), eight)));
  };
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t g = 0; g < full; ++g) {
    __m512 v0, v1;
    group(g, v0, v1);
    vmax = _mm512_max_ps(vmax, _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  }
  amax = _mm512_reduce_max_ps(vmax);
  const int64_t k_simd = full * kQ4Group;
#else
  const int64_t k_simd = 0;
#endif
  auto value = [&](int64_t k) { return scales[k / kQ4Group] * float(q4_value(q, k)); };
  for (int64_t k = k_simd; k < K; ++k) amax = std::max(amax, std::fabs(value(k)));
  *scale = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
#if defined(__AVX512F__)
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (int64_t g = 0; g < full; ++g) {
    __m512 v0, v1;
    group(g, v0, v1);
    const __m512i r0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vinv)), lo), hi);
    const __m512i r1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vinv)), lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + g * kQ4Group), _mm512_cvtepi32_epi8(r0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + g * kQ4Group + 16), _mm512_cvtepi32_epi8(r1));
  }
#endif
  for (int64_t k = k_simd; k < K; ++k)
    out[k] = int8_t(std::clamp(std::nearbyint(value(k) * inv), -127.0f, 127.0f));
}

}  // namespace jamba
