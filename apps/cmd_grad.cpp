// `jamba grad`: losses and gradients of a batch, optionally N AdamW steps (docs/TRAINING.md).
#include <chrono>
#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "apps/optim_options.h"
#include "core/threads.h"
#include "train/grad_tool.h"

namespace jamba::app {

namespace {
struct GradOpts {
  std::string model, input, output;
  int threads = 0;
  GradJobOptions job;
};
}  // namespace

Runner add_grad(CLI::App& app) {
  auto o = std::make_shared<GradOpts>();
  GradJobOptions& j = o->job;
  app.add_option("--model", o->model, "checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--input", o->input, "safetensors with input_ids I64 [B,T] and labels I64 [B,T] "
                 "(HF convention, shifted inside; -100 ignored; absent = input_ids)")->required();
  app.add_option("--output", o->output, "safetensors to write")->required();
  app.add_option("--steps", j.steps, "AdamW steps on the batch after the gradient (0 = none)")
      ->check(CLI::NonNegativeNumber);
  add_optimizer_options(app, j.adam, j.clip, j.schedule, "constant", 0.0);
  app.add_option("--micro-batch", j.micro_batch,
                 "sequences per micro-batch (gradient accumulation; 0 = the whole batch)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", o->threads, "threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  return [o]() {
    set_num_threads(o->threads);
    auto t0 = std::chrono::steady_clock::now();
    ParamStore P = ParamStore::load(o->model);
    TrainBatch b = read_train_batch(o->input);
    o->job.schedule.total_steps = o->job.steps;
    auto t1 = std::chrono::steady_clock::now();
    GradJobResult r = run_grad_job(P, b, o->job);
    auto t2 = std::chrono::steady_clock::now();
    write_grad_job(o->output, P, r, o->job);
    using ms = std::chrono::duration<double, std::milli>;
    std::fprintf(stderr, "loss %.6f aux_loss %.6f total_loss %.6f", r.initial.loss,
                 r.initial.aux_loss, r.initial.total_loss);
    if (o->job.steps > 0)
      std::fprintf(stderr, "; after %lld steps: %.6f", static_cast<long long>(o->job.steps),
                   r.final_values.total_loss);
    std::fprintf(stderr, "\nloaded in %.1f ms, computed B=%lld T=%lld in %.1f ms, wrote %s\n",
                 ms(t1 - t0).count(), static_cast<long long>(b.B), static_cast<long long>(b.T),
                 ms(t2 - t1).count(), o->output.c_str());
    return 0;
  };
}

}  // namespace jamba::app
