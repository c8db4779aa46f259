// Branch-free float math that GCC auto-vectorises inside `#pragma omp simd` loops.
#pragma once
#include <cstdint>
#include <cstring>

namespace jamba::cpu {

// exp(x) with ~2 ulp error over [-87, 88]; clamps outside (exp(-87.3) ~ 1e-38, no denormals;
// exp(88.37) ~ 2.4e38: the high clamp keeps n <= 127, n = 128 would build an inf scale).
#pragma omp declare simd notinbranch
inline float exp_fast(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.37f ? 88.37f : x);
  // n = round(x / ln2) by the 1.5 * 2^23 trick (t's low mantissa bits hold n). floorf or an int
  // conversion after the clamp keep GCC 12 from vectorising the loop under the default
  // -ftrapping-math; this needs no -ffast-math (which could fold (t - c) to x / ln2).
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  int32_t ni;
  std::memcpy(&ni, &t, 4);
  ni -= 0x4B400000;
  float r = x - n * 0.693145751953125f;  // ln2 split hi/lo (Cody-Waite)
  r = r - n * 1.428606765330187e-06f;
  // exp(r) on [-ln2/2, ln2/2], degree-6 Taylor/minimax-ish polynomial.
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t e = (ni + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return p * scale;
}

#pragma omp declare simd notinbranch
inline float silu_fast(float x) { return x / (1.0f + exp_fast(-x)); }

// log1p(u) for u in [0, 1], ~2 ulp: w = 1 + u split as 2^e * m with m in [sqrt(1/2), sqrt(2)),
// log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172 (odd series to s^13, truncation
// < 1e-10), then the rounding of 1 + u is undone by the factor u / (w - 1) (Goldberg's trick; for
// u below half an ulp of 1, w == 1 and the result is u).
#pragma omp declare simd notinbranch
inline float log1p_unit(float u) {
  const float w = 1.0f + u;
  const bool big = w > 1.41421356f;
  const float m = big ? 0.5f * w : w;
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  float p = 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  const float lw = (big ? 0.693147180559945f : 0.0f) + 2.0f * s * p;
  const float d = w - 1.0f;
  return d == 0.0f ? u : lw * (u / d);
}

// torch softplus (threshold 20): x above 20 passes through, else log1p(exp(x)) computed as
// max(x, 0) + log1p(exp(-|x|)) so the exp never overflows.
#pragma omp declare simd notinbranch
inline float softplus_fast(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float r = (x > 0.0f ? x : 0.0f) + log1p_unit(exp_fast(-ax));
  return x > 20.0f ? x : r;
}

}  // namespace jamba::cpu
