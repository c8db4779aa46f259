// jamba: command-line entry point.
#include <cstdio>
#include <cstdlib>
#include <map>

#include "apps/commands.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/threads.h"

int main(int argc, char** argv) {
  jamba::restart_with_runtime_settings(argv);
  jamba::keep_freed_memory_for_reuse();
  CLI::App app{"jamba.cpp: run, serve and train Jamba hybrid Mamba-Transformer models"};
  app.require_subcommand(1);
  std::map<CLI::App*, jamba::app::Runner> runners;
  auto reg = [&](const char* name, const char* help, auto add) {
    CLI::App* sub = app.add_subcommand(name, help);
    runners[sub] = add(*sub);
  };
  reg("forward", "exact forward / greedy decode on input_ids from a safetensors file",
      jamba::app::add_forward);
  reg("info", "layer schedule, parameter counts and memory of a checkpoint", jamba::app::add_info);
  reg("generate", "generate text from a prompt, streamed, with speed", jamba::app::add_generate);
  reg("chat", "interactive chat with history", jamba::app::add_chat);
  reg("demo", "built-in default job: random small model, prefill + batched decode speed",
      jamba::app::add_demo);
  reg("bench", "throughput: pp / tg / depth / batch over threads and weight types",
      jamba::app::add_bench);
  reg("tokenize", "show the token ids and pieces of a text", jamba::app::add_tokenize);
  reg("init", "write a randomly initialised checkpoint (HF layout)", jamba::app::add_init);
  reg("grad", "losses, gradients and AdamW steps on a batch (training check)", jamba::app::add_grad);
  reg("quantize", "write an int8 / int8-experts / q4 quantized copy of a checkpoint",
      jamba::app::add_quantize);
  reg("merge-lora", "merge a LoRA adapter into a base checkpoint (writes a full checkpoint)",
      jamba::app::add_merge_lora);
  reg("serve", "OpenAI-compatible HTTP server: continuous batching, prefix-state cache, chat page",
      jamba::app::add_serve);
  reg("train", "train a model on a text corpus (checkpoints, resume, MPI data parallel)",
      jamba::app::add_train);
  reg("explore", "attention:Mamba layouts of one shape: speed, memory to 256K, perplexity",
      jamba::app::add_explore);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const jamba::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
