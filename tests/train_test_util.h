// Helpers of the training tests: tiny configs, randomised parameter stores, and a
// central-difference gradient checker (float32 code, double-accumulated objective).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/threads.h"
#include "model/blocks.h"
#include "train/params.h"

namespace jamba::testutil {

// The training tests run tiny shapes: one thread is several times faster than a contended
// OpenMP/OpenBLAS pool. Restores the previous count (other suites of the binary share it).
struct OneThread {
  int prev = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(prev); }
};

// The model's block forwards as training runs them: B fresh sequences of T rows, saving a tape.
inline void mamba_fwd(const JambaConfig& c, const MambaWeights& w, int64_t il, int64_t B,
                      int64_t T, const float* x, float* out, MambaTape* t) {
  const FreshSequences s(c, B, T);
  mamba_forward(c, w, il, s.segments(), x, B * T, out, t);
}
inline void attention_fwd(const JambaConfig& c, const AttentionWeights& w, int64_t il, int64_t B,
                          int64_t T, const float* x, float* out, AttnTape* t) {
  const FreshSequences s(c, B, T);
  attention_forward(c, w, il, s.segments(), x, B * T, out, t);
}

// vocab 32, hidden 8, 4 layers M A M A (attention period 2 offset 1), 4 heads / 2 kv heads,
// MoE (4 experts, top-2) at odd layers when moe, Mamba N 4, R 2, K 3, expand 2.
inline JambaConfig tiny_train_config(bool moe, bool tied) {
  JambaConfig c;
  c.vocab_size = 32;
  c.hidden_size = 8;
  c.intermediate_size = 6;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.attn_layer_period = 2;
  c.attn_layer_offset = 1;
  c.num_experts = moe ? 4 : 1;
  c.num_experts_per_tok = 2;
  c.expert_layer_period = 2;
  c.expert_layer_offset = 1;
  c.mamba_d_state = 4;
  c.mamba_dt_rank = 2;
  c.mamba_d_conv = 3;
  c.mamba_expand = 2;
  c.tie_word_embeddings = tied;
  c.output_router_logits = moe;
  c.router_aux_loss_coef = 0.1;  // large, so the aux term is visible in the gradients
  c.use_mamba_kernels = false;
  c.validate("tiny_train_config");
  c.derive();
  return c;
}

// Default init plus N(0, noise) on every value (norm weights != 1, biases != 0, A_log jittered).
inline ParamStore noisy_params(const JambaConfig& c, uint64_t seed, double std, double noise) {
  ParamStore p = ParamStore::random(c, seed, std);
  std::mt19937_64 rng(seed * 7919 + 1);
  std::normal_distribution<float> n(0.0f, float(noise));
  for (auto& t : p.data)
    for (float& v : t) v += n(rng);
  return p;
}

inline std::vector<float> randn(size_t n, uint64_t seed, float std = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline double dot(const std::vector<float>& a, const float* b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

// Central differences of f with respect to *v at steps h, h/2, h/4 (using the actually
// representable perturbed values), Richardson-extrapolated twice: truncation error O(h^6), so a
// large h keeps the float32 rounding noise of f (divided by h) small.
inline double fd_derivative(const std::function<double()>& f, float* v, float h) {
  const float s = *v;
  auto central = [&](float hh) {
    const float a = s + hh, b = s - hh;
    *v = a;
    const double fa = f();
    *v = b;
    const double fb = f();
    *v = s;
    return (fa - fb) / (double(a) - double(b));
  };
  const double d1 = central(h), d2 = central(h / 2), d4 = central(h / 4);
  const double r1 = (4.0 * d2 - d1) / 3.0, r2 = (4.0 * d4 - d2) / 3.0;
  return (16.0 * r2 - r1) / 15.0;
}

// Checks `analytic` (n values) against finite differences of f over the values at `v`:
// max |fd - analytic| / max |analytic| <= tol. Checks at most `max_checks` evenly spaced
// elements (0 = all). `smooth`, when given, is asked after each element's evaluations whether
// f stayed on one smooth piece (e.g. no MoE routing decision changed); elements where it did
// not are skipped and counted in *skipped. Returns the relative error.
inline double check_grad(const std::string& what, const std::function<double()>& f, float* v,
                         const float* analytic, size_t n, float h, double tol,
                         size_t max_checks = 0, const std::function<bool()>& smooth = nullptr,
                         int* skipped = nullptr) {
  double scale = 0;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, double(std::fabs(analytic[i])));
  EXPECT_GT(scale, 0.0) << what << ": the analytic gradient is identically zero";
  const size_t stride = (max_checks == 0 || n <= max_checks) ? 1 : (n + max_checks - 1) / max_checks;
  double worst = 0;
  size_t worst_i = 0;
  double worst_fd = 0;
  for (size_t i = 0; i < n; i += stride) {
    const double fd = fd_derivative(f, v + i, h);
    if (smooth && !smooth()) {
      if (skipped) ++*skipped;
      continue;
    }
    const double e = std::fabs(fd - analytic[i]);
    if (!(e <= worst)) {
      worst = std::isnan(e) ? INFINITY : e;
      worst_i = i;
      worst_fd = fd;
    }
  }
  const double rel = worst / std::max(scale, 1e-30);
  EXPECT_LE(rel, tol) << what << ": element " << worst_i << " analytic " << analytic[worst_i]
                      << " finite difference " << worst_fd << " (max |analytic| " << scale << ")";
  return rel;
}

}  // namespace jamba::testutil
