// Grouped-query causal attention: training backward (spec §2.4; no RoPE, no bias, scale
// 1/sqrt(hd), fp32 softmax). It recomputes each query's softmax row from the saved projections
// q, k, v (the forward's tape also holds the attention output o).
#include <algorithm>
#include <cmath>
#include <vector>

#include "train/blocks_grad.h"

namespace jamba {

namespace {

struct AttnDims {
  int64_t D, nh, nkv, hd, G, qw, kw;
  float scale;
};

AttnDims attn_dims(const JambaConfig& cfg) {
  const int64_t nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads, hd = cfg.head_dim();
  return {cfg.hidden_size, nh, nkv, hd, nh / nkv, nh * hd, nkv * hd,
          1.0f / std::sqrt(float(hd))};
}

// p[0..i] = softmax over keys j <= i of scale * q_i . k_j (one query row of one head).
void softmax_row(const AttnDims& a, const float* qi, const float* k0, int64_t i, float* p) {
  float mx = -INFINITY;
  for (int64_t j = 0; j <= i; ++j) {
    const float* kj = k0 + j * a.kw;
    float s = 0.0f;
    for (int64_t e = 0; e < a.hd; ++e) s += qi[e] * kj[e];
    p[j] = s * a.scale;
    mx = std::max(mx, p[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j <= i; ++j) p[j] *= inv;
}

}  // namespace

void attention_train_backward(const JambaConfig& cfg, const AttentionWeights& w, int64_t B,
                              int64_t T, const float* x, const AttnTape& c, const float* dout,
                              float* dx, Grads& G) {
  const AttnDims a = attn_dims(cfg);
  const int64_t M = B * T;
  std::vector<float> dO(static_cast<size_t>(M * a.qw));  // [M, D] @ [D, nh*hd] -> [M, nh*hd]
  linear_bwd(w.o, c.o.data(), a.qw, dout, a.D, M, dO.data(), a.qw, false, G);
  std::vector<float> dq(static_cast<size_t>(M * a.qw), 0.0f);  // [M, nh*hd]
  std::vector<float> dk(static_cast<size_t>(M * a.kw), 0.0f);  // [M, nkv*hd]
  std::vector<float> dv(static_cast<size_t>(M * a.kw), 0.0f);  // [M, nkv*hd]
  // One task per (sequence, kv head): it owns the dk/dv of that head, so the G query heads
  // that share it run in the same task.
#pragma omp parallel for collapse(2) schedule(dynamic) if (M * T * a.qw > 262144)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < a.nkv; ++g) {
      std::vector<float> p(static_cast<size_t>(T)), dp(static_cast<size_t>(T));  // [T]
      const int64_t kv0 = b * T * a.kw + g * a.hd;
      const float* k0 = c.k.data() + kv0;
      const float* v0 = c.v.data() + kv0;
      for (int64_t h = g * a.G; h < (g + 1) * a.G; ++h)
        for (int64_t i = 0; i < T; ++i) {
          const int64_t qo = (b * T + i) * a.qw + h * a.hd;
          const float* qi = c.q.data() + qo;
          const float* doi = dO.data() + qo;
          softmax_row(a, qi, k0, i, p.data());
          // dp_j = do_i . v_j; ds_j = p_j (dp_j - sum_l p_l dp_l)
          float delta = 0.0f;
          for (int64_t j = 0; j <= i; ++j) {
            float s = 0.0f;
            for (int64_t e = 0; e < a.hd; ++e) s += doi[e] * v0[j * a.kw + e];
            dp[size_t(j)] = s;
            delta += p[size_t(j)] * s;
          }
          float* dqi = dq.data() + qo;
          for (int64_t j = 0; j <= i; ++j) {
            const float ds = p[size_t(j)] * (dp[size_t(j)] - delta) * a.scale;
            const float* kj = k0 + j * a.kw;
            float* dkj = dk.data() + kv0 + j * a.kw;
            float* dvj = dv.data() + kv0 + j * a.kw;
            for (int64_t e = 0; e < a.hd; ++e) {
              dqi[e] += ds * kj[e];
              dkj[e] += ds * qi[e];
              dvj[e] += p[size_t(j)] * doi[e];
            }
          }
        }
    }
  // dx [M, D] = dq @ Wq + dk @ Wk + dv @ Wv
  linear_bwd(w.q, x, a.D, dq.data(), a.qw, M, dx, a.D, false, G);
  linear_bwd(w.k, x, a.D, dk.data(), a.kw, M, dx, a.D, true, G);
  linear_bwd(w.v, x, a.D, dv.data(), a.kw, M, dx, a.D, true, G);
}

}  // namespace jamba
