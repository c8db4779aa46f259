// Block forwards used by the layer loop in model.cpp. Each works on all M tokens of a ragged
// batch at once (one GEMM per projection) and per sequence where state is involved.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/state.h"
#include "model/weights.h"

namespace jamba {

// A contiguous run of rows [row0, row0 + len) of the batch belonging to one sequence.
struct Segment {
  SequenceState* state;
  int64_t row0, len;
  int64_t pos0;               // absolute position of the first row
  const uint8_t* mask;        // [len] or null (all real)
};

// What the forwards save for a backward (training, src/train) when given a tape; nothing of
// size [M, Din, N] (the scan's states are recomputed by the backward).
struct MambaTape {
  std::vector<float> xz;       // [M, 2Din]  in_proj output: x (pre-conv) | z (gate)
  std::vector<float> xc;       // [M, Din]   silu(conv(x) + b)
  std::vector<float> sbc_raw;  // [M, R+2N]  x_proj output
  std::vector<float> sbc;      // [M, R+2N]  after the dt/B/C RMSNorms
  std::vector<float> dt_pre;   // [M, Din]   dt_proj output (before softplus)
  std::vector<float> dt;       // [M, Din]   softplus(dt_pre)
  std::vector<float> yg;       // [M, Din]   gated scan output (out_proj input)
};
struct AttnTape {
  std::vector<float> q;  // [M, nh*hd]
  std::vector<float> k;  // [M, nkv*hd]
  std::vector<float> v;  // [M, nkv*hd]
  std::vector<float> o;  // [M, nh*hd]  attention output (o_proj input)
};
struct MlpTape {
  std::vector<float> g, u;  // [M, I] gate_proj and up_proj outputs
};
struct MoeTape {
  std::vector<float> probs;                // [M, E] fp32 router softmax
  std::vector<int32_t> sel;                // [M, k] selected experts, by descending p
  std::vector<std::vector<int64_t>> rows;  // per expert: its token rows, ascending
  std::vector<std::vector<float>> xe;      // per expert: [Me, D] gathered inputs
  std::vector<std::vector<float>> ye;      // per expert: [Me, D] expert outputs
  std::vector<MlpTape> mlp;                // per expert
};
// One layer: the residual stream in, its two norms' outputs, the stream between the blocks.
struct LayerTape {
  std::vector<float> h_in, xn1, h_mid, xn2;  // [M, D]
  MambaTape mamba;
  AttnTape attn;
  MlpTape mlp;
  MoeTape moe;
};

// B sequences of T rows each starting from an empty state (a training batch): the states and
// segments the block forwards take. Rows b*T + t.
class FreshSequences {
 public:
  FreshSequences(const JambaConfig& cfg, int64_t B, int64_t T);
  FreshSequences(const FreshSequences&) = delete;  // the segments point into states_
  FreshSequences& operator=(const FreshSequences&) = delete;
  const std::vector<Segment>& segments() const { return segs_; }

 private:
  std::vector<SequenceState> states_;
  std::vector<Segment> segs_;
};

// Rows ids[0..n) of the embedding (f32 or bf16) -> out [n, D].
void embed_rows(const Linear& embed, const int32_t* ids, int64_t n, float* out);

// y[M, out] (ldy) = x[M, in] (ldx) @ W^T (+ b); f32 or bf16 weights.
void linear_forward(const Linear& l, const float* x, int64_t M, float* y, int64_t ldy = -1,
                    int64_t ldx = -1);

// y[M, out] (ldy) += scale * (x[M, in] A^T) B^T (a LoRA adapter's contribution).
void lora_forward(const LoraAdapter& a, int64_t out, int64_t in, const float* x, int64_t ldx,
                  int64_t M, float* y, int64_t ldy);

// Mamba mixer (spec §2.5): x [M, D] normed input -> out [M, D].
void mamba_forward(const JambaConfig& cfg, const MambaWeights& w, int64_t il,
                   const std::vector<Segment>& segs, const float* x, int64_t M, float* out,
                   MambaTape* tape = nullptr);

// Grouped-query attention (spec §2.4) with the per-sequence KV cache.
void attention_forward(const JambaConfig& cfg, const AttentionWeights& w, int64_t il,
                       const std::vector<Segment>& segs, const float* x, int64_t M, float* out,
                       AttnTape* tape = nullptr);

void mlp_forward(const MlpWeights& w, const float* x, int64_t M, float* out,
                 MlpTape* tape = nullptr);
// Sparse MoE (spec §2.9): fp32 softmax router, top-k, weights not renormalised, tokens grouped
// per expert (one GEMM chain per active expert).
void moe_forward(const JambaConfig& cfg, const MoeWeights& w, const float* x, int64_t M,
                 float* out, MoeTape* tape = nullptr);

// The layer loop of Model::forward: h [M, D] (in / out, the residual stream) through layers
// [l0, l1) of the rows of `segs`. tapes (if not null): layer il's saved activations into
// tapes[il - l0]. hidden (if not null): the stream after each layer but the model's last is
// appended.
void forward_layers(const JambaConfig& cfg, const Weights& w, const std::vector<Segment>& segs,
                    float* h, int64_t M, size_t l0, size_t l1, LayerTape* tapes,
                    std::vector<std::vector<float>>* hidden);

}  // namespace jamba
