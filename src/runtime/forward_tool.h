// The exact-comparison tool behind `jamba forward` (and the golden tests): full forward with
// logits/hidden states, or greedy continuation through the hybrid cache.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace jamba {

struct TokenBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids;    // [B, T]
  std::vector<uint8_t> mask;   // [B, T] or empty (all ones)
};

// Reads `input_ids` (I64/I32 [B,T]) and optional `attention_mask` ([B,T], 0/1) from a
// safetensors file. Throws naming the file and tensor on bad shape/dtype/values.
TokenBatch read_token_batch(const std::string& path);

struct FullForwardResult {
  std::vector<float> logits;                // [B, T, V]
  std::vector<std::vector<float>> hidden;   // L+1 entries of [B, T, D] (if requested)
};
// Each row is one sequence of the batch (one forward call, rows advanced together).
// `chunk` > 0 feeds the prompt in chunks of that many tokens (same result as one prefill).
FullForwardResult full_forward(const Model& model, const TokenBatch& in, bool hidden,
                               int64_t chunk = 0);

struct GreedyResult {
  std::vector<int64_t> gen_ids;     // [B, T + N]
  std::vector<float> step_logits;   // [B, N, V]
};
// Prefill each row's T tokens (with its mask), then N greedy steps through the cache, all rows
// in one forward per step. step_logits[:, 0] comes from the prefill's last position.
GreedyResult greedy_generate(const Model& model, const TokenBatch& in, int64_t n_new,
                             int64_t chunk = 0);

// argmax with ties to the lowest index (torch.argmax on CPU).
int32_t argmax(const float* x, int64_t n);

}  // namespace jamba
