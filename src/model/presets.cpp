#include "model/presets.h"

#include "core/error.h"

namespace jamba {

std::vector<std::string> preset_names() { return {"r3b", "moe1b", "mini", "tiny"}; }

bool is_preset(const std::string& name) {
  for (const auto& n : preset_names())
    if (n == name) return true;
  return false;
}

JambaConfig preset_config(const std::string& name) {
  JambaConfig c;
  if (name == "r3b") {
    c.hidden_size = 2560;
    c.num_hidden_layers = 28;
    c.attn_layer_period = 14;
    c.attn_layer_offset = 7;
    c.num_attention_heads = 20;
    c.num_key_value_heads = 1;
    c.intermediate_size = 8192;
    c.num_experts = 1;
    c.num_experts_per_tok = 1;
    c.tie_word_embeddings = true;
    c.mamba_dt_rank = 160;
    c.eos_token_id = {2, 519};
  } else if (name == "moe1b") {
    c.hidden_size = 1024;
    c.num_hidden_layers = 16;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 4;
    c.num_experts = 16;
    c.num_experts_per_tok = 2;
    c.intermediate_size = 2048;
    c.mamba_dt_rank = 64;
  } else if (name == "mini") {
    c.mamba_dt_rank = 256;  // all other fields are the reference defaults (Jamba-v0.1 / 1.5 Mini)
    c.eos_token_id = {2, 518};
  } else if (name == "tiny") {
    c.hidden_size = 64;
    c.num_hidden_layers = 4;
    c.attn_layer_period = 2;
    c.attn_layer_offset = 1;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.intermediate_size = 128;
    c.num_experts = 4;
    c.num_experts_per_tok = 2;
    c.mamba_dt_rank = 4;
  } else {
    fail("unknown preset '", name, "' (known: r3b, moe1b, mini, tiny)");
  }
  c.use_mamba_kernels = false;
  c.validate("preset " + name);
  c.derive();
  return c;
}

}  // namespace jamba
