// Per-block weight structs and the validated loader. Weights are float32; F32 tensors are used
// in place from the memory map, BF16/F16 tensors are converted once at load.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

namespace jamba {

// y = x W^T + b. W [out, in] is held either in f32 (`w`) or in bf16 (`w16`), never both.
struct Linear {
  const float* w = nullptr;     // [out, in] f32, or null
  const float* b = nullptr;     // [out] or null
  int64_t out = 0, in = 0;
  const uint16_t* w16 = nullptr;  // [out, in] bf16 bits, or null

  size_t bytes() const { return size_t(out * in) * (w16 ? 2 : 4); }
};

struct MambaWeights {
  Linear in_proj;   // [2*Din, D]
  Linear x_proj;    // [R + 2N, Din]
  Linear dt_proj;   // [Din, R] + bias [Din]
  Linear out_proj;  // [D, Din]
  const float* conv_w = nullptr;  // [Din, K]
  const float* conv_b = nullptr;  // [Din] or null
  std::vector<float> A;           // [Din, N] = -exp(A_log)
  const float* D = nullptr;       // [Din]
  const float* dt_norm = nullptr;  // [R]
  const float* b_norm = nullptr;   // [N]
  const float* c_norm = nullptr;   // [N]
};

struct AttentionWeights {
  Linear q, k, v, o;
};

struct MlpWeights {
  Linear gate, up, down;
};

struct MoeWeights {
  Linear router;  // [E, D]
  std::vector<MlpWeights> experts;
};

struct LayerWeights {
  const float* input_norm = nullptr;
  const float* pre_ff_norm = nullptr;
  MambaWeights mamba;    // if Mamba layer
  AttentionWeights attn; // if attention layer
  MlpWeights mlp;        // if dense FFN
  MoeWeights moe;        // if MoE FFN
};

enum class WeightType;

struct Weights {
  Linear embed;                       // [V, D] rows gathered by token id (f32 or bf16)
  const float* final_norm = nullptr;  // [D]
  Linear lm_head;                     // [V, D] (the embedding matrix when tied)
  std::vector<LayerWeights> layers;

  // Storage: the mapped checkpoint (F32 tensors point into it) and converted copies.
  Checkpoint checkpoint;
  std::vector<std::unique_ptr<std::vector<float>>> owned;
  std::vector<std::unique_ptr<std::vector<uint16_t>>> owned16;
  size_t file_bytes = 0;  // bytes of tensor data in the checkpoint
  bool matrices_bf16 = false;

  static Weights load(const JambaConfig& cfg, const std::string& dir, WeightType type);
  size_t matrix_bytes() const;  // memory held by the big matrices (f32 or bf16)
};

// Canonical (in-library, spec §5.1) name of a checkpoint tensor, mapping the historical
// Jamba-v0.1 names of spec §5.3. `cfg` decides whether a layer's `experts.0.` is a dense FFN.
std::string canonical_tensor_name(const std::string& name, const JambaConfig& cfg);

}  // namespace jamba
