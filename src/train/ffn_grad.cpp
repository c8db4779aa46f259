// SwiGLU MLP and sparse MoE: training forward and backward (spec §2.8, §2.9).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "train/blocks_grad.h"

namespace jamba {

void mlp_train_forward(const MlpP& w, const float* x, int64_t M, float* out, MlpCache* c) {
  const int64_t D = w.gate.in, I = w.gate.out;
  c->g.resize(static_cast<size_t>(M * I));  // [M, D] @ [I, D]^T -> [M, I]
  c->u.resize(static_cast<size_t>(M * I));
  linear_fwd(w.gate, x, D, M, c->g.data(), I);
  linear_fwd(w.up, x, D, M, c->u.data(), I);
  std::vector<float> a(static_cast<size_t>(M * I));  // [M, I] silu(g) * u
  for (size_t i = 0; i < a.size(); ++i) a[i] = silu(c->g[i]) * c->u[i];
  linear_fwd(w.down, a.data(), I, M, out, D);  // [M, I] -> [M, D]
}

void mlp_train_backward(const MlpP& w, const float* x, const MlpCache& c, const float* dout,
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

void moe_train_forward(const JambaConfig& cfg, const MoeP& w, const float* x, int64_t M,
                       float* out, MoeCache* c) {
  const int64_t D = cfg.hidden_size, E = cfg.num_experts, k = cfg.num_experts_per_tok;
  // Router: [M, D] @ [E, D]^T -> [M, E]; fp32 softmax; top-k of the probabilities.
  c->probs.resize(static_cast<size_t>(M * E));
  linear_fwd(w.router, x, D, M, c->probs.data(), E);
  c->sel.resize(static_cast<size_t>(M * k));  // [M, k]
  c->rows.assign(static_cast<size_t>(E), {});
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t m = 0; m < M; ++m) {
    float* p = c->probs.data() + m * E;
    const float mx = *std::max_element(p, p + E);
    float sum = 0.0f;
    for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(p[e] - mx));
    for (int64_t e = 0; e < E; ++e) p[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return p[a] > p[b] || (p[a] == p[b] && a < b);
    });
    for (int64_t s = 0; s < k; ++s) {
      c->sel[size_t(m * k + s)] = order[size_t(s)];
      c->rows[size_t(order[size_t(s)])].push_back(m);
    }
  }
  for (auto& r : c->rows) std::sort(r.begin(), r.end());
  c->xe.assign(static_cast<size_t>(E), {});
  c->ye.assign(static_cast<size_t>(E), {});
  c->mlp.assign(static_cast<size_t>(E), {});
  std::fill_n(out, M * D, 0.0f);
  for (int64_t e = 0; e < E; ++e) {  // ascending e, as the reference's index_add_
    const auto& r = c->rows[size_t(e)];
    if (r.empty()) continue;
    const int64_t Me = int64_t(r.size());
    auto& xe = c->xe[size_t(e)];
    auto& ye = c->ye[size_t(e)];
    xe.resize(static_cast<size_t>(Me * D));  // [Me, D]
    ye.resize(static_cast<size_t>(Me * D));  // [Me, D]
    for (int64_t i = 0; i < Me; ++i) std::copy_n(x + r[size_t(i)] * D, D, xe.data() + i * D);
    mlp_train_forward(w.experts[size_t(e)], xe.data(), Me, ye.data(), &c->mlp[size_t(e)]);
    for (int64_t i = 0; i < Me; ++i) {
      const int64_t m = r[size_t(i)];
      const float p = c->probs[size_t(m * E + e)];
      for (int64_t d = 0; d < D; ++d) out[m * D + d] += ye[size_t(i * D + d)] * p;
    }
  }
}

void moe_train_backward(const JambaConfig& cfg, const MoeP& w, const float* x, const MoeCache& c,
                        const float* dout, int64_t M, const std::vector<float>& aux_dp,
                        float* dx, Grads& G) {
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
