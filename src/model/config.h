// JambaConfig: every field of HF's config.json with the reference defaults (spec §1), the derived
// layer schedule, and validation with errors naming the field and the bad value.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace jamba {

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
  int64_t d_inner() const { return mamba_expand * hidden_size; }
  int64_t n_attention_layers() const;
  int64_t n_moe_layers() const;

  // Parse config.json text / file. `source` names the file in errors.
  static JambaConfig from_json_text(const std::string& text, const std::string& source);
  static JambaConfig from_file(const std::string& path);
  std::string to_json_text() const;  // HF-style config.json

  void validate(const std::string& source) const;  // throws naming field + value
  void derive();                                   // fills `layers`
};

}  // namespace jamba
