#include "apps/gen_common.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "apps/commands.h"
#include "core/error.h"
#include "core/threads.h"

namespace jamba::app {

void add_gen_options(CLI::App& app, GenOptions& o) {
  app.add_option("--model", o.model, "checkpoint directory")->required();
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer.model or directory (default: the model directory)");
  app.add_option("--threads,-t", o.threads, "threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--dtype", o.dtype, kDtypeHelp);
  app.add_option("--activations", o.activations, kActivationsHelp);
  app.add_option("--kv-dtype", o.kv_dtype, kKvDtypeHelp);
  app.add_option("--lora", o.lora, kLoraHelp);
  app.add_option("--max-new-tokens,-n", o.max_new_tokens, "tokens to generate at most")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ctx-size", o.ctx_size, "context length limit (0 = the model's)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--batch-chunk", o.batch_chunk, "prompt tokens per forward")
      ->check(CLI::PositiveNumber);
  app.add_option("--stop", o.stop, "stop string (repeatable)");
  app.add_option("--temperature,--temp", o.sampling.temperature, "0 = greedy");
  app.add_option("--top-k", o.sampling.top_k, "0 = off");
  app.add_option("--top-p", o.sampling.top_p, "1 = off");
  app.add_option("--min-p", o.sampling.min_p, "0 = off");
  app.add_option("--repeat-penalty", o.sampling.repetition_penalty, "1 = off");
  app.add_option("--frequency-penalty", o.sampling.frequency_penalty, "0 = off");
  app.add_option("--presence-penalty", o.sampling.presence_penalty, "0 = off");
  app.add_option("--repeat-last-n", o.sampling.penalty_last_n, "penalty window (-1 = all)");
  app.add_option("--seed", o.sampling.seed, "random seed (same seed, same output)");
  app.add_flag("--greedy", o.greedy, "greedy decoding (same as --temperature 0)");
}

Loaded load_for_generation(const GenOptions& o) {
  set_num_threads(o.threads);
  SamplingParams sp = o.sampling;
  if (o.greedy) sp.temperature = 0.0f;
  validate_sampling_params(sp);
  Loaded L;
  L.model = std::make_unique<Model>(Model::load(o.model, {.weights = weight_type_from_name(o.dtype),
                                                          .activations = matmul_activations_from_name(o.activations),
                                                          .kv = kv_dtype_from_name(o.kv_dtype),
                                                          .lora = o.lora}));
  const std::string tpath = o.tokenizer.empty() ? o.model : o.tokenizer;
  L.tok = std::make_unique<Tokenizer>(Tokenizer::load(tpath));
  const JambaConfig& c = L.model->config();
  if (L.tok->vocab_size() > c.vocab_size)
    fail(tpath, ": tokenizer has ", L.tok->vocab_size(), " tokens, the model's vocab_size is ",
         c.vocab_size);
  L.chat_format = detect_chat_format(L.tok->chat_template());
  for (int64_t e : c.eos_token_id) L.stop_ids.push_back(int32_t(e));
  for (int32_t e : L.tok->eos_ids())
    if (std::find(L.stop_ids.begin(), L.stop_ids.end(), e) == L.stop_ids.end())
      L.stop_ids.push_back(e);
  EngineOptions eo;
  eo.prefill_chunk = o.batch_chunk;
  eo.max_context = o.ctx_size > 0 ? o.ctx_size : c.max_position_embeddings;
  L.engine = std::make_unique<Engine>(*L.model, eo);
  return L;
}

RequestResult stream_generate(Loaded& L, const GenOptions& o, std::vector<int32_t> prompt,
                              const volatile bool* interrupted, std::string* text_out,
                              const std::string* echo) {
  GenerateRequest req;
  req.prompt = std::move(prompt);
  req.max_new_tokens = o.max_new_tokens;
  req.sampling = o.sampling;
  if (o.greedy) req.sampling.temperature = 0.0f;
  req.stop_ids = L.stop_ids;
  StreamDecoder dec(*L.tok, /*skip_special=*/true);
  // The prompt goes through the decoder first (its text discarded), so the first generated piece
  // decodes in context: with an add_dummy_prefix tokenizer its leading space is kept, as HF's
  // TextStreamer does.
  for (int32_t id : req.prompt) (void)dec.push(id);
  StopStrings stops(o.stop);
  std::string text;
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
    text += s;
  };
  bool stop_hit = false;
  L.engine->validate(req);
  if (echo) {
    std::fwrite(echo->data(), 1, echo->size(), stdout);
    std::fflush(stdout);
  }
  const int64_t id = L.engine->submit(req, [&](int64_t, int32_t tok) {
    if (L.tok->is_eos(tok) ||
        std::find(L.stop_ids.begin(), L.stop_ids.end(), tok) != L.stop_ids.end())
      return true;  // the engine ends the request; nothing to print
    auto r = stops.push(dec.push(tok));
    emit(r.text);
    if (r.stopped) stop_hit = true;
    return !r.stopped && !(interrupted && *interrupted);
  });
  L.engine->run_until_idle();
  if (!stop_hit) emit(stops.push(dec.flush()).text + stops.flush());
  RequestResult r = L.engine->take_result(id);
  if (stop_hit) r.finish = FinishReason::Stop;
  if (text_out) *text_out = text;
  return r;
}

void print_speed(const RequestResult& r) {
  const int64_t fed = r.prompt_tokens - r.reused_tokens;
  const int64_t gen = int64_t(r.tokens.size());
  std::fprintf(stderr,
               "\n[prompt: %lld tokens (%lld reused from cache) in %.3f s, %.1f tokens/s | "
               "generation: %lld tokens in %.3f s, %.1f tokens/s | finish: %s]\n",
               (long long)r.prompt_tokens, (long long)r.reused_tokens, r.prefill_seconds,
               r.prefill_seconds > 0 ? double(fed) / r.prefill_seconds : 0.0, (long long)gen,
               r.decode_seconds, r.decode_seconds > 0 && gen > 1 ? double(gen - 1) / r.decode_seconds : 0.0,
               finish_reason_name(r.finish));
}

}  // namespace jamba::app
