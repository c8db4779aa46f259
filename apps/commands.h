// Subcommands of the `jamba` CLI. Each registers its options on a CLI11 subcommand and returns
// the function that runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace jamba::app {

using Runner = std::function<int()>;

Runner add_forward(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_init(CLI::App& app);
Runner add_generate(CLI::App& app);
Runner add_chat(CLI::App& app);
Runner add_demo(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_grad(CLI::App& app);

}  // namespace jamba::app
