#include "model/model_info.h"

namespace jamba {

ModelStats model_stats(const JambaConfig& c) {
  const int64_t D = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
  const int64_t Din = c.d_inner(), N = c.mamba_d_state, R = c.mamba_dt_rank, K = c.mamba_d_conv;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim();
  const int64_t E = c.num_experts, k = c.num_experts_per_tok;
  ModelStats s;
  const int64_t head = c.tie_word_embeddings ? 0 : V * D;
  s.params_total = V * D + head + D;
  s.params_active = s.params_total;
  int64_t matmul_active = V * D;  // lm_head
  for (const LayerSpec& l : c.layers) {
    int64_t mix = 0, mix_mm = 0;
    if (l.mixer == MixerKind::Mamba) {
      const int64_t pb = c.mamba_proj_bias ? 2 * Din + D : 0;
      mix_mm = 2 * Din * D + (R + 2 * N) * Din + Din * R + D * Din;
      mix = mix_mm + pb + Din * K + (c.mamba_conv_bias ? Din : 0) + Din + Din * N + Din + R + 2 * N;
      s.state_bytes_per_seq += Din * (K + N) * 4;
    } else {
      mix_mm = (nh * hd + 2 * nkv * hd) * D + D * nh * hd;
      mix = mix_mm;
      s.kv_bytes_per_token += 2 * nkv * hd * 4;
    }
    const int64_t mlp = 3 * I * D;
    int64_t ff_total = mlp, ff_active = mlp;
    if (l.ffn == FfnKind::Moe) {
      ff_total = E * mlp + E * D;
      ff_active = k * mlp + E * D;
    }
    s.params_total += 2 * D + mix + ff_total;
    s.params_active += 2 * D + mix + ff_active;
    matmul_active += mix_mm + ff_active;
  }
  s.flops_per_token = 2 * matmul_active;
  return s;
}

}  // namespace jamba
