// Quantized-weight GEMM, plainly: int8 rounds each activation row to int16, q4 per group to int8
// (large M: its rows again to int8 per row, activations to int8 per row; kernels.h); all sum
// exact integer dots and scale them in double.
#include <algorithm>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba::ref {

namespace {

// The int8 product with the activation rows rounded to int16, or to int8 (act8: the large-M q4
// product).
void q8_product(const GemmQ8Args& a, bool act8) {
  std::vector<int16_t> qa(static_cast<size_t>(a.K));
  std::vector<int8_t> q8(static_cast<size_t>(a.K));
  for (int64_t m = 0; m < a.M; ++m) {
    float da = 0.0f;
    if (act8) {
      quantize_act_int8(a.A + m * a.lda, a.K, q8.data(), &da);
      for (int64_t k = 0; k < a.K; ++k) qa[size_t(k)] = q8[size_t(k)];
    } else {
      quantize_act_int16(a.A + m * a.lda, a.K, qa.data(), &da);
    }
    for (int64_t n = 0; n < a.N; ++n) {
      const int8_t* w = a.W + n * a.ldw;
      int64_t dot = 0;
      for (int64_t k = 0; k < a.K; ++k) dot += int64_t(w[k]) * qa[size_t(k)];
      const double s = (a.bias ? a.bias[n] : 0.0) + double(a.scale[n]) * double(da) * double(dot);
      float& c = a.C[m * a.ldc + n];
      c = a.accumulate ? c + float(s) : float(s);
    }
  }
}

}  // namespace

void gemm_q8(const GemmQ8Args& a) { q8_product(a, false); }

void gemm_q4(const GemmQ4Args& a) {
  if (a.M > kQ4StreamMaxM) {  // prefill: the rows rounded again to int8, activations to int8
    std::vector<int8_t> w8(static_cast<size_t>(a.N * a.K));
    std::vector<float> s8(static_cast<size_t>(a.N));
    for (int64_t n = 0; n < a.N; ++n)
      requantize_row_q4_int8(a.W + n * a.ldw, a.scale + n * a.lds, a.K, w8.data() + n * a.K,
                             &s8[size_t(n)]);
    q8_product({.M = a.M, .N = a.N, .K = a.K, .A = a.A, .lda = a.lda, .W = w8.data(), .ldw = a.K,
                .scale = s8.data(), .C = a.C, .ldc = a.ldc, .bias = a.bias,
                .accumulate = a.accumulate},
               true);
    return;
  }
  const int64_t G = q4_groups(a.K);
  std::vector<int8_t> qa(static_cast<size_t>(G * kQ4Group));
  std::vector<float> da(static_cast<size_t>(G));
  for (int64_t m = 0; m < a.M; ++m) {
    quantize_act_q4(a.A + m * a.lda, a.K, qa.data(), da.data());
    for (int64_t n = 0; n < a.N; ++n) {
      const uint8_t* w = a.W + n * a.ldw;
      double s = a.bias ? a.bias[n] : 0.0;
      for (int64_t g = 0; g < G; ++g) {
        int64_t dot = 0;
        for (int64_t k = g * kQ4Group; k < std::min(a.K, (g + 1) * kQ4Group); ++k)
          dot += int64_t(q4_value(w, k)) * qa[size_t(k)];
        s += double(bf16_to_f32(a.scale[n * a.lds + g])) * double(da[size_t(g)]) * double(dot);
      }
      float& c = a.C[m * a.ldc + n];
      c = a.accumulate ? c + float(s) : float(s);
    }
  }
}

}  // namespace jamba::ref
