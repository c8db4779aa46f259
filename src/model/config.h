// JambaConfig: every field of HF's config.json with the reference defaults (spec §1), the derived
// layer schedule, and validation with errors naming the field and the bad value.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/checked.h"

namespace jamba {

// Upper bounds of the config fields that size memory, checked by validate() before anything is
// sized from them (config.json comes from the internet). Each is the largest released Jamba value
// (spec §7: v0.1 / 1.5 Mini / 1.5 Large 398B / Reasoning 3B) times a generous margin, and small
// enough that products of sizes stay far inside int64.
inline constexpr int64_t kMaxVocabSize = int64_t(1) << 24;     // 65536 released; 256x
inline constexpr int64_t kMaxHiddenSize = int64_t(1) << 17;    // 8192 (1.5 Large); 16x
inline constexpr int64_t kMaxIntermediate = int64_t(1) << 20;  // 24576 (1.5 Large); ~40x
inline constexpr int64_t kMaxLayers = int64_t(1) << 12;        // 72 (1.5 Large); ~57x
inline constexpr int64_t kMaxHeads = int64_t(1) << 12;         // 64 query heads (Large); 64x
inline constexpr int64_t kMaxExperts = int64_t(1) << 12;       // 16 released (256 elsewhere); 256x
inline constexpr int64_t kMaxDState = int64_t(1) << 12;        // 16 released (Mamba-2: 128); 256x
inline constexpr int64_t kMaxDConv = int64_t(1) << 10;         // 4 released; 256x
inline constexpr int64_t kMaxExpand = 64;                      // 2 released; 32x
inline constexpr int64_t kMaxDtRank = kMaxHiddenSize;          // 512 (Large); >= "auto" of any D
// A period above num_hidden_layers gives at most one such layer; bounded only to stay sane.
inline constexpr int64_t kMaxLayerPeriod = int64_t(1) << 20;
// 262144 released (~1M extended); 4096x. Only the default context limit (the KV cache grows with
// the tokens actually held); times the KV bytes per token of all layers (< 2^32) it fits int64.
inline constexpr int64_t kMaxPositionEmbeddings = int64_t(1) << 30;
// Total parameters: 398.6e9 for 1.5 Large; 2^44 = 17.6e12 is 44x. Every weight tensor is part of
// this count, so after validate() every product of config sizes that shapes a weight is < 2^44,
// and times any per-parameter byte factor up to 2^18 (f32 + grad + 2 Adam moments: 16) it fits.
inline constexpr int64_t kMaxParams = int64_t(1) << 44;
// Expert MLPs over all MoE layers (three weight tensors each): 576 in 1.5 Large (36 MoE layers x
// 16 experts); 2^16 is 113x. kMaxParams alone does not bound how many tensors a config lists:
// 1-wide experts, 4096 in each of 4096 layers, are 67M parameters but 50M tensors (GBs for
// param_list, i.e. `jamba init`; fuzz_config, tests/test_fuzz_found.cpp).
inline constexpr int64_t kMaxExpertMlps = int64_t(1) << 16;

enum class MixerKind { Mamba, Attention };
enum class FfnKind { Dense, Moe };

struct LayerSpec {
  MixerKind mixer;
  FfnKind ffn;
};

struct JambaConfig {
  int64_t vocab_size = 65536;
  bool tie_word_embeddings = false;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 14336;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 8;
  std::string hidden_act = "silu";
  double initializer_range = 0.02;
  double rms_norm_eps = 1e-6;
  bool use_cache = true;
  int64_t num_logits_to_keep = 1;
  bool output_router_logits = false;
  double router_aux_loss_coef = 0.001;
  int64_t pad_token_id = 0;  // -1 when null
  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_id{2};
  int64_t max_position_embeddings = 262144;
  double attention_dropout = 0.0;
  int64_t num_experts_per_tok = 2;
  int64_t num_experts = 16;
  int64_t expert_layer_period = 2;
  int64_t expert_layer_offset = 1;
  int64_t attn_layer_period = 8;
  int64_t attn_layer_offset = 4;
  bool use_mamba_kernels = true;
  int64_t mamba_d_state = 16;
  int64_t mamba_d_conv = 4;
  int64_t mamba_expand = 2;
  int64_t mamba_dt_rank = 0;  // resolved: "auto" -> ceil(hidden_size / 16)
  bool mamba_conv_bias = true;
  bool mamba_proj_bias = false;
  std::string torch_dtype = "float32";

  // Derived.
  std::vector<LayerSpec> layers;
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t d_inner() const {  // Din = mamba_expand * D
    return checked_mul(mamba_expand, hidden_size, "config: d_inner = mamba_expand * hidden_size");
  }
  int64_t n_attention_layers() const;
  int64_t n_moe_layers() const;

  // Parse config.json text / file. `source` names the file in errors.
  static JambaConfig from_json_text(const std::string& text, const std::string& source);
  static JambaConfig from_file(const std::string& path);
  std::string to_json_text() const;  // HF-style config.json

  // Throws naming field + value: signs, upper bounds (kMax* above), divisibility, and the
  // parameter count (checked arithmetic, at most kMaxParams).
  void validate(const std::string& source) const;
  void derive();  // fills `layers` (num_hidden_layers must be validated)
  // Parameters of the model this config describes (weights of every layer, embedding, head),
  // computed with checked arithmetic: throws naming `source` if it overflows int64.
  int64_t checked_param_count(const std::string& source) const;
};

}  // namespace jamba
