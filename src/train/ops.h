// Building blocks of the training backward: BLAS products with transposes, the linear and
// RMSNorm backward, activations and their derivatives. Float32, row-major, explicit leading
// dimensions. The forward is the model's (model/blocks.h); a parameter's gradient slot is found
// from the weight's data pointer (Grads::slot), so a weight that is not a trainable parameter
// (a frozen base under LoRA, bf16 or quantized) gets no gradient.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/weights.h"
#include "train/params.h"

namespace jamba {

// C[M,N] = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T (cblas_sgemm, row-major).
void matmul(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
            int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
            float alpha = 1.0f);

// Given dy [M, out] (lddy): dW += dy^T x and db += sum_rows dy when they are trainable (in G),
// the adapter's dA / dB when l has a LoRA adapter, and dx [M, in] (lddx) = dy @ W' (+= when
// accumulate_dx; W' = W + scale B A) with W in any of the model's types (a bf16 matrix whose
// forward takes bf16 activations: dY rounded to bf16 and oneDNN on W in place, as a bf16
// framework computes it; other bf16 and quantized matrices: dequantized a tile of rows at a time
// into f32); dx may be null.
void linear_bwd(const Linear& l, const float* x, int64_t ldx, const float* dy, int64_t lddy,
                int64_t M, float* dx, int64_t lddx, bool accumulate_dx, Grads& G);

// Given dy: dw += sum_rows dy * x * r (dw may be null); dx = r * (dy*w) - x * r^3 *
// mean((dy*w) * x) (+= when accumulate_dx). dx must not alias x or dy.
void rmsnorm_bwd(int64_t M, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                 const float* dy, int64_t lddy, float* dx, int64_t lddx, bool accumulate_dx,
                 float* dw);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }
// d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x)
inline float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}
// torch softplus (beta 1, threshold 20) and its derivative as torch's softplus_backward.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
inline float softplus_grad(float x) {
  if (x > 20.0f) return 1.0f;
  const float z = std::exp(x);
  return z / (z + 1.0f);
}

}  // namespace jamba
