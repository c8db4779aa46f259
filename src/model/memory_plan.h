// Memory planning from a config alone: what a model of this shape holds at a given context —
// weights as held, the KV cache of its attention layers, the recurrent state of its Mamba layers,
// the activation scratch of one prefill chunk — and the same for an all-attention model of the
// same shape, so the hybrid's saving is one line (`jamba info --context N`, `jamba explore`).
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"
#include "model/weights.h"

namespace jamba {

// Element type of the attention layers' K/V cache. Auto resolves to bf16 when the matrices are
// held in bf16 (what the reference keeps for a bf16 checkpoint: its cache has the model's dtype)
// and to f32 otherwise (f32 and quantized weights: exact f32 runs stay exact).
enum class KvDtype { Auto, F32, BF16 };
KvDtype kv_dtype_from_name(const std::string& name);  // "auto" | "f32" | "bf16", throws otherwise
const char* kv_dtype_name(KvDtype t);
KvDtype resolve_kv_dtype(KvDtype requested, bool matrices_bf16);
inline int64_t kv_elem_bytes(KvDtype t) { return t == KvDtype::BF16 ? 2 : 4; }
inline constexpr const char* kKvDtypeHelp =
    "K/V cache element type: auto (bf16 when the weights are bf16, as the reference's cache of a "
    "bf16 checkpoint; f32 otherwise), f32, bf16 (half the memory; attention still sums in f32)";

struct MemoryPlanOptions {
  int64_t context = 4096;               // tokens held per sequence
  int64_t batch = 1;                    // sequences held at once
  KvDtype kv = KvDtype::BF16;           // resolved (not Auto)
  WeightType weights = WeightType::F32;  // how the matrices are held (Auto = F32 here)
  bool base_bf16 = false;               // quantized types: embedding kept bf16 (else f32)
  int64_t chunk = 512;                  // prompt tokens per forward (activation scratch)
};

struct MemoryPlan {
  int64_t n_attention = 0, n_mamba = 0;
  int64_t weight_bytes = 0;          // matrices + vectors as held
  int64_t kv_bytes_per_layer = 0;    // one attention layer: K and V, all sequences, full context
  int64_t kv_bytes = 0;              // all attention layers
  int64_t state_bytes_per_layer = 0;  // one Mamba layer: conv + SSM state (f32), all sequences
  int64_t state_bytes = 0;           // all Mamba layers
  int64_t scratch_bytes = 0;         // live activations of one prefill chunk (the largest block)
  int64_t total_bytes = 0;
};

MemoryPlan plan_memory(const JambaConfig& cfg, const MemoryPlanOptions& opt);

// The same shape with every layer attention (attn_layer_period 1, offset 0); FFNs unchanged.
JambaConfig all_attention_variant(const JambaConfig& cfg);

// "1.50 GiB" etc. (binary units).
std::string human_bytes(double bytes);

}  // namespace jamba
