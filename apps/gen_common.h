// Options and helpers shared by `jamba generate` and `jamba chat`: one list of options gives
// parsing and --help; one loader gives model + tokenizer + engine.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "model/model.h"
#include "runtime/engine.h"

namespace jamba::app {

struct GenOptions {
  std::string model, tokenizer, dtype = "auto", activations = "auto", kv_dtype = "auto";
  std::string lora;  // LoRA adapter directory (PEFT layout), or ""
  int threads = 0;
  int64_t max_new_tokens = 256;
  int64_t ctx_size = 0;
  int64_t batch_chunk = 512;
  std::vector<std::string> stop;
  SamplingParams sampling{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                          .repetition_penalty = 1.0f};
  bool greedy = false;
};

void add_gen_options(CLI::App& app, GenOptions& o);

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Engine> engine;
  ChatFormat chat_format = ChatFormat::Jamba15;
  std::vector<int32_t> stop_ids;  // config eos ids + tokenizer eos ids
};
Loaded load_for_generation(const GenOptions& o);

// Streams one request's text to stdout; returns the result. `interrupted` (if given) is polled
// after every token and stops the request when it becomes true.
// `echo` (if given) is printed once the request has been accepted.
RequestResult stream_generate(Loaded& L, const GenOptions& o, std::vector<int32_t> prompt,
                              const volatile bool* interrupted, std::string* text_out,
                              const std::string* echo = nullptr);

void print_speed(const RequestResult& r);

}  // namespace jamba::app
