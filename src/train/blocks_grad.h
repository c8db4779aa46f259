// The backward of every block, over a batch of B sequences of T tokens stacked as M = B*T rows
// (row b*T + t), from what the model's forward saved on its tape (model/blocks.h: MambaTape, ...).
// Weights are the model's (model/weights.h); gradients go to the trainable parameters among them
// (Grads::slot: created on first touch), a frozen weight only passes dx through. Backwards take
// dout [M, D] and write dx [M, D] (overwritten).
#pragma once
#include <cstdint>
#include <vector>

#include "model/blocks.h"
#include "model/config.h"
#include "train/ops.h"

namespace jamba {

// Mamba mixer (spec §2.5); x is the block's input (the normed stream).
void mamba_train_backward(const JambaConfig& cfg, const MambaWeights& w, int64_t B, int64_t T,
                          const float* x, const MambaTape& c, const float* dout, float* dx,
                          Grads& G);

// Grouped-query causal attention (spec §2.4).
void attention_train_backward(const JambaConfig& cfg, const AttentionWeights& w, int64_t B,
                              int64_t T, const float* x, const AttnTape& c, const float* dout,
                              float* dx, Grads& G);

// SwiGLU MLP (spec §2.8). dx (+)= ... : accumulate_dx adds into dx instead of overwriting.
void mlp_train_backward(const MlpWeights& w, const float* x, const MlpTape& c, const float* dout,
                        int64_t M, float* dx, bool accumulate_dx, Grads& G);

// Sparse MoE (spec §2.9). aux_dp[e] = d objective / d probs[r, e] from the load-balancing loss
// (the same for every row r of this layer; empty when there is no aux term).
void moe_train_backward(const JambaConfig& cfg, const MoeWeights& w, const float* x,
                        const MoeTape& c, const float* dout, int64_t M,
                        const std::vector<float>& aux_dp, float* dx, Grads& G);

}  // namespace jamba
