// Gradient clipping and AdamW exactly as torch 1.13 (../shared/golden-train/README.md), plus
// the options real training wants: weight-decay exclusion and a warmup + cosine LR schedule.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/params.h"

namespace jamba {

// torch.nn.utils.clip_grad_norm_: norm = sqrt(sum over parameters WITH a gradient of
// ||g||^2) (per-tensor norms, then their norm), c = min(1, max_norm / (norm + 1e-6)), every
// gradient multiplied by c (also when c == 1). Returns the pre-clip norm. Parameters are
// visited in `order` (HF's named_parameters order; empty = store order).
float clip_grad_norm(Grads& G, float max_norm, const std::vector<size_t>& order = {});
// The global norm alone (same definition, nothing scaled).
float grad_norm(const Grads& G, const std::vector<size_t>& order = {});

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  // Off (the golden data decays everything): when set, RMSNorm weights, biases and the
  // embedding (is_norm_bias_or_embedding) get no weight decay.
  bool exclude_norm_bias_embedding = false;
};

// torch.optim.AdamW (single-tensor path), per parameter with a gradient:
//   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// with t the parameter's own step counter. Parameters whose gradient is None are skipped
// entirely (no decay, no moment update, counter unchanged).
class AdamW {
 public:
  AdamW(const ParamStore& p, AdamWOptions o);
  // One update with learning rate `lr` (the schedule's value for this step).
  void step(ParamStore& p, const Grads& G, double lr);
  void step(ParamStore& p, const Grads& G) { step(p, G, opt_.lr); }
  const AdamWOptions& options() const { return opt_; }
  int64_t steps(size_t i) const { return t_[i]; }
  // Optimizer state of parameter i, for checkpoints: first and second moments (empty while the
  // parameter has never had a gradient) and its step counter. restore() checks sizes.
  const std::vector<float>& exp_avg(size_t i) const { return m_[i]; }
  const std::vector<float>& exp_avg_sq(size_t i) const { return v_[i]; }
  void restore(size_t i, std::vector<float> m, std::vector<float> v, int64_t steps);
  size_t size() const { return t_.size(); }

 private:
  AdamWOptions opt_;
  std::vector<std::vector<float>> m_, v_;
  std::vector<int64_t> t_;
  std::vector<uint8_t> decay_;
};

// Learning rate at step s (0-based): linear warmup from lr/warmup to lr over `warmup` steps,
// then constant ("constant") or cosine decay to min_lr_ratio * lr at step total_steps
// ("cosine").
struct LrSchedule {
  std::string kind = "constant";  // "constant" | "cosine"
  int64_t warmup = 0;
  int64_t total_steps = 0;  // cosine: the step at which the minimum is reached
  double min_lr_ratio = 0.0;
  double lr_at(double base_lr, int64_t step) const;
};

}  // namespace jamba
