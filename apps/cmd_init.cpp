// `jamba init`: a randomly initialised checkpoint of any shape, in the HF layout.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "model/init.h"
#include "model/presets.h"

namespace jamba::app {

namespace {
struct InitOpts {
  std::string config, out, dtype = "f32", tokenizer;
  uint64_t seed = 0;
  int threads = 0;
};
void show_progress(size_t done, size_t total) {
  static int last = -1;
  const int pct = int(100.0 * double(done) / double(total));
  if (pct == last) return;
  last = pct;
  std::fprintf(stderr, "\r  writing weights: %5.1f%% (%.2f / %.2f GB)", 100.0 * double(done) / double(total),
               double(done) / 1e9, double(total) / 1e9);
  if (done == total) std::fprintf(stderr, "\n");
}
}  // namespace

Runner add_init(CLI::App& app) {
  auto o = std::make_shared<InitOpts>();
  app.add_option("--config", o->config,
                 "config.json to instantiate, or a preset name: r3b, moe1b, mini, tiny")
      ->required();
  app.add_option("--out", o->out, "output directory")->required();
  app.add_option("--seed", o->seed, "random seed");
  app.add_option("--dtype", o->dtype, "weight dtype")->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--tokenizer", o->tokenizer, "tokenizer.model to copy into the checkpoint");
  app.add_option("--threads", o->threads, "threads (0 = all cores)");
  return [o]() {
    set_num_threads(o->threads);
    JambaConfig cfg = is_preset(o->config) ? preset_config(o->config)
                                           : JambaConfig::from_file(o->config);
    init_checkpoint(cfg, o->out, o->seed, o->dtype == "f32" ? DType::F32 : DType::BF16,
                    show_progress);
    if (!o->tokenizer.empty()) {
      namespace fs = std::filesystem;
      if (!fs::is_regular_file(o->tokenizer)) fail(o->tokenizer, ": tokenizer file not found");
      fs::copy_file(o->tokenizer, fs::path(o->out) / "tokenizer.model",
                    fs::copy_options::overwrite_existing);
    }
    std::printf("wrote %s (config.json, model.safetensors%s)\n", o->out.c_str(),
                o->tokenizer.empty() ? "" : ", tokenizer.model");
    return 0;
  };
}

}  // namespace jamba::app
