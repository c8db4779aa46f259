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

}  // namespace jamba
