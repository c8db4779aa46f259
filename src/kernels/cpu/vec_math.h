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

}  // namespace jamba::cpu
