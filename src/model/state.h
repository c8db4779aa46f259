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
  // [nkv][cap][hd]: rows 0..len-1 of each head block are valid.
  std::vector<float> k, v;
  int64_t cap = 0;

  void reserve(int64_t nkv, int64_t hd, int64_t new_cap, int64_t len);
};

struct SequenceState {
  int64_t pos = 0;                  // tokens consumed (padding included)
  std::vector<uint8_t> key_valid;   // [pos]: 0 for padding positions (never attended)
  std::vector<MambaLayerState> mamba;  // indexed by layer; empty entries for attention layers
  std::vector<AttnLayerState> attn;    // indexed by layer; empty entries for Mamba layers

  static SequenceState create(const JambaConfig& cfg);
  SequenceState snapshot() const { return *this; }
  size_t bytes() const;  // memory held
};

}  // namespace jamba
