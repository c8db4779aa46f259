// LoRA adapters on the model's linear layers, W' = W + (alpha / r) * B A, in the layout PEFT
// reads and writes: a directory with adapter_config.json and adapter_model.safetensors whose
// tensors are named "base_model.model.<module>.lora_A.weight" [r, in] and
// "base_model.model.<module>.lora_B.weight" [out, r], <module> the HF module path
// ("model.layers.3.mamba.in_proj", "model.layers.1.feed_forward.experts.2.gate_proj").
//
// Inference applies them on the fly (Linear::lora, any weight type) or merges them into a full
// checkpoint (`jamba merge-lora`); training (src/train) trains A and B with the base frozen.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace jamba {

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 16;                 // scale = alpha / rank (PEFT's lora_alpha)
  std::vector<std::string> targets;  // short module names (lora_target_names())
  float scale() const { return float(alpha / double(rank)); }
};

// The short names a target list may hold, in the default order: in_proj, x_proj, out_proj,
// q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, router (= "all linear layers"
// of the CLI's default) and dt_proj (only when named).
const std::vector<std::string>& lora_target_names();
std::vector<std::string> default_lora_targets();
// "in_proj,x_proj,..." -> names; throws naming an unknown or repeated entry.
std::vector<std::string> parse_lora_targets(const std::string& list);

struct LoraModule {
  std::string name;  // HF module path, e.g. "model.layers.3.mamba.in_proj"
  int64_t out = 0, in = 0;
};
// Every linear layer of cfg whose short name is in `targets`, in param_list order.
std::vector<LoraModule> lora_modules(const JambaConfig& cfg, const std::vector<std::string>& targets);
std::string lora_a_name(const std::string& module);  // "base_model.model.<module>.lora_A.weight"
std::string lora_b_name(const std::string& module);  // "base_model.model.<module>.lora_B.weight"

// A set of adapters with owned float32 values.
struct LoraWeights {
  LoraConfig config;
  std::vector<LoraModule> modules;
  std::vector<std::vector<float>> A, B;  // per module: [r, in], [out, r]
  std::string base_model;                // adapter_config.json base_model_name_or_path

  // Reads adapter_config.json + adapter_model.safetensors (F32/BF16/F16 tensors), checking every
  // tensor name and shape against cfg; errors name the file, tensor/field, expected and actual.
  static LoraWeights load(const std::string& dir, const JambaConfig& cfg);
  // Writes both files (F32), each atomically (temp file + rename); creates dir.
  void save(const std::string& dir) const;
};

// Points each targeted Linear of w at an adapter viewing A[i] / B[i] (kept in
// w.lora_adapters; the float data must outlive w). Replaces adapters attached before.
void attach_lora(Weights& w, const JambaConfig& cfg, const LoraConfig& lc,
                 const std::vector<LoraModule>& modules, const std::vector<const float*>& A,
                 const std::vector<const float*>& B);

}  // namespace jamba
