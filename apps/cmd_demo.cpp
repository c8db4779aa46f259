// `jamba demo`: the built-in default job. By default it loads the small Jamba trained on the
// King James Bible that ships in models/kjv (a hybrid: Mamba, attention and MoE layers; see
// docs/TRAINING.md), streams a few continuations of verse openings, then measures prefill,
// decode and batched decode speed with it. `--preset` instead makes a random model of that shape
// (no text, speed only).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "apps/gen_common.h"
#include "core/error.h"
#include "core/threads.h"
#include "model/init.h"
#include "model/model_info.h"
#include "model/presets.h"
#include "runtime/engine.h"

#ifndef JAMBA_DEMO_MODEL
#define JAMBA_DEMO_MODEL "models/kjv"
#endif

namespace jamba::app {

namespace {
struct DemoOpts {
  std::string model = JAMBA_DEMO_MODEL, preset, dir;
  int64_t prompt = 256, gen = 64, batch = 4;
  int threads = 0;
  uint64_t seed = 1;
};

// Prefill, decode and batched decode speed of `model` on synthetic prompts.
void speed_test(const Model& model, const DemoOpts& o) {
  const JambaConfig& cfg = model.config();
  const ModelStats st = model_stats(cfg);
  Engine eng(model, {.prefix_cache = false});
  using clk = std::chrono::steady_clock;
  std::vector<int32_t> prompt;
  for (int64_t i = 0; i < o.prompt; ++i) prompt.push_back(int32_t(3 + (i * 7919) % (cfg.vocab_size - 3)));
  const int64_t id = eng.submit({.prompt = prompt, .max_new_tokens = o.gen, .sampling = {.temperature = 0.0f}, .stop_ids = {}});
  eng.run_until_idle();
  RequestResult r = eng.take_result(id);
  std::printf("speed, 1 sequence : prompt %lld tokens at %.1f tokens/s, generated %zu tokens at %.1f tokens/s\n",
              (long long)o.prompt, double(o.prompt) / r.prefill_seconds, r.tokens.size(),
              double(r.tokens.size() - 1) / r.decode_seconds);
  std::vector<int64_t> ids;
  for (int64_t b = 0; b < o.batch; ++b) {
    std::vector<int32_t> p(prompt.begin(), prompt.begin() + std::max<int64_t>(1, o.prompt - 8 * b));
    ids.push_back(eng.submit({.prompt = p, .max_new_tokens = o.gen, .sampling = {.temperature = 0.0f}, .stop_ids = {}}));
  }
  const auto t0 = clk::now();
  eng.run_until_idle();
  const double s = std::chrono::duration<double>(clk::now() - t0).count();
  int64_t total = 0;
  for (int64_t i : ids) total += int64_t(eng.take_result(i).tokens.size());
  std::printf("speed, %lld sequences batched: %lld tokens generated (prefill included) in %.2f s, %.1f generated tokens/s\n",
              (long long)o.batch, (long long)total, s, double(total) / s);
  std::printf("state per sequence: %.1f KiB recurrent + %.1f KiB KV per 1k tokens\n",
              st.state_bytes_per_seq / 1024.0, st.kv_bytes_per_token * 1000 / 1024.0);
}

void describe(const JambaConfig& cfg, const std::string& name) {
  const ModelStats st = model_stats(cfg);
  std::printf("model: %s, %.2f M parameters, %lld layers (%lld Mamba, %lld attention, %lld MoE)\n",
              name.c_str(), st.params_total / 1e6, (long long)cfg.num_hidden_layers,
              (long long)(cfg.num_hidden_layers - cfg.n_attention_layers()),
              (long long)cfg.n_attention_layers(), (long long)cfg.n_moe_layers());
}
}  // namespace

Runner add_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOpts>();
  app.add_option("--model", o->model, "model to demonstrate (default: the shipped KJV model)");
  app.add_option("--preset", o->preset, "instead: a random model of this shape (tiny, moe1b, r3b, mini), speed only");
  app.add_option("--dir", o->dir, "with --preset: where to write the random checkpoint (default: a temp dir)");
  app.add_option("--prompt-tokens", o->prompt, "speed test: prompt length")->check(CLI::PositiveNumber);
  app.add_option("--gen-tokens", o->gen, "speed test: tokens to generate")->check(CLI::PositiveNumber);
  app.add_option("--batch", o->batch, "speed test: sequences decoded together")->check(CLI::PositiveNumber);
  app.add_option("--seed", o->seed, "sampling seed");
  app.add_option("--threads", o->threads, "threads (0 = all cores)");
  return [o]() {
    set_num_threads(o->threads);
    namespace fs = std::filesystem;
    if (!o->preset.empty()) {
      const std::string dir = o->dir.empty()
                                  ? (fs::temp_directory_path() / ("jamba-demo-" + o->preset)).string()
                                  : o->dir;
      const JambaConfig cfg = preset_config(o->preset);
      if (!fs::exists(fs::path(dir) / "model.safetensors")) {
        std::printf("writing a random '%s' checkpoint to %s ...\n", o->preset.c_str(), dir.c_str());
        init_checkpoint(cfg, dir, 0, DType::F32);
      }
      Model model = Model::load(dir);
      describe(cfg, o->preset + " (random weights)");
      speed_test(model, *o);
      return 0;
    }
    if (!fs::is_regular_file(fs::path(o->model) / "config.json"))
      fail("[demo] no model at ", o->model, " (the repository's models/kjv; or give --model DIR, or --preset NAME)");
    GenOptions g;
    g.model = o->model;
    g.threads = o->threads;
    g.max_new_tokens = 60;
    g.sampling.temperature = 0.7f;
    g.sampling.top_k = 40;
    g.sampling.top_p = 0.95f;
    g.sampling.min_p = 0.05f;
    g.sampling.repetition_penalty = 1.1f;
    g.sampling.seed = o->seed;
    Loaded L = load_for_generation(g);
    describe(L.model->config(), o->model);
    std::printf("continuing verse openings (sampled, seed %llu; each stops at the end of its verse):\n\n",
                static_cast<unsigned long long>(o->seed));
    for (const char* p : {"In the beginning", "And Jesus answered and said unto them,",
                          "The LORD is my shepherd;", "And it came to pass"}) {
      const std::string echo = std::string("  ") + p;
      std::vector<int32_t> ids = L.tok->encode(p, L.tok->add_bos_default());
      RequestResult r = stream_generate(L, g, ids, nullptr, nullptr, &echo);
      std::printf("\n");
      std::fflush(stdout);
      std::fprintf(stderr, "    [%zu tokens, %.1f tokens/s]\n", r.tokens.size(),
                   double(r.tokens.size()) / std::max(1e-9, r.decode_seconds + r.prefill_seconds));
    }
    std::printf("\n");
    speed_test(*L.model, *o);
    return 0;
  };
}

}  // namespace jamba::app
