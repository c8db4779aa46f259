// `jamba demo`: the built-in default job. Needs nothing but the binary: makes a small random
// hybrid model (preset "tiny" unless --preset), prefills a prompt and decodes through the hybrid
// cache with several sequences batched, and reports speed and memory.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "core/threads.h"
#include "model/init.h"
#include "model/model_info.h"
#include "model/presets.h"
#include "runtime/engine.h"

namespace jamba::app {

namespace {
struct DemoOpts {
  std::string preset = "tiny", dir;
  int64_t prompt = 256, gen = 64, batch = 4;
  int threads = 0;
};
}  // namespace

Runner add_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOpts>();
  app.add_option("--preset", o->preset, "model shape: tiny, moe1b, r3b, mini");
  app.add_option("--dir", o->dir, "where to write the random checkpoint (default: a temp dir)");
  app.add_option("--prompt-tokens", o->prompt, "prompt length")->check(CLI::PositiveNumber);
  app.add_option("--gen-tokens", o->gen, "tokens to generate")->check(CLI::PositiveNumber);
  app.add_option("--batch", o->batch, "sequences decoded together")->check(CLI::PositiveNumber);
  app.add_option("--threads", o->threads, "threads (0 = all cores)");
  return [o]() {
    set_num_threads(o->threads);
    namespace fs = std::filesystem;
    const std::string dir = o->dir.empty()
                                ? (fs::temp_directory_path() / ("jamba-demo-" + o->preset)).string()
                                : o->dir;
    const JambaConfig cfg = preset_config(o->preset);
    if (!fs::exists(fs::path(dir) / "model.safetensors")) {
      std::printf("writing a random '%s' checkpoint to %s ...\n", o->preset.c_str(), dir.c_str());
      init_checkpoint(cfg, dir, 0, DType::F32);
    }
    Model model = Model::load(dir);
    const ModelStats st = model_stats(model.config());
    std::printf("model: %s, %.1f M parameters, %lld layers (%lld attention, %lld MoE)\n",
                o->preset.c_str(), st.params_total / 1e6, (long long)cfg.num_hidden_layers,
                (long long)cfg.n_attention_layers(), (long long)cfg.n_moe_layers());
    Engine eng(model, {.prefix_cache = false});
    using clk = std::chrono::steady_clock;
    // One sequence: prefill speed, then decode speed.
    std::vector<int32_t> prompt;
    for (int64_t i = 0; i < o->prompt; ++i) prompt.push_back(int32_t(3 + (i * 7919) % (cfg.vocab_size - 3)));
    const int64_t id = eng.submit({.prompt = prompt, .max_new_tokens = o->gen, .sampling = {.temperature = 0.0f}, .stop_ids = {}});
    eng.run_until_idle();
    RequestResult r = eng.take_result(id);
    std::printf("1 sequence : prompt %lld tokens at %.1f tokens/s, generated %zu tokens at %.1f tokens/s\n",
                (long long)o->prompt, double(o->prompt) / r.prefill_seconds, r.tokens.size(),
                double(r.tokens.size() - 1) / r.decode_seconds);
    std::printf("first generated ids:");
    for (size_t i = 0; i < r.tokens.size() && i < 12; ++i) std::printf(" %d", r.tokens[i]);
    std::printf("\n");
    // Batched decode: B sequences advancing together.
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < o->batch; ++b) {
      std::vector<int32_t> p(prompt.begin(), prompt.begin() + std::max<int64_t>(1, o->prompt - 8 * b));
      ids.push_back(eng.submit({.prompt = p, .max_new_tokens = o->gen, .sampling = {.temperature = 0.0f}, .stop_ids = {}}));
    }
    const auto t0 = clk::now();
    eng.run_until_idle();
    const double s = std::chrono::duration<double>(clk::now() - t0).count();
    int64_t total = 0;
    for (int64_t i : ids) total += int64_t(eng.take_result(i).tokens.size());
    std::printf("%lld sequences batched: %lld tokens generated (prefill included) in %.2f s, %.1f generated tokens/s\n",
                (long long)o->batch, (long long)total, s, double(total) / s);
    std::printf("state per sequence: %.1f KiB recurrent + %.1f KiB KV per 1k tokens\n",
                st.state_bytes_per_seq / 1024.0, st.kv_bytes_per_token * 1000 / 1024.0);
    return 0;
  };
}

}  // namespace jamba::app
