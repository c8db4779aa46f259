// Subcommands of the `jamba` CLI. Each registers its options on a CLI11 subcommand and returns
// the function that runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace jamba::app {

using Runner = std::function<int()>;

// --dtype of every command that loads a model (WeightType, model/model.h, docs/QUANT.md).
inline constexpr const char* kDtypeHelp =
    "weights in memory: auto (as stored), f32, bf16, int8 (linear layers int8, per-row scales), "
    "int8-experts (MoE experts only), q4 (4-bit, groups of 32)";
inline constexpr const char* kActivationsHelp =
    "inputs of the bf16 matrices' GEMMs: auto (bf16 when the weights are bf16, as HF runs a bf16 "
    "checkpoint; fast AVX512-BF16/oneDNN path), f32 (closest to a float32 run), bf16";

// --lora of every command that generates (LoadOptions::lora, model/lora.h).
inline constexpr const char* kLoraHelp =
    "LoRA adapter directory (PEFT: adapter_config.json + adapter_model.safetensors), applied on "
    "the fly over any --dtype";

Runner add_forward(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_init(CLI::App& app);
Runner add_generate(CLI::App& app);
Runner add_chat(CLI::App& app);
Runner add_demo(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_grad(CLI::App& app);
Runner add_quantize(CLI::App& app);
Runner add_train(CLI::App& app);
Runner add_serve(CLI::App& app);
Runner add_explore(CLI::App& app);
Runner add_merge_lora(CLI::App& app);

}  // namespace jamba::app
