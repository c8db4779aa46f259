// The AdamW, clipping and learning-rate-schedule options of `jamba grad` and `jamba train`.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "train/optim.h"

namespace jamba::app {

// The schedule defaults are the caller's: grad follows the reference (constant), train decays.
inline void add_optimizer_options(CLI::App& app, AdamWOptions& adam, double& clip,
                                  LrSchedule& schedule, const std::string& schedule_default,
                                  double min_lr_ratio_default) {
  app.add_option("--lr", adam.lr, "peak learning rate")->default_val(1e-3);
  app.add_option("--beta1", adam.beta1, "AdamW beta1")->default_val(0.9);
  app.add_option("--beta2", adam.beta2, "AdamW beta2")->default_val(0.95);
  app.add_option("--eps", adam.eps, "AdamW eps")->default_val(1e-8);
  app.add_option("--weight-decay", adam.weight_decay, "decoupled weight decay")->default_val(0.1);
  app.add_flag("--exclude-from-decay", adam.exclude_norm_bias_embedding,
               "no weight decay on RMSNorm weights, biases and the embedding");
  app.add_option("--clip", clip, "max global gradient norm (<= 0: no clipping)")->default_val(1.0);
  app.add_option("--schedule", schedule.kind, "learning-rate schedule: constant or cosine")
      ->default_val(schedule_default)
      ->check(CLI::IsMember({"constant", "cosine"}));
  app.add_option("--warmup", schedule.warmup, "linear warmup steps")->check(CLI::NonNegativeNumber);
  app.add_option("--min-lr-ratio", schedule.min_lr_ratio, "cosine: final lr / peak lr")
      ->default_val(min_lr_ratio_default);
}

}  // namespace jamba::app
