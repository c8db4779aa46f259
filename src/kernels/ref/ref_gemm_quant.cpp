// Quantized-weight GEMM, plainly: dequantize each weight row, dot in double.
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba::ref {

namespace {

template <typename Dequant>
void gemm_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, float* C,
               int64_t ldc, const float* bias, bool accumulate, Dequant dequant) {
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
  gemm_rows(a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate, [&](int64_t n, float* w) {
    dequantize_row_int8(a.W + n * a.ldw, a.scale[n], a.K, w);
  });
}

void gemm_q4(const GemmQ4Args& a) {
  gemm_rows(a.M, a.N, a.K, a.A, a.lda, a.C, a.ldc, a.bias, a.accumulate, [&](int64_t n, float* w) {
    dequantize_row_q4(a.W + n * a.ldw, a.scale + n * a.lds, a.K, w);
  });
}

}  // namespace jamba::ref
