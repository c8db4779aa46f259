// `jamba info`: what a model is and what it costs — from a checkpoint (--model), a config.json
// (--config) or a preset shape (--preset); with --context, the memory plan at that context beside
// an all-attention model of the same shape (model/memory_plan.h).
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "model/memory_plan.h"
#include "model/model.h"
#include "model/model_info.h"
#include "model/presets.h"

namespace jamba::app {

namespace {

struct InfoOptions {
  std::string model, config, preset, dtype = "auto", kv = "auto";
  int64_t context = 0, batch = 1, chunk = 512;
};

void print_shape(const JambaConfig& c) {
  const ModelStats s = model_stats(c);
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
              (long long)(c.num_hidden_layers - c.n_attention_layers()), (long long)c.n_moe_layers());
  std::printf("parameters: total %lld (%.3f B), active per token %lld (%.3f B)\n",
              (long long)s.params_total, s.params_total / 1e9, (long long)s.params_active,
              s.params_active / 1e9);
  std::printf("matmul FLOPs per token (forward): %.3f GFLOP\n", s.flops_per_token / 1e9);
}

void print_plan(const char* title, const MemoryPlan& p, const MemoryPlanOptions& o) {
  std::printf("%s: %lld attention + %lld Mamba layers\n", title, (long long)p.n_attention,
              (long long)p.n_mamba);
  std::printf("  weights as held (%s):            %14lld B  %s\n", weight_type_name(o.weights),
              (long long)p.weight_bytes, human_bytes(double(p.weight_bytes)).c_str());
  std::printf("  KV cache per attention layer:    %14lld B  %s\n", (long long)p.kv_bytes_per_layer,
              human_bytes(double(p.kv_bytes_per_layer)).c_str());
  std::printf("  KV cache, all %3lld layers (%s):  %14lld B  %s\n", (long long)p.n_attention,
              kv_dtype_name(o.kv), (long long)p.kv_bytes, human_bytes(double(p.kv_bytes)).c_str());
  std::printf("  Mamba conv + SSM state (f32):    %14lld B  %s\n", (long long)p.state_bytes,
              human_bytes(double(p.state_bytes)).c_str());
  std::printf("  scratch of a %lld-token chunk:   %14lld B  %s\n", (long long)o.chunk,
              (long long)p.scratch_bytes, human_bytes(double(p.scratch_bytes)).c_str());
  std::printf("  total:                           %14lld B  %s\n", (long long)p.total_bytes,
              human_bytes(double(p.total_bytes)).c_str());
}

}  // namespace

Runner add_info(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  auto* src = app.add_option_group("model", "what to describe (one of)");
  src->add_option("--model", o->model, "checkpoint directory");
  src->add_option("--config", o->config, "a config.json (no weights needed)");
  src->add_option("--preset", o->preset, "a built-in shape: r3b, moe1b, mini, tiny");
  src->require_option(1);
  app.add_option("--dtype", o->dtype, kDtypeHelp);
  app.add_option("--context", o->context,
                 "tokens per sequence to plan memory for (0 = no plan)")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", o->batch, "sequences held at once")->check(CLI::PositiveNumber);
  app.add_option("--kv-dtype", o->kv, kKvDtypeHelp);
  app.add_option("--chunk", o->chunk, "prompt tokens per forward (activation scratch)")
      ->check(CLI::PositiveNumber);
  return [o]() {
    JambaConfig c;
    WeightType wt = weight_type_from_name(o->dtype);
    bool matrices_bf16 = false;
    if (!o->model.empty()) {
      const Model model = Model::load(o->model, {.weights = wt});
      c = model.config();
      std::printf("model: %s\n", o->model.c_str());
      print_shape(c);
      std::printf("weights in file: %s; as float32 in memory: %s\n",
                  human_bytes(double(model.weights().file_bytes)).c_str(),
                  human_bytes(double(model_stats(c).params_total) * 4).c_str());
      std::printf("matrices in memory (%s%s): %s\n", weight_type_name(model.weights().type),
                  model.weights().prequantized ? ", as stored" : "",
                  human_bytes(double(model.weights().matrix_bytes())).c_str());
      wt = model.weights().type;
      matrices_bf16 = model.weights().matrices_bf16;
    } else {
      if (!o->config.empty()) {
        c = JambaConfig::from_file(o->config);
        std::printf("config: %s\n", o->config.c_str());
      } else {
        c = preset_config(o->preset);
        std::printf("preset: %s\n", o->preset.c_str());
      }
      print_shape(c);
      // As the loader would hold a checkpoint of this config: Auto follows its torch_dtype.
      if (wt == WeightType::Auto) wt = c.torch_dtype == "bfloat16" ? WeightType::BF16 : WeightType::F32;
      matrices_bf16 = wt == WeightType::BF16;
    }
    const KvDtype kv = resolve_kv_dtype(kv_dtype_from_name(o->kv), matrices_bf16);
    const ModelStats s = model_stats(c);
    std::printf("KV cache per token (%s): %s; recurrent state per sequence (f32): %s\n",
                kv_dtype_name(kv), human_bytes(double(s.kv_bytes_per_token / 4 * kv_elem_bytes(kv))).c_str(),
                human_bytes(double(s.state_bytes_per_seq)).c_str());
    if (o->context == 0) return 0;
    const MemoryPlanOptions po{.context = o->context, .batch = o->batch, .kv = kv, .weights = wt,
                               .base_bf16 = c.torch_dtype == "bfloat16", .chunk = o->chunk};
    std::printf("\nmemory at %lld tokens x %lld sequence(s):\n", (long long)o->context,
                (long long)o->batch);
    const MemoryPlan hybrid = plan_memory(c, po);
    const MemoryPlan dense = plan_memory(all_attention_variant(c), po);
    print_plan("this model", hybrid, po);
    print_plan("all-attention model of the same shape", dense, po);
    std::printf("KV cache: %s vs %s all-attention (%.1fx smaller); total %s vs %s\n",
                human_bytes(double(hybrid.kv_bytes)).c_str(), human_bytes(double(dense.kv_bytes)).c_str(),
                hybrid.kv_bytes > 0 ? double(dense.kv_bytes) / double(hybrid.kv_bytes) : 0.0,
                human_bytes(double(hybrid.total_bytes)).c_str(),
                human_bytes(double(dense.total_bytes)).c_str());
    return 0;
  };
}

}  // namespace jamba::app
