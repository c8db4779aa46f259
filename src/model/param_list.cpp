#include "model/param_list.h"

namespace jamba {

std::vector<ParamSpec> param_list(const JambaConfig& c) {
  const int64_t D = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
  const int64_t Din = c.d_inner(), N = c.mamba_d_state, R = c.mamba_dt_rank, K = c.mamba_d_conv;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim();
  std::vector<ParamSpec> p;
  auto add = [&](std::string name, std::vector<int64_t> shape, InitKind k) {
    p.push_back({std::move(name), std::move(shape), k});
  };
  add("model.embed_tokens.weight", {V, D}, InitKind::Embedding);
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) {
    const std::string l = "model.layers." + std::to_string(il);
    const LayerSpec& s = c.layers[static_cast<size_t>(il)];
    add(l + ".input_layernorm.weight", {D}, InitKind::Ones);
    if (s.mixer == MixerKind::Mamba) {
      const std::string m = l + ".mamba";
      add(m + ".A_log", {Din, N}, InitKind::ALog);
      add(m + ".D", {Din}, InitKind::Ones);
      add(m + ".in_proj.weight", {2 * Din, D}, InitKind::Normal);
      if (c.mamba_proj_bias) add(m + ".in_proj.bias", {2 * Din}, InitKind::Zeros);
      add(m + ".conv1d.weight", {Din, 1, K}, InitKind::Normal);
      if (c.mamba_conv_bias) add(m + ".conv1d.bias", {Din}, InitKind::Zeros);
      add(m + ".x_proj.weight", {R + 2 * N, Din}, InitKind::Normal);
      add(m + ".dt_proj.weight", {Din, R}, InitKind::Normal);
      add(m + ".dt_proj.bias", {Din}, InitKind::Zeros);
      add(m + ".out_proj.weight", {D, Din}, InitKind::Normal);
      if (c.mamba_proj_bias) add(m + ".out_proj.bias", {D}, InitKind::Zeros);
      add(m + ".dt_layernorm.weight", {R}, InitKind::Ones);
      add(m + ".b_layernorm.weight", {N}, InitKind::Ones);
      add(m + ".c_layernorm.weight", {N}, InitKind::Ones);
    } else {
      const std::string a = l + ".self_attn";
      add(a + ".q_proj.weight", {nh * hd, D}, InitKind::Normal);
      add(a + ".k_proj.weight", {nkv * hd, D}, InitKind::Normal);
      add(a + ".v_proj.weight", {nkv * hd, D}, InitKind::Normal);
      add(a + ".o_proj.weight", {D, nh * hd}, InitKind::Normal);
    }
    const std::string f = l + ".feed_forward";
    auto mlp = [&](const std::string& pre) {
      add(pre + ".gate_proj.weight", {I, D}, InitKind::Normal);
      add(pre + ".up_proj.weight", {I, D}, InitKind::Normal);
      add(pre + ".down_proj.weight", {D, I}, InitKind::Normal);
    };
    if (s.ffn == FfnKind::Moe) {
      add(f + ".router.weight", {c.num_experts, D}, InitKind::Normal);
      for (int64_t e = 0; e < c.num_experts; ++e) mlp(f + ".experts." + std::to_string(e));
    } else {
      mlp(f);
    }
    add(l + ".pre_ff_layernorm.weight", {D}, InitKind::Ones);
  }
  add("model.final_layernorm.weight", {D}, InitKind::Ones);
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, D}, InitKind::Normal);
  return p;
}

}  // namespace jamba
