// `jamba quantize`: writes a quantized copy of a checkpoint directory (docs/QUANT.md).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "model/quantize.h"

namespace jamba::app {

namespace {
struct QuantizeOpts {
  std::string model, out, type;
  int threads = 0;
};
}  // namespace

Runner add_quantize(CLI::App& app) {
  auto o = std::make_shared<QuantizeOpts>();
  app.add_option("--model", o->model, "checkpoint directory to quantize")->required();
  app.add_option("--out", o->out, "output checkpoint directory (created)")->required();
  app.add_option("--type", o->type,
                 "int8 (all linear layers, per-row scales), int8-experts (MoE experts only), "
                 "q4 (4-bit, groups of 32)")
      ->required();
  app.add_option("--threads", o->threads, "threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  return [o]() {
    set_num_threads(o->threads);
    const WeightType t = weight_type_from_name(o->type);
    const auto t0 = std::chrono::steady_clock::now();
    write_quantized_checkpoint(o->model, o->out, t);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto in = Checkpoint::open(o->model), out = Checkpoint::open(o->out);
    size_t bi = 0, bo = 0;
    for (const auto& [n, ti] : in.tensors()) bi += ti.nbytes;
    for (const auto& [n, ti] : out.tensors()) bo += ti.nbytes;
    std::printf("quantized %s -> %s (%s): tensor data %.1f MB -> %.1f MB in %.1f s\n",
                o->model.c_str(), o->out.c_str(), weight_type_name(t), double(bi) / 1e6,
                double(bo) / 1e6, s);
    return 0;
  };
}

}  // namespace jamba::app
