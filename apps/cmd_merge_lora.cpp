// `jamba merge-lora`: a base checkpoint plus a LoRA adapter -> a full checkpoint with
// W' = W + (alpha / r) * B A in every targeted linear layer (model/lora.h).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "model/weights.h"
#include "train/lora_merge.h"
#include "train/params.h"
#include "train/trainer.h"

namespace jamba::app {

namespace fs = std::filesystem;

namespace {
struct MergeLoraOpts {
  std::string model, lora, out, dtype = "auto";
  int threads = 0;
};
}  // namespace

Runner add_merge_lora(CLI::App& app) {
  auto o = std::make_shared<MergeLoraOpts>();
  app.add_option("--model", o->model, "base checkpoint directory (float: F32, BF16 or F16)")
      ->required();
  app.add_option("--lora", o->lora,
                 "LoRA adapter directory (adapter_config.json + "
                 "adapter_model.safetensors)")
      ->required();
  app.add_option("--out", o->out, "output checkpoint directory (created)")->required();
  app.add_option("--dtype", o->dtype,
                 "tensor type written: auto (bf16 if the base is, else f32), "
                 "f32 or bf16")
      ->check(CLI::IsMember({"auto", "f32", "bf16"}));
  app.add_option("--threads", o->threads, "threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  return [o]() {
    set_num_threads(o->threads);
    const auto t0 = std::chrono::steady_clock::now();
    const fs::path base(o->model);
    if (!fs::is_directory(base)) fail(o->model, ": model directory does not exist");
    std::error_code ec;
    if (fs::exists(o->out) && fs::equivalent(base, o->out, ec))
      fail(o->out, ": --out is the base model directory (write the merged model elsewhere)");
    if (stored_weight_type((base / "config.json").string()) != WeightType::Auto)
      fail((base / "config.json").string(),
           ": the base checkpoint is quantized (quantization_config); merge into its float "
           "checkpoint, then quantize the result");
    ParamStore P = ParamStore::load(o->model);
    const LoraWeights lw = LoraWeights::load(o->lora, P.cfg);
    merge_lora_into(P, lw);
    DType dt = DType::F32;
    if (o->dtype == "bf16") {
      dt = DType::BF16;
    } else if (o->dtype == "auto") {
      const Checkpoint ck = Checkpoint::open(o->model);
      const TensorInfo* e = ck.find("model.embed_tokens.weight");
      if (e && e->dtype == DType::BF16) dt = DType::BF16;
    }
    const fs::path tok = base / "tokenizer.model";
    write_hf_model(o->out, P, dt, fs::is_regular_file(tok) ? tok.string() : "");
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string targets;
    for (const std::string& n : lw.config.targets) targets += (targets.empty() ? "" : ",") + n;
    std::printf("merged %s (r %lld, alpha %g, %zu modules: %s) into %s -> %s (%s) in %.1f s\n",
                o->lora.c_str(), static_cast<long long>(lw.config.rank), lw.config.alpha,
                lw.modules.size(), targets.c_str(), o->model.c_str(), o->out.c_str(),
                dt == DType::BF16 ? "bf16" : "f32", s);
    return 0;
  };
}

}  // namespace jamba::app
