// SwiGLU MLP and sparse MoE: training backward (spec §2.8, §2.9).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "train/blocks_grad.h"

namespace jamba {

void mlp_train_backward(const MlpWeights& w, const float* x, const MlpTape& c, const float* dout,
                        int64_t M, float* dx, bool accumulate_dx, Grads& G) {
  const int64_t D = w.gate.in, I = w.gate.out;
  std::vector<float> a(static_cast<size_t>(M * I));  // [M, I] recomputed down_proj input
  for (size_t i = 0; i < a.size(); ++i) a[i] = silu(c.g[i]) * c.u[i];
  std::vector<float> da(static_cast<size_t>(M * I));  // [M, D] @ [D, I] -> [M, I]
  linear_bwd(w.down, a.data(), I, dout, D, M, da.data(), I, false, G);
  std::vector<float> dg(static_cast<size_t>(M * I)), du(static_cast<size_t>(M * I));  // [M, I]
  for (size_t i = 0; i < a.size(); ++i) {
    dg[i] = da[i] * c.u[i] * silu_grad(c.g[i]);
    du[i] = da[i] * silu(c.g[i]);
  }
  linear_bwd(w.gate, x, D, dg.data(), I, M, dx, D, accumulate_dx, G);
  linear_bwd(w.up, x, D, du.data(), I, M, dx, D, true, G);
}

void moe_train_backward(const JambaConfig& cfg, const MoeWeights& w, const float* x,
                        const MoeTape& c, const float* dout, int64_t M,
                        const std::vector<float>& aux_dp, float* dx, Grads& G) {
  const int64_t D = cfg.hidden_size, E = cfg.num_experts;
  // d objective / d probs [M, E]: the aux term (every row) + the selected experts' outputs.
  std::vector<float> dp(static_cast<size_t>(M * E), 0.0f);
  if (!aux_dp.empty())
    for (int64_t m = 0; m < M; ++m) std::copy_n(aux_dp.data(), E, dp.data() + m * E);
  std::fill_n(dx, M * D, 0.0f);
  std::vector<float> dye, dxe;
  for (int64_t e = 0; e < E; ++e) {
    const auto& r = c.rows[size_t(e)];
    if (r.empty()) continue;  // no token: the expert's gradients stay None
    const int64_t Me = int64_t(r.size());
    const auto& ye = c.ye[size_t(e)];
    dye.resize(static_cast<size_t>(Me * D));  // [Me, D]
    dxe.resize(static_cast<size_t>(Me * D));  // [Me, D]
    for (int64_t i = 0; i < Me; ++i) {
      const int64_t m = r[size_t(i)];
      const float p = c.probs[size_t(m * E + e)];
      float dot = 0.0f;
      for (int64_t d = 0; d < D; ++d) {
        dot += dout[m * D + d] * ye[size_t(i * D + d)];
        dye[size_t(i * D + d)] = dout[m * D + d] * p;
      }
      dp[size_t(m * E + e)] += dot;
    }
    mlp_train_backward(w.experts[size_t(e)], c.xe[size_t(e)].data(), c.mlp[size_t(e)], dye.data(),
                       Me, dxe.data(), false, G);
    for (int64_t i = 0; i < Me; ++i)
      for (int64_t d = 0; d < D; ++d) dx[r[size_t(i)] * D + d] += dxe[size_t(i * D + d)];
  }
  // softmax backward: dlogit_e = p_e (dp_e - sum_j p_j dp_j), in place over dp [M, E]
  for (int64_t m = 0; m < M; ++m) {
    const float* p = c.probs.data() + m * E;
    float* g = dp.data() + m * E;
    float s = 0.0f;
    for (int64_t e = 0; e < E; ++e) s += p[e] * g[e];
    for (int64_t e = 0; e < E; ++e) g[e] = p[e] * (g[e] - s);
  }
  linear_bwd(w.router, x, D, dp.data(), E, M, dx, D, true, G);
}

}  // namespace jamba
