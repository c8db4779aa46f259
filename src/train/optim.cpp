#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace jamba {

namespace {
std::vector<size_t> order_or_all(const Grads& G, const std::vector<size_t>& order) {
  if (!order.empty()) return order;
  std::vector<size_t> o(G.size());
  std::iota(o.begin(), o.end(), 0);
  return o;
}
}  // namespace

float grad_norm(const Grads& G, const std::vector<size_t>& order) {
  // torch: norm(stack([norm(g) for g in grads])); per-tensor norms are float32 tensors.
  double total = 0.0;
  for (size_t i : order_or_all(G, order)) {
    if (!G.has(i)) continue;
    double s = 0.0;
    for (float v : G.get(i)) s += double(v) * double(v);
    const float n = float(std::sqrt(s));
    total += double(n) * double(n);
  }
  return float(std::sqrt(total));
}

float clip_grad_norm(Grads& G, float max_norm, const std::vector<size_t>& order) {
  const float norm = grad_norm(G, order);
  const float coef = std::min(1.0f, max_norm / (norm + 1e-6f));
  for (size_t i = 0; i < G.size(); ++i)
    if (G.has(i))
      for (float& v : G.mut(i)) v *= coef;
  return norm;
}

AdamW::AdamW(const ParamStore& p, AdamWOptions o)
    : opt_(o), m_(p.size()), v_(p.size()), t_(p.size(), 0), decay_(p.size(), 1) {
  for (size_t i = 0; i < p.size(); ++i)
    if (o.exclude_norm_bias_embedding && is_norm_bias_or_embedding(p.specs[i].name))
      decay_[i] = 0;
}

void AdamW::step(ParamStore& p, const Grads& G, double lr) {
  JAMBA_CHECK(G.size() == p.size(), "[adamw] ", G.size(), " gradients for ", p.size(),
              " parameters");
  const float b1 = float(opt_.beta1), b2 = float(opt_.beta2);
  const float one_b1 = float(1.0 - opt_.beta1), one_b2 = float(1.0 - opt_.beta2);
  const float eps = float(opt_.eps);
  for (size_t i = 0; i < p.size(); ++i) {
    if (!G.has(i)) continue;  // grad is None: skipped entirely
    const std::vector<float>& g = G.get(i);
    std::vector<float>& w = p.data[i];
    if (m_[i].empty()) {
      m_[i].assign(w.size(), 0.0f);  // [numel]
      v_[i].assign(w.size(), 0.0f);  // [numel]
    }
    const int64_t t = ++t_[i];
    // Python-side scalars are doubles, applied to float32 tensors as float32.
    const float decay = float(1.0 - lr * (decay_[i] ? opt_.weight_decay : 0.0));
    const double bc1 = 1.0 - std::pow(opt_.beta1, double(t));
    const double bc2 = 1.0 - std::pow(opt_.beta2, double(t));
    const float step_size = float(lr / bc1);
    const float bc2_sqrt = float(std::sqrt(bc2));
    float* m = m_[i].data();
    float* v = v_[i].data();
    for (size_t j = 0; j < w.size(); ++j) {
      if (decay_[i]) w[j] *= decay;
      m[j] = m[j] * b1 + g[j] * one_b1;
      v[j] = v[j] * b2 + one_b2 * g[j] * g[j];
      const float denom = std::sqrt(v[j]) / bc2_sqrt + eps;
      w[j] += -step_size * (m[j] / denom);
    }
  }
}

void AdamW::restore(size_t i, std::vector<float> m, std::vector<float> v, int64_t steps) {
  JAMBA_CHECK(i < t_.size(), "[adamw] state for parameter ", i, " of ", t_.size());
  JAMBA_CHECK(m.size() == v.size(), "[adamw] exp_avg has ", m.size(), " values, exp_avg_sq ",
              v.size());
  JAMBA_CHECK(steps >= 0, "[adamw] negative step counter ", steps);
  m_[i] = std::move(m);
  v_[i] = std::move(v);
  t_[i] = steps;
}

double LrSchedule::lr_at(double base, int64_t step) const {
  if (warmup > 0 && step < warmup) return base * double(step + 1) / double(warmup);
  if (kind == "constant") return base;
  JAMBA_CHECK(kind == "cosine", "[lr] unknown schedule '", kind, "' (constant or cosine)");
  const int64_t span = std::max<int64_t>(1, total_steps - warmup);
  const double prog = std::clamp(double(step - warmup) / double(span), 0.0, 1.0);
  const double lo = base * min_lr_ratio;
  return lo + (base - lo) * 0.5 * (1.0 + std::cos(M_PI * prog));
}

}  // namespace jamba
