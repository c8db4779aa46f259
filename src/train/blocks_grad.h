// Training forward (saving what the backward needs) and backward of every block, over a batch
// of B sequences of T tokens stacked as M = B*T rows (row b*T + t), no cache, no padding.
// Forwards write `out` [M, D]; backwards take dout [M, D], write dx [M, D] (overwritten) and
// accumulate parameter gradients into Grads (creating them on first touch).
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "train/ops.h"

namespace jamba {

// ---- Mamba mixer (spec §2.5) --------------------------------------------------------------
struct MambaCache {
  std::vector<float> xz;       // [M, 2Din]  in_proj output: x (pre-conv) | z (gate)
  std::vector<float> xc;       // [M, Din]   silu(conv(x) + b)
  std::vector<float> sbc_raw;  // [M, R+2N]  x_proj output
  std::vector<float> sbc;      // [M, R+2N]  after the dt/B/C RMSNorms
  std::vector<float> dt_pre;   // [M, Din]   dt_proj output (before softplus)
  std::vector<float> dt;       // [M, Din]   softplus(dt_pre)
  std::vector<float> yg;       // [M, Din]   gated scan output (out_proj input)
};
void mamba_train_forward(const JambaConfig& cfg, const MambaP& w, int64_t B, int64_t T,
                         const float* x, float* out, MambaCache* c);
void mamba_train_backward(const JambaConfig& cfg, const MambaP& w, int64_t B, int64_t T,
                          const float* x, const MambaCache& c, const float* dout, float* dx,
                          Grads& G);

// ---- Grouped-query causal attention (spec §2.4) ------------------------------------------
struct AttnCache {
  std::vector<float> q;  // [M, nh*hd]
  std::vector<float> k;  // [M, nkv*hd]
  std::vector<float> v;  // [M, nkv*hd]
  std::vector<float> o;  // [M, nh*hd]  attention output (o_proj input)
};
void attention_train_forward(const JambaConfig& cfg, const AttnP& w, int64_t B, int64_t T,
                             const float* x, float* out, AttnCache* c);
void attention_train_backward(const JambaConfig& cfg, const AttnP& w, int64_t B, int64_t T,
                              const float* x, const AttnCache& c, const float* dout, float* dx,
                              Grads& G);

// ---- SwiGLU MLP (spec §2.8) ------------------------------------------------------------------
struct MlpCache {
  std::vector<float> g, u;  // [M, I] gate_proj and up_proj outputs
};
void mlp_train_forward(const MlpP& w, const float* x, int64_t M, float* out, MlpCache* c);
// dx (+)= ... : accumulate_dx adds into dx instead of overwriting.
void mlp_train_backward(const MlpP& w, const float* x, const MlpCache& c, const float* dout,
                        int64_t M, float* dx, bool accumulate_dx, Grads& G);

// ---- Sparse MoE (spec §2.9) --------------------------------------------------------------
struct MoeCache {
  std::vector<float> probs;                    // [M, E] fp32 router softmax
  std::vector<int32_t> sel;                    // [M, k] selected experts, by descending p
  std::vector<std::vector<int64_t>> rows;      // per expert: its token rows, ascending
  std::vector<std::vector<float>> xe;          // per expert: [Me, D] gathered inputs
  std::vector<std::vector<float>> ye;          // per expert: [Me, D] expert outputs
  std::vector<MlpCache> mlp;                   // per expert
};
void moe_train_forward(const JambaConfig& cfg, const MoeP& w, const float* x, int64_t M,
                       float* out, MoeCache* c);
// aux_dp[e] = d objective / d probs[r, e] from the load-balancing loss (the same for every row
// r of this layer; empty when there is no aux term).
void moe_train_backward(const JambaConfig& cfg, const MoeP& w, const float* x, const MoeCache& c,
                        const float* dout, int64_t M, const std::vector<float>& aux_dp,
                        float* dx, Grads& G);

}  // namespace jamba
