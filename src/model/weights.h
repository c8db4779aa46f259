// Per-block weight structs and the validated loader. Weights are float32; F32 tensors are used
// in place from the memory map, BF16/F16 tensors are converted once at load. The big matrices
// may instead be held in bf16 or in a quantized format (int8 / q4, kernels/quant.h,
// docs/QUANT.md), quantized at load or read from a quantized checkpoint.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/alloc.h"

#include "io/safetensors.h"
#include "model/config.h"

namespace jamba {

enum class QuantKind { None, Int8, Q4 };

// A LoRA adapter on a linear layer (model/lora.h): y += scale * (x A^T) B^T, i.e. the weight
// W + scale * B A, applied on the fly whatever W's type.
struct LoraAdapter {
  const float* A = nullptr;  // [rank, in]
  const float* B = nullptr;  // [out, rank]
  int64_t rank = 0;
  float scale = 0;           // lora_alpha / rank
};

// y = x W^T + b. W [out, in] is held in exactly one of: f32 (`w`), bf16 (`w16`), or quantized
// (`wq` + `scale` or `q4_scale`, kind `quant`).
struct Linear {
  const float* w = nullptr;     // [out, in] f32, or null
  const float* b = nullptr;     // [out] or null
  int64_t out = 0, in = 0;
  const uint16_t* w16 = nullptr;  // [out, in] bf16 bits, or null
  QuantKind quant = QuantKind::None;
  const uint8_t* wq = nullptr;    // Int8: [out, in] int8; Q4: [out, q4_row_bytes(in)]
  const float* scale = nullptr;   // Int8: [out]
  const uint16_t* q4_scale = nullptr;  // Q4: [out, q4_groups(in)] bf16 bits
  bool bf16_activations = false;  // w16 only: inputs rounded to bf16 (MatmulActivations, model.h)
  const LoraAdapter* lora = nullptr;  // an adapter added to this layer's output, or null

  size_t bytes() const;  // weight bytes in memory, scales included (bias excluded)
};

struct MambaWeights {
  Linear in_proj;   // [2*Din, D]
  Linear x_proj;    // [R + 2N, Din]
  Linear dt_proj;   // [Din, R] + bias [Din]
  Linear out_proj;  // [D, Din]
  const float* conv_w = nullptr;  // [Din, K]
  const float* conv_b = nullptr;  // [Din] or null
  std::vector<float> A;           // [Din, N] = -exp(A_log)
  const float* A_log = nullptr;   // [Din, N] as stored (f32; training's gradient slot), or null
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

enum class WeightType { Auto, F32, BF16, Int8, Int8Experts, Q4 };

struct Weights {
  Linear embed;                       // [V, D] rows gathered by token id (f32 or bf16)
  const float* final_norm = nullptr;  // [D]
  Linear lm_head;                     // [V, D] (the embedding matrix when tied)
  std::vector<LayerWeights> layers;

  // Storage: the mapped checkpoint (F32 tensors point into it) and converted copies.
  Checkpoint checkpoint;
  std::vector<std::unique_ptr<AlignedVector<float>>> owned;
  std::vector<std::unique_ptr<AlignedVector<uint16_t>>> owned16;
  std::vector<std::unique_ptr<AlignedVector<uint8_t>>> owned8;
  // LoRA adapters the Linears point at (model/lora.h, attach_lora); a unique_ptr so that the
  // addresses survive moves of Weights.
  std::unique_ptr<std::vector<LoraAdapter>> lora_adapters;
  size_t file_bytes = 0;  // bytes of tensor data in the checkpoint
  bool matrices_bf16 = false;  // the matrices that are not quantized are bf16 (else f32)
  WeightType type = WeightType::F32;  // resolved (never Auto): F32, BF16, Int8, Int8Experts or Q4
  bool prequantized = false;   // read from a quantized checkpoint (quantization_config)
  bool bf16_activations = false;  // some GEMM matrix rounds its inputs to bf16 (MatmulActivations)

  static Weights load(const JambaConfig& cfg, const std::string& dir, WeightType type);
  // Float32 weights used in place from tensors held elsewhere (training's parameters, by their
  // HF names; Checkpoint::in_memory): every matrix and vector points into them, so the view sees
  // their current values (except MambaWeights::A, computed here from A_log).
  static Weights view_f32(const JambaConfig& cfg, Checkpoint tensors);
  size_t matrix_bytes() const;  // memory held by the big matrices (f32 or bf16)

 private:
  static Weights build(const JambaConfig& cfg, Weights w, WeightType type, WeightType stored,
                       bool in_place_file, const std::string& dir);
};

// Every matrix of `w` with its canonical weight name ("model.layers.3.mamba.in_proj.weight"),
// in load order; a tied LM head only when it is its own quantized copy (int8 / q4).
void for_each_matrix(const Weights& w, const JambaConfig& cfg,
                     const std::function<void(const std::string&, const Linear&)>& fn);

// The `quantization_config` entry of config.json (docs/QUANT.md): the weight type a quantized
// checkpoint is stored in, or Auto when there is none (or no config.json). Throws naming the file
// and field on an entry this library did not write.
WeightType stored_weight_type(const std::string& config_path);
std::string quantization_config_json(WeightType t);  // the entry `jamba quantize` writes

// Canonical (in-library, spec §5.1) name of a checkpoint tensor, mapping the historical
// Jamba-v0.1 names of spec §5.3. `cfg` decides whether a layer's `experts.0.` is a dense FFN.
std::string canonical_tensor_name(const std::string& name, const JambaConfig& cfg);

}  // namespace jamba
