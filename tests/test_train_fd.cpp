// Finite-difference checks of every backward of src/train on tiny shapes: each block alone
// (objective = sum of its outputs weighted by random numbers, accumulated in double), then the
// whole model's loss (cross-entropy with the shift and -100, pooled aux loss, tied embeddings).
#include <gtest/gtest.h>

#include "kernels/kernels.h"
#include "train/model_grad.h"
#include "train_test_util.h"
#include "tolerances.h"

namespace jamba {
namespace {

using testutil::check_grad;
using testutil::dot;
using testutil::randn;

// A block's forward (returns an extra objective term, e.g. the aux loss) and its
// forward + backward with dout.
using Fwd = std::function<double(const float* x, float* out)>;
using FwdBwd = std::function<void(const float* x, const float* dout, float* dx, Grads& G)>;

// Checks d(objective)/dx and the gradient of every parameter the backward touched.
void check_block(const std::string& name, ParamStore& P, std::vector<float> x, int64_t out_n,
                 const Fwd& fwd, const FwdBwd& fwdbwd, float h = 1e-2f,
                 double tol = tol::kTrainFd) {
  const std::vector<float> wout = randn(static_cast<size_t>(out_n), 99);
  std::vector<float> out(static_cast<size_t>(out_n));
  auto f = [&]() { return fwd(x.data(), out.data()) + dot(wout, out.data()); };
  Grads G(P);
  std::vector<float> dx(x.size());
  fwdbwd(x.data(), wout.data(), dx.data(), G);
  check_grad(name + " dx", f, x.data(), dx.data(), x.size(), h, tol);
  int touched = 0;
  for (size_t i = 0; i < P.size(); ++i) {
    if (!G.has(i)) continue;
    ++touched;
    check_grad(name + " " + P.specs[i].name, f, P.data[i].data(), G.get(i).data(),
               G.get(i).size(), h, tol);
  }
  EXPECT_GT(touched, 0) << name;
}

constexpr int64_t kB = 2, kT = 7;

// Smallest gap between the k-th and (k+1)-th router probability over all rows: a finite-
// difference step must not change any top-k decision (every evaluation is also checked).
constexpr double kMinRoutingGap = 0.03;
constexpr size_t kModelChecks = 16;  // elements checked per parameter tensor of a whole model
double min_routing_gap(const MoeTape& mc, int64_t E, int64_t k) {
  double gap = 1;
  for (size_t m = 0; m * E < mc.probs.size(); ++m) {
    std::vector<float> p(mc.probs.begin() + m * E, mc.probs.begin() + (m + 1) * E);
    std::sort(p.rbegin(), p.rend());
    gap = std::min(gap, double(p[k - 1] - p[k]));
  }
  return gap;
}
// Whether two routings select the same set of experts for every row (the order of the k slots
// does not matter).
bool same_routing(const MoeTape& a, const MoeTape& b, int64_t k) {
  if (a.sel.size() != b.sel.size()) return false;
  for (size_t r = 0; r < a.sel.size(); r += size_t(k)) {
    std::vector<int32_t> x(a.sel.begin() + r, a.sel.begin() + r + k),
        y(b.sel.begin() + r, b.sel.begin() + r + k);
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    if (x != y) return false;
  }
  return true;
}

TEST(TrainFd, RmsNorm) {
  testutil::OneThread one_thread;
  const int64_t M = 5, D = 6;
  std::vector<float> x = randn(M * D, 1), w = randn(D, 2, 0.5f), wout = randn(M * D, 3);
  for (float& v : w) v += 1.0f;
  std::vector<float> y(M * D), dx(M * D), dw(D, 0.0f);
  auto f = [&]() {
    cpu::rmsnorm({.M = M, .D = D, .x = x.data(), .ldx = D, .w = w.data(), .eps = 1e-6f,
                  .y = y.data(), .ldy = D});
    return dot(wout, y.data());
  };
  rmsnorm_bwd(M, D, x.data(), D, w.data(), 1e-6f, wout.data(), D, dx.data(), D, false, dw.data());
  check_grad("rmsnorm dx", f, x.data(), dx.data(), dx.size(), 1e-2f, tol::kTrainFd);
  check_grad("rmsnorm dw", f, w.data(), dw.data(), dw.size(), 1e-2f, tol::kTrainFd);
}

TEST(TrainFd, Mlp) {
  testutil::OneThread one_thread;
  const JambaConfig c = testutil::tiny_train_config(false, false);
  ParamStore P = testutil::noisy_params(c, 11, 0.4, 0.1);
  const Weights W = P.view();
  const MlpWeights& w = W.layers[0].mlp;
  const int64_t M = kB * kT, D = c.hidden_size;
  check_block(
      "mlp", P, randn(M * D, 12), M * D,
      [&](const float* x, float* out) {
        MlpTape mc;
        mlp_forward(w, x, M, out, &mc);
        return 0.0;
      },
      [&](const float* x, const float* dout, float* dx, Grads& G) {
        MlpTape mc;
        std::vector<float> out(M * D);
        mlp_forward(w, x, M, out.data(), &mc);
        mlp_train_backward(w, x, mc, dout, M, dx, false, G);
      });
}

void check_mamba(const std::string& name, JambaConfig c, int64_t T, double alog_shift) {
  testutil::OneThread one_thread;
  c.validate(name);
  c.derive();
  ParamStore P = testutil::noisy_params(c, 21, 0.4, 0.1);
  for (float& v : P.data[P.find("model.layers.0.mamba.A_log")]) v += float(alog_shift);
  const int64_t M = kB * T, D = c.hidden_size;
  // A view per evaluation: MambaWeights::A is computed from A_log when the view is made.
  check_block(
      name, P, randn(M * D, 22), M * D,
      [&](const float* x, float* out) {
        const Weights W = P.view();
        MambaTape mc;
        testutil::mamba_fwd(c, W.layers[0].mamba, 0, kB, T, x, out, &mc);
        return 0.0;
      },
      [&](const float* x, const float* dout, float* dx, Grads& G) {
        const Weights W = P.view();
        MambaTape mc;
        std::vector<float> out(M * D);
        testutil::mamba_fwd(c, W.layers[0].mamba, 0, kB, T, x, out.data(), &mc);
        mamba_train_backward(c, W.layers[0].mamba, kB, T, x, mc, dout, dx, G);
      });
}

TEST(TrainFd, MambaConvBias) {
  testutil::OneThread one_thread;
  check_mamba("mamba", testutil::tiny_train_config(false, false), kT, 0.0);
}

TEST(TrainFd, MambaProjBiasNoConvBias) {
  testutil::OneThread one_thread;
  JambaConfig c = testutil::tiny_train_config(false, false);
  c.mamba_conv_bias = false;
  c.mamba_proj_bias = true;
  c.mamba_d_conv = 4;
  check_mamba("mamba proj bias", c, kT, 0.0);
}

// Long memory: A = -exp(A_log) shifted towards 0 (slow decay) over 24 steps, so the reverse-time
// recurrence of the scan carries gradient across the whole sequence.
TEST(TrainFd, ScanLongMemory) {
  testutil::OneThread one_thread;
  check_mamba("scan long memory", testutil::tiny_train_config(false, false), 24, -3.0);
}

TEST(TrainFd, AttentionGqa) {
  testutil::OneThread one_thread;
  const JambaConfig c = testutil::tiny_train_config(false, false);
  ParamStore P = testutil::noisy_params(c, 31, 0.5, 0.1);
  const Weights W = P.view();
  const AttentionWeights& w = W.layers[1].attn;
  const int64_t M = kB * kT, D = c.hidden_size;
  check_block(
      "attention", P, randn(M * D, 32), M * D,
      [&](const float* x, float* out) {
        AttnTape ac;
        testutil::attention_fwd(c, w, 1, kB, kT, x, out, &ac);
        return 0.0;
      },
      [&](const float* x, const float* dout, float* dx, Grads& G) {
        AttnTape ac;
        std::vector<float> out(M * D);
        testutil::attention_fwd(c, w, 1, kB, kT, x, out.data(), &ac);
        attention_train_backward(c, w, kB, kT, x, ac, dout, dx, G);
      });
}

// MoE with its own aux loss (aux_w * E * sum_e f_e P_e over this layer's rows): routing must not
// change under the perturbations (checked on every evaluation).
TEST(TrainFd, MoeRoutingAndAux) {
  testutil::OneThread one_thread;
  const JambaConfig c = testutil::tiny_train_config(true, false);
  ParamStore P = testutil::noisy_params(c, 41, 0.4, 0.1);
  const Weights W = P.view();
  const MoeWeights& w = W.layers[1].moe;
  const int64_t M = kB * kT, D = c.hidden_size, E = c.num_experts;
  const double aux_w = 0.3;
  // Inputs whose every top-k decision is far from a tie (deterministic search over seeds).
  std::vector<float> x0;
  MoeTape base;
  double gap = 0;
  for (uint64_t seed = 42; seed < 142 && gap < kMinRoutingGap; ++seed) {
    x0 = randn(M * D, seed);
    std::vector<float> out(M * D);
    moe_forward(c, w, x0.data(), M, out.data(), &base);
    gap = min_routing_gap(base, E, c.num_experts_per_tok);
  }
  ASSERT_GE(gap, kMinRoutingGap) << "test setup: no input without a near-tie routing";
  int flips = 0;
  auto aux_of = [&](const MoeTape& mc) {
    double a = 0;
    for (int64_t e = 0; e < E; ++e) {
      double f = 0, p = 0;
      for (int32_t s : mc.sel) f += s == e;
      for (int64_t m = 0; m < M; ++m) p += mc.probs[m * E + e];
      a += (f / M) * (p / M);
    }
    return aux_w * E * a;
  };
  check_block(
      "moe", P, x0, M * D,
      [&](const float* x, float* out) {
        MoeTape mc;
        moe_forward(c, w, x, M, out, &mc);
        flips += !same_routing(mc, base, c.num_experts_per_tok);
        return aux_of(mc);
      },
      [&](const float* x, const float* dout, float* dx, Grads& G) {
        MoeTape mc;
        std::vector<float> out(M * D);
        moe_forward(c, w, x, M, out.data(), &mc);
        std::vector<float> aux_dp(E);
        for (int64_t e = 0; e < E; ++e) {
          double f = 0;
          for (int32_t s : mc.sel) f += s == e;
          aux_dp[e] = float(aux_w * E * f / M / M);
        }
        moe_train_backward(c, w, x, mc, dout, M, aux_dp, dx, G);
      },
      2e-3f);
  EXPECT_EQ(flips, 0) << "a finite-difference step changed the routing";
}

// Whole model: objective = CE (shift, -100) / N + aux_weight * pooled aux, as the backward.
// Whole model: objective = CE (shift, -100) / N + aux_weight * pooled aux, as the backward.
// An element whose finite-difference steps change a routing decision (the loss is only
// piecewise smooth) is skipped; at most a few may be.
void check_model(const std::string& name, const JambaConfig& c, uint64_t seed) {
  testutil::OneThread one_thread;
  ParamStore P = testutil::noisy_params(c, seed, 0.4, 0.05);
  TrainBatch b;
  b.B = kB;
  b.T = kT;
  std::mt19937 rng{static_cast<unsigned>(seed)};
  for (int64_t i = 0; i < kB * kT; ++i) {
    b.ids.push_back(int32_t(1 + rng() % (c.vocab_size - 1)));  // no pad token 0
    b.labels.push_back(rng() % 4 == 0 ? kIgnoreIndex : int64_t(rng() % c.vocab_size));
  }
  Tape base;
  train_forward(P, b, {}, &base);
  int flips = 0;
  auto f = [&]() {
    Tape t;
    const double obj = train_forward(P, b, {}, &t).objective;
    for (size_t l = 0; l < t.layers.size(); ++l)
      flips += !same_routing(t.layers[l].moe, base.layers[l].moe, c.num_experts_per_tok);
    return obj;
  };
  auto smooth = [&]() {
    const bool ok = flips == 0;
    flips = 0;
    return ok;
  };
  Grads G(P);
  forward_backward(P, b, {}, G);
  double worst = 0;
  int skipped = 0, checked = 0;
  for (size_t i = 0; i < P.size(); ++i) {
    ASSERT_TRUE(G.has(i)) << name << ": no gradient for " << P.specs[i].name;
    worst = std::max(worst, check_grad(name + " " + P.specs[i].name, f, P.data[i].data(),
                                       G.get(i).data(), G.get(i).size(), 2e-2f,
                                       tol::kTrainFdModel, kModelChecks, smooth, &skipped));
    checked += int(std::min<size_t>(G.get(i).size(), kModelChecks));
  }
  std::printf("[%s] worst relative finite-difference error %.2e (%d of ~%d elements skipped: "
              "routing changed)\n", name.c_str(), worst, skipped, checked);
  EXPECT_LE(skipped, checked / 10) << name;
}

TEST(TrainFdModel, MoeAuxIgnoredLabels) {
  testutil::OneThread one_thread;
  check_model("moe model", testutil::tiny_train_config(true, false), 51);
}

TEST(TrainFdModel, TiedEmbeddings) {
  testutil::OneThread one_thread;
  check_model("tied model", testutil::tiny_train_config(false, true), 61);
}

}  // namespace
}  // namespace jamba
