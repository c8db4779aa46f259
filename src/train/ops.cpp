#include "train/ops.h"

#include <cblas.h>

#include <algorithm>

#include "core/error.h"
#include "kernels/kernels.h"

namespace jamba {

PRef pref(const ParamStore& p, const std::string& name) {
  const size_t i = p.find(name);
  return {p.data[i].data(), i};
}

LinearP linear_view(const ParamStore& p, const std::string& prefix, bool bias) {
  LinearP l;
  l.w = pref(p, prefix + ".weight");
  const auto& shape = p.specs[l.w.idx].shape;
  l.out = shape[0];
  l.in = shape[1];
  if (bias) l.b = pref(p, prefix + ".bias");
  return l;
}

MlpP mlp_view(const ParamStore& p, const std::string& pre) {
  return {linear_view(p, pre + ".gate_proj", false), linear_view(p, pre + ".up_proj", false),
          linear_view(p, pre + ".down_proj", false)};
}

ModelP model_view(const ParamStore& p) {
  const JambaConfig& c = p.cfg;
  ModelP m;
  m.embed = pref(p, "model.embed_tokens.weight");
  m.final_norm = pref(p, "model.final_layernorm.weight");
  m.lm_head = c.tie_word_embeddings ? m.embed : pref(p, "lm_head.weight");
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) {
    const std::string l = "model.layers." + std::to_string(il);
    const LayerSpec& s = c.layers[static_cast<size_t>(il)];
    LayerP lp;
    lp.input_norm = pref(p, l + ".input_layernorm.weight");
    lp.pre_ff_norm = pref(p, l + ".pre_ff_layernorm.weight");
    if (s.mixer == MixerKind::Mamba) {
      const std::string a = l + ".mamba";
      MambaP& mp = lp.mamba;
      mp.in_proj = linear_view(p, a + ".in_proj", c.mamba_proj_bias);
      mp.x_proj = linear_view(p, a + ".x_proj", false);
      mp.dt_proj = linear_view(p, a + ".dt_proj", true);
      mp.out_proj = linear_view(p, a + ".out_proj", c.mamba_proj_bias);
      mp.conv_w = pref(p, a + ".conv1d.weight");
      if (c.mamba_conv_bias) mp.conv_b = pref(p, a + ".conv1d.bias");
      mp.A_log = pref(p, a + ".A_log");
      mp.D = pref(p, a + ".D");
      mp.dt_norm = pref(p, a + ".dt_layernorm.weight");
      mp.b_norm = pref(p, a + ".b_layernorm.weight");
      mp.c_norm = pref(p, a + ".c_layernorm.weight");
    } else {
      const std::string a = l + ".self_attn";
      lp.attn = {linear_view(p, a + ".q_proj", false), linear_view(p, a + ".k_proj", false),
                 linear_view(p, a + ".v_proj", false), linear_view(p, a + ".o_proj", false)};
    }
    const std::string f = l + ".feed_forward";
    if (s.ffn == FfnKind::Moe) {
      lp.moe.router = linear_view(p, f + ".router", false);
      for (int64_t e = 0; e < c.num_experts; ++e)
        lp.moe.experts.push_back(mlp_view(p, f + ".experts." + std::to_string(e)));
    } else {
      lp.mlp = mlp_view(p, f);
    }
    m.layers.push_back(std::move(lp));
  }
  return m;
}

void matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc, float alpha) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta,
              C, blasint(ldc));
}

void linear_fwd(const LinearP& l, const float* x, int64_t ldx, int64_t M, float* y,
                int64_t ldy) {
  cpu::gemm({.M = M, .N = l.out, .K = l.in, .A = x, .lda = ldx, .W = l.w.w, .ldw = l.in, .C = y,
             .ldc = ldy, .bias = l.b.w});
}

void linear_bwd(const LinearP& l, const float* x, int64_t ldx, const float* dy, int64_t lddy,
                int64_t M, float* dx, int64_t lddx, bool accumulate_dx, Grads& G) {
  // dW [out, in] += dy^T [out, M] @ x [M, in]
  matmul(true, false, l.out, l.in, M, dy, lddy, x, ldx, 1.0f, G.acc(l.w.idx), l.in);
  if (l.b) {
    float* db = G.acc(l.b.idx);  // [out]
    for (int64_t m = 0; m < M; ++m)
      for (int64_t o = 0; o < l.out; ++o) db[o] += dy[m * lddy + o];
  }
  // dx [M, in] (+)= dy [M, out] @ W [out, in]
  if (dx) matmul(false, false, M, l.in, l.out, dy, lddy, l.w.w, l.in, accumulate_dx ? 1.0f : 0.0f,
                 dx, lddx);
}

void rmsnorm_fwd(int64_t M, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                 float* y, int64_t ldy) {
#pragma omp parallel for schedule(static) if (M * D > 65536)
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    float* yr = y + m * ldy;
    float ss = 0.0f;
    for (int64_t d = 0; d < D; ++d) ss += xr[d] * xr[d];
    const float r = 1.0f / std::sqrt(ss / float(D) + eps);
    for (int64_t d = 0; d < D; ++d) yr[d] = w[d] * (xr[d] * r);
  }
}

void rmsnorm_bwd(int64_t M, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                 const float* dy, int64_t lddy, float* dx, int64_t lddx, bool accumulate_dx,
                 float* dw) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    const float* g = dy + m * lddy;
    float* o = dx + m * lddx;
    float ss = 0.0f;
    for (int64_t d = 0; d < D; ++d) ss += xr[d] * xr[d];
    const float r = 1.0f / std::sqrt(ss / float(D) + eps);
    float dot = 0.0f;  // sum (dy * w) * x
    for (int64_t d = 0; d < D; ++d) dot += g[d] * w[d] * xr[d];
    const float c = dot * r * r * r / float(D);
    for (int64_t d = 0; d < D; ++d) {
      const float v = r * g[d] * w[d] - c * xr[d];
      o[d] = accumulate_dx ? o[d] + v : v;
    }
    if (dw)
      for (int64_t d = 0; d < D; ++d) dw[d] += g[d] * xr[d] * r;
  }
}

}  // namespace jamba
