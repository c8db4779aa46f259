// `jamba info`: what a checkpoint is and what it costs.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "model/model.h"
#include "model/model_info.h"

namespace jamba::app {

namespace {
std::string human(double bytes) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (bytes >= 1024 && i < 4) bytes /= 1024, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", bytes, u[i]);
  return buf;
}
}  // namespace

Runner add_info(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("auto");
  app.add_option("--model", *dir, "checkpoint directory")->required();
  app.add_option("--dtype", *dtype, kDtypeHelp);
  return [dir, dtype]() {
    Model model = Model::load(*dir, {.weights = weight_type_from_name(*dtype)});
    const JambaConfig& c = model.config();
    const ModelStats s = model_stats(c);
    std::printf("model: %s\n", dir->c_str());
    std::printf("hidden %lld, layers %lld, heads %lld / kv %lld (head dim %lld), intermediate "
                "%lld, vocab %lld, experts %lld top-%lld, d_inner %lld, d_state %lld, d_conv "
                "%lld, dt_rank %lld, tied embeddings %s\n",
                (long long)c.hidden_size, (long long)c.num_hidden_layers,
                (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
                (long long)c.head_dim(), (long long)c.intermediate_size, (long long)c.vocab_size,
                (long long)c.num_experts, (long long)c.num_experts_per_tok, (long long)c.d_inner(),
                (long long)c.mamba_d_state, (long long)c.mamba_d_conv, (long long)c.mamba_dt_rank,
                c.tie_word_embeddings ? "yes" : "no");
    std::printf("layer schedule (A = attention, M = Mamba; +moe = sparse MoE FFN):\n");
    for (size_t i = 0; i < c.layers.size(); ++i)
      std::printf("  %2zu %s%s\n", i, c.layers[i].mixer == MixerKind::Attention ? "A" : "M",
                  c.layers[i].ffn == FfnKind::Moe ? " +moe" : "");
    std::printf("attention layers %lld, Mamba layers %lld, MoE layers %lld\n",
                (long long)c.n_attention_layers(),
                (long long)(c.num_hidden_layers - c.n_attention_layers()),
                (long long)c.n_moe_layers());
    std::printf("parameters: total %lld (%.3f B), active per token %lld (%.3f B)\n",
                (long long)s.params_total, s.params_total / 1e9, (long long)s.params_active,
                s.params_active / 1e9);
    std::printf("weights in file: %s; as float32 in memory: %s\n",
                human(double(model.weights().file_bytes)).c_str(),
                human(double(s.params_total) * 4).c_str());
    std::printf("matrices in memory (%s%s): %s\n", weight_type_name(model.weights().type),
                model.weights().prequantized ? ", as stored" : "",
                human(double(model.weights().matrix_bytes())).c_str());
    std::printf("KV cache per token (f32): %s; recurrent state per sequence (f32): %s\n",
                human(double(s.kv_bytes_per_token)).c_str(),
                human(double(s.state_bytes_per_seq)).c_str());
    std::printf("matmul FLOPs per token (forward): %.3f GFLOP\n", s.flops_per_token / 1e9);
    return 0;
  };
}

}  // namespace jamba::app
