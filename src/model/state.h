// Per-sequence hybrid state (spec §3): K/V for attention layers, conv + SSM state for Mamba
// layers. Plain values: copying a SequenceState is a snapshot (see snapshot()).
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace jamba {

struct MambaLayerState {
  std::vector<float> conv;  // [Din, K]: the last K (masked) pre-conv inputs, column K-1 newest
  std::vector<float> ssm;   // [Din, N]: fp32 running state
};

struct AttnLayerState {
  // [nkv][cap][hd]: rows 0..len-1 of each head block are valid. One of the two pairs is used:
  // f32 (k, v) or bf16 bits (k16, v16; rounded to nearest even once, when written).
  bool bf16 = false;
  std::vector<float> k, v;
  std::vector<uint16_t> k16, v16;
  int64_t cap = 0;

  // Grows the capacity to at least new_cap rows per head keeping rows [0, len): doubling (so
  // appends stay amortised O(1)), but never past `limit` rows when new_cap fits in it (a cache
  // filled to the model's context holds no more than that context), and by an eighth past it.
  void reserve(int64_t nkv, int64_t hd, int64_t new_cap, int64_t len, int64_t limit = 0);
  // Writes rows [pos, pos + n) of kv head g from f32 rows (stride ld), rounding when bf16.
  void write(int64_t g, int64_t pos, int64_t n, int64_t hd, const float* k_rows,
             const float* v_rows, int64_t ld);
  // Reads rows [0, n) of kv head g of K (which = 0) or V (1) as f32 into dst [n, hd].
  void read(int which, int64_t g, int64_t n, int64_t hd, float* dst) const;
  size_t bytes() const { return (k.size() + v.size()) * 4 + (k16.size() + v16.size()) * 2; }
};

struct SequenceState {
  int64_t pos = 0;                  // tokens consumed (padding included)
  std::vector<uint8_t> key_valid;   // [pos]: 0 for padding positions (never attended)
  std::vector<MambaLayerState> mamba;  // indexed by layer; empty entries for attention layers
  std::vector<AttnLayerState> attn;    // indexed by layer; empty entries for Mamba layers

  // kv_bf16: the attention layers' K/V cache holds bf16 (model/memory_plan.h, KvDtype).
  static SequenceState create(const JambaConfig& cfg, bool kv_bf16 = false);
  SequenceState snapshot() const { return *this; }
  // Every attention layer's cache holds at least n tokens from here on, allocated once at exactly
  // that size (no doubling, no copy while it grows): for callers that know the final length, e.g.
  // a prompt plus the tokens to generate.
  void reserve_tokens(const JambaConfig& cfg, int64_t n);
  size_t bytes() const;  // memory held
};

}  // namespace jamba
