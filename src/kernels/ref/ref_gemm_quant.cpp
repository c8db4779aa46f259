// Quantized-weight GEMM, plainly: int8 dequantizes each weight row and dots in double; q4 rounds
// the activations per group (kernels.h) and sums exact integer group dots scaled in double.
#include <algorithm>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba::ref {

namespace {

template <typename Dequant>
void gemm_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, float* C, int64_t ldc,
               const float* bias, bool accumulate, Dequant dequant) {
  std::vector<float> w(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    dequant(n, w.data());
    for (int64_t m = 0; m < M; ++m) {
      double s = bias ? bias[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) s += double(A[m * lda + k]) * w[size_t(k)];
      float& c = C[m * ldc + n];
      c = accumulate ? c + float(s) : float(s);
    }
  }
}

}  // namespace

void gemm_q8(const GemmQ8Args& a) {
  gemm_rows(a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate,
            [&](int64_t n, float* w) { dequantize_row_int8(a.W + n * a.ldw, a.scale[n], a.K, w); });
}

void gemm_q4(const GemmQ4Args& a) {
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
        s += double(a.scale[n * a.lds + g]) * double(da[size_t(g)]) * double(dot);
      }
      float& c = a.C[m * a.ldc + n];
      c = a.accumulate ? c + float(s) : float(s);
    }
  }
}

}  // namespace jamba::ref
