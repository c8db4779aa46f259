// Building blocks of the training forward/backward: parameter views (data pointer + gradient
// slot), BLAS products with transposes, linear and RMSNorm forward/backward, activation
// derivatives. All float32, row-major, explicit leading dimensions.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "train/params.h"

namespace jamba {

// A parameter as a block sees it: its values and its gradient slot in Grads.
struct PRef {
  const float* w = nullptr;
  size_t idx = 0;
  explicit operator bool() const { return w != nullptr; }
};

struct LinearP {
  PRef w, b;  // w [out, in]; b [out] or empty
  int64_t out = 0, in = 0;
};

struct MlpP {
  LinearP gate, up, down;
};

struct MoeP {
  LinearP router;  // [E, D]
  std::vector<MlpP> experts;
};

struct AttnP {
  LinearP q, k, v, o;
};

struct MambaP {
  LinearP in_proj, x_proj, dt_proj, out_proj;
  PRef conv_w, conv_b, A_log, D, dt_norm, b_norm, c_norm;
};

struct LayerP {
  PRef input_norm, pre_ff_norm;
  MambaP mamba;
  AttnP attn;
  MlpP mlp;
  MoeP moe;
};

struct ModelP {
  PRef embed, final_norm, lm_head;  // lm_head.idx == embed.idx when tied
  std::vector<LayerP> layers;
};

// Views of every parameter of `p` (p.cfg decides the block kinds).
ModelP model_view(const ParamStore& p);
PRef pref(const ParamStore& p, const std::string& name);
LinearP linear_view(const ParamStore& p, const std::string& prefix, bool bias);
MlpP mlp_view(const ParamStore& p, const std::string& prefix);

// C[M,N] = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T (cblas_sgemm, row-major).
void matmul(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
            int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
            float alpha = 1.0f);

// y[M, out] (ldy) = x[M, in] (ldx) @ W^T + b.
void linear_fwd(const LinearP& l, const float* x, int64_t ldx, int64_t M, float* y, int64_t ldy);
// Given dy [M, out] (lddy): dW += dy^T x, db += sum_rows dy, and dx [M, in] (lddx) = dy @ W
// (+= when accumulate_dx); dx may be null.
void linear_bwd(const LinearP& l, const float* x, int64_t ldx, const float* dy, int64_t lddy,
                int64_t M, float* dx, int64_t lddx, bool accumulate_dx, Grads& G);

// y = w * x * rsqrt(mean(x^2) + eps) per row; y may alias x.
void rmsnorm_fwd(int64_t M, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                 float* y, int64_t ldy);
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
