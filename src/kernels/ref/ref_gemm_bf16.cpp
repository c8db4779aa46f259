#include "core/dtype.h"
#include "kernels/kernels.h"

namespace jamba::ref {

void gemm_bf16(const GemmBf16Args& a) {
  for (int64_t m = 0; m < a.M; ++m)
    for (int64_t n = 0; n < a.N; ++n) {
      double s = a.bias ? a.bias[n] : 0.0;
      for (int64_t k = 0; k < a.K; ++k) {
        float x = a.A[m * a.lda + k];
        if (a.bf16_activations) x = bf16_to_f32(f32_to_bf16(x));
        s += double(x) * bf16_to_f32(a.W[n * a.ldw + k]);
      }
      float& c = a.C[m * a.ldc + n];
      c = a.accumulate ? c + float(s) : float(s);
    }
}

void gemm_bf16_kn(const GemmBf16KnArgs& a) {
  for (int64_t m = 0; m < a.M; ++m)
    for (int64_t n = 0; n < a.N; ++n) {
      double s = 0.0;
      for (int64_t k = 0; k < a.K; ++k)
        s += double(bf16_to_f32(f32_to_bf16(a.A[m * a.lda + k]))) *
             bf16_to_f32(a.W[k * a.ldw + n]);
      float& c = a.C[m * a.ldc + n];
      c = a.accumulate ? c + float(s) : float(s);
    }
}

}  // namespace jamba::ref
