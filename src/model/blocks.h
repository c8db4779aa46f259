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

// y[M, out] (ldy) = x[M, in] (ldx) @ W^T (+ b); f32 or bf16 weights.
void linear_forward(const Linear& l, const float* x, int64_t M, float* y, int64_t ldy = -1,
                    int64_t ldx = -1);

// Mamba mixer (spec §2.5): x [M, D] normed input -> out [M, D].
void mamba_forward(const JambaConfig& cfg, const MambaWeights& w, int64_t il,
                   const std::vector<Segment>& segs, const float* x, int64_t M, float* out);

// Grouped-query attention (spec §2.4) with the per-sequence KV cache.
void attention_forward(const JambaConfig& cfg, const AttentionWeights& w, int64_t il,
                       const std::vector<Segment>& segs, const float* x, int64_t M, float* out);

void mlp_forward(const MlpWeights& w, const float* x, int64_t M, float* out);
// Sparse MoE (spec §2.9): fp32 softmax router, top-k, weights not renormalised, tokens grouped
// per expert (one GEMM chain per active expert).
void moe_forward(const JambaConfig& cfg, const MoeWeights& w, const float* x, int64_t M,
                 float* out);

}  // namespace jamba
