// `jamba forward`: the exact-comparison tool (see docs/CLI.md).
#include <chrono>
#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "runtime/forward_tool.h"

namespace jamba::app {

namespace {
struct ForwardOpts {
  std::string model, input, output, dtype = "auto", activations = "auto", kv = "auto";
  bool hidden = false;
  int64_t max_new = 0;
  int64_t chunk = 0;
  int threads = 0;
};
}  // namespace

Runner add_forward(CLI::App& app) {
  auto o = std::make_shared<ForwardOpts>();
  app.add_option("--model", o->model, "checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--input", o->input, "safetensors with input_ids I64 [B,T] and optional "
                 "attention_mask I64 [B,T] (left padding)")->required();
  app.add_option("--output", o->output, "safetensors to write")->required();
  app.add_flag("--hidden-states", o->hidden, "also write hidden_states.{0..L} [B,T,D]");
  app.add_option("--max-new-tokens", o->max_new,
                 "greedy-continue each row N tokens; writes gen_ids [B,T+N], step_logits [B,N,V]")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--chunk", o->chunk, "feed the input in chunks of this many tokens (0 = one)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", o->threads, "threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--dtype", o->dtype, kDtypeHelp);
  app.add_option("--activations", o->activations, kActivationsHelp);
  app.add_option("--kv-dtype", o->kv, kKvDtypeHelp);
  return [o]() {
    set_num_threads(o->threads);
    auto t0 = std::chrono::steady_clock::now();
    Model model = Model::load(o->model, {.weights = weight_type_from_name(o->dtype),
                                           .activations = matmul_activations_from_name(o->activations),
                                           .kv = kv_dtype_from_name(o->kv)});
    TokenBatch in = read_token_batch(o->input);
    const JambaConfig& cfg = model.config();
    const int64_t B = in.B, T = in.T, V = cfg.vocab_size, D = cfg.hidden_size;
    auto t1 = std::chrono::steady_clock::now();
    SafetensorsWriter w;
    if (o->max_new > 0) {
      GreedyResult r = greedy_generate(model, in, o->max_new, o->chunk);
      w.add_i64("gen_ids", {B, T + o->max_new}, r.gen_ids.data());
      w.add_f32("step_logits", {B, o->max_new, V}, r.step_logits.data());
    } else {
      FullForwardResult r = full_forward(model, in, o->hidden, o->chunk);
      w.add_f32("logits", {B, T, V}, r.logits.data());
      for (size_t i = 0; i < r.hidden.size(); ++i)
        w.add_f32("hidden_states." + std::to_string(i), {B, T, D}, r.hidden[i].data());
    }
    auto t2 = std::chrono::steady_clock::now();
    w.write(o->output);
    using ms = std::chrono::duration<double, std::milli>;
    std::fprintf(stderr, "loaded in %.1f ms, computed B=%lld T=%lld in %.1f ms, wrote %s\n",
                 ms(t1 - t0).count(), (long long)B, (long long)T, ms(t2 - t1).count(),
                 o->output.c_str());
    return 0;
  };
}

}  // namespace jamba::app
