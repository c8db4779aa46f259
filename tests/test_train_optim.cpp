// Optimizer, clipping, schedules, gradient accumulation and the model-level gradient rules
// (None gradients of unused experts, padding_idx, parameter order) of src/train.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "runtime/forward_tool.h"
#include "train/grad_tool.h"
#include "train_test_util.h"
#include "tolerances.h"

namespace jamba {
namespace {

using testutil::randn;

TrainBatch random_batch(const JambaConfig& c, int64_t B, int64_t T, uint64_t seed) {
  TrainBatch b;
  b.B = B;
  b.T = T;
  std::mt19937 rng{static_cast<unsigned>(seed)};
  for (int64_t i = 0; i < B * T; ++i) {
    b.ids.push_back(int32_t(1 + rng() % (c.vocab_size - 1)));
    b.labels.push_back(rng() % 5 == 0 ? kIgnoreIndex : int64_t(b.ids.back()));
  }
  return b;
}

TEST(TrainOptim, AdamWMatchesFormulaAndSkipsNone) {
  const JambaConfig c = testutil::tiny_train_config(false, false);
  ParamStore P = testutil::noisy_params(c, 1, 0.3, 0.1);
  const ParamStore P0 = P;
  AdamWOptions o;
  o.lr = 1e-2;
  AdamW opt(P, o);
  Grads G(P);
  const size_t none = P.find("model.layers.0.mamba.D");
  std::vector<std::vector<double>> w(P.size()), m(P.size()), v(P.size());
  for (size_t i = 0; i < P.size(); ++i) {
    w[i].assign(P.data[i].begin(), P.data[i].end());
    m[i].assign(w[i].size(), 0.0);
    v[i].assign(w[i].size(), 0.0);
  }
  for (int t = 1; t <= 3; ++t) {
    G.clear();
    for (size_t i = 0; i < P.size(); ++i) {
      if (i == none) continue;
      const std::vector<float> g = randn(P.data[i].size(), 100 * t + i, 0.1f);
      std::copy(g.begin(), g.end(), G.acc(i));
      for (size_t j = 0; j < g.size(); ++j) {  // the README's formula in double
        w[i][j] *= 1 - o.lr * o.weight_decay;
        m[i][j] = o.beta1 * m[i][j] + (1 - o.beta1) * g[j];
        v[i][j] = o.beta2 * v[i][j] + (1 - o.beta2) * double(g[j]) * g[j];
        w[i][j] -= o.lr / (1 - std::pow(o.beta1, t)) * m[i][j] /
                   (std::sqrt(v[i][j]) / std::sqrt(1 - std::pow(o.beta2, t)) + o.eps);
      }
    }
    opt.step(P, G);
  }
  double worst = 0;
  for (size_t i = 0; i < P.size(); ++i)
    for (size_t j = 0; j < w[i].size(); ++j)
      worst = std::max(worst, std::fabs(double(P.data[i][j]) - w[i][j]));
  EXPECT_LE(worst, tol::kAdamWFormula);
  EXPECT_EQ(P.data[none], P0.data[none]) << "a parameter without gradient must not move";
  EXPECT_EQ(opt.steps(none), 0);
  EXPECT_EQ(opt.steps(0), 3);
}

TEST(TrainOptim, ExcludeFromDecay) {
  const JambaConfig c = testutil::tiny_train_config(false, false);
  for (bool exclude : {false, true}) {
    ParamStore P = testutil::noisy_params(c, 2, 0.3, 0.1);
    const ParamStore P0 = P;
    AdamWOptions o;
    o.exclude_norm_bias_embedding = exclude;
    AdamW opt(P, o);
    Grads G(P);
    for (size_t i = 0; i < P.size(); ++i) G.acc(i);  // zero gradients: only the decay acts
    opt.step(P, G);
    for (size_t i = 0; i < P.size(); ++i) {
      const bool excluded = exclude && is_norm_bias_or_embedding(P.specs[i].name);
      const float f = float(1.0 - o.lr * o.weight_decay);
      EXPECT_EQ(P.data[i][0], excluded ? P0.data[i][0] : P0.data[i][0] * f) << P.specs[i].name;
    }
  }
  EXPECT_TRUE(is_norm_bias_or_embedding("model.layers.0.mamba.dt_layernorm.weight"));
  EXPECT_TRUE(is_norm_bias_or_embedding("model.layers.0.mamba.conv1d.bias"));
  EXPECT_TRUE(is_norm_bias_or_embedding("model.embed_tokens.weight"));
  EXPECT_FALSE(is_norm_bias_or_embedding("model.layers.0.mamba.A_log"));
  EXPECT_FALSE(is_norm_bias_or_embedding("lm_head.weight"));
}

TEST(TrainOptim, ClipGradNorm) {
  const JambaConfig c = testutil::tiny_train_config(false, false);
  const ParamStore P = ParamStore::zeros(c);
  Grads G(P);
  G.acc(0)[0] = 3.0f;
  G.acc(1)[1] = 4.0f;  // norm 5; parameter 2.. are None and ignored
  Grads G2 = G;
  EXPECT_FLOAT_EQ(clip_grad_norm(G, 1.0f), 5.0f);
  EXPECT_FLOAT_EQ(G.get(0)[0], 3.0f * (1.0f / (5.0f + 1e-6f)));
  EXPECT_FALSE(G.has(2));
  EXPECT_FLOAT_EQ(clip_grad_norm(G2, 10.0f), 5.0f);  // below the limit: c = 1
  EXPECT_EQ(G2.get(1)[1], 4.0f);
}

TEST(TrainOptim, LrSchedule) {
  LrSchedule s;
  EXPECT_DOUBLE_EQ(s.lr_at(1e-3, 7), 1e-3);
  s.warmup = 4;
  EXPECT_DOUBLE_EQ(s.lr_at(1e-3, 0), 0.25e-3);
  EXPECT_DOUBLE_EQ(s.lr_at(1e-3, 3), 1e-3);
  s.kind = "cosine";
  s.total_steps = 14;
  s.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(s.lr_at(1e-3, 4), 1e-3);
  EXPECT_NEAR(s.lr_at(1e-3, 9), 0.55e-3, 1e-12);  // halfway
  EXPECT_NEAR(s.lr_at(1e-3, 14), 0.1e-3, 1e-12);
}

// Micro-batches with the CE divided by the global target count give the full batch's
// gradient (dense model: no aux term).
TEST(TrainModel, GradientAccumulationMatchesFullBatch) {
  const JambaConfig c = testutil::tiny_train_config(false, false);
  const ParamStore P = testutil::noisy_params(c, 3, 0.3, 0.1);
  const TrainBatch b = random_batch(c, 4, 9, 4);
  Grads full(P), acc(P);
  const LossValues a = accumulate_gradients(P, b, 0, full);
  const LossValues m = accumulate_gradients(P, b, 1, acc);
  EXPECT_NEAR(a.loss, m.loss, 1e-6);
  EXPECT_EQ(a.n_targets, m.n_targets);
  for (size_t i = 0; i < P.size(); ++i) {
    float mx = 0, md = 0;
    for (size_t j = 0; j < full.get(i).size(); ++j) {
      mx = std::max(mx, std::fabs(full.get(i)[j]));
      md = std::max(md, std::fabs(full.get(i)[j] - acc.get(i)[j]));
    }
    EXPECT_LE(md, tol::kReassociation * std::max(mx, 1.0f)) << P.specs[i].name;
  }
}

// An expert that receives no token has no gradient (None) and AdamW leaves it alone.
TEST(TrainModel, ExpertWithoutTokenHasNoGradient) {
  const JambaConfig c = testutil::tiny_train_config(true, false);
  ParamStore P = testutil::noisy_params(c, 5, 0.3, 0.1);
  const Weights W = P.view();
  const MoeWeights& w = W.layers[1].moe;
  const std::vector<float> x = randn(c.hidden_size, 6);  // one token: k = 2 of 4 experts
  std::vector<float> out(c.hidden_size), dx(c.hidden_size);
  MoeTape mc;
  moe_forward(c, w, x.data(), 1, out.data(), &mc);
  Grads G(P);
  moe_train_backward(c, w, x.data(), mc, randn(c.hidden_size, 7).data(), 1, {}, dx.data(), G);
  int with = 0;
  for (int64_t e = 0; e < c.num_experts; ++e) {
    const bool used = !mc.rows[e].empty();
    with += used;
    const std::string ex = "model.layers.1.feed_forward.experts." + std::to_string(e);
    EXPECT_EQ(G.has(P.find(ex + ".gate_proj.weight")), used);
    EXPECT_EQ(G.has(P.find(ex + ".down_proj.weight")), used);
  }
  EXPECT_EQ(with, c.num_experts_per_tok);
  EXPECT_TRUE(G.has(P.find("model.layers.1.feed_forward.router.weight")));
  const ParamStore P0 = P;
  AdamW opt(P, {});
  opt.step(P, G);
  for (int64_t e = 0; e < c.num_experts; ++e) {
    const size_t i = P.find("model.layers.1.feed_forward.experts." + std::to_string(e) +
                            ".up_proj.weight");
    EXPECT_EQ(P.data[i] == P0.data[i], mc.rows[e].empty());
    EXPECT_EQ(opt.steps(i), mc.rows[e].empty() ? 0 : 1);
  }
}

// torch nn.Embedding(padding_idx=pad): the lookup sends nothing to row pad_token_id; tied, the
// row still gets its LM-head gradient.
TEST(TrainModel, PaddingIdxRowGetsNoLookupGradient) {
  for (bool tied : {false, true}) {
    const JambaConfig c = testutil::tiny_train_config(false, tied);
    const ParamStore P = testutil::noisy_params(c, 8, 0.3, 0.1);
    TrainBatch b = random_batch(c, 2, 8, 9);
    b.ids[3] = b.ids[10] = int32_t(c.pad_token_id);
    Grads G(P);
    forward_backward(P, b, {}, G);
    const float* g0 = G.get(P.find("model.embed_tokens.weight")).data();  // row 0
    float mx = 0;
    for (int64_t d = 0; d < c.hidden_size; ++d) mx = std::max(mx, std::fabs(g0[d]));
    if (tied)
      EXPECT_GT(mx, 0.0f);
    else
      EXPECT_EQ(mx, 0.0f);
  }
}

TEST(TrainModel, HfParameterOrderIsAPermutation) {
  for (bool moe : {false, true}) {
    JambaConfig c = testutil::tiny_train_config(moe, !moe);
    c.mamba_proj_bias = true;
    const ParamStore P = ParamStore::zeros(c);
    std::vector<std::string> a = hf_parameter_order(c), b;
    for (const auto& s : P.specs) b.push_back(s.name);
    EXPECT_EQ(a.size(), b.size());
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b);
  }
}

// The training forward and the inference forward (src/model) agree on the golden MoE case:
// cross-entropy recomputed from Model::forward's logits.
TEST(TrainModel, ForwardMatchesInferenceModel) {
  testutil::OneThread one_thread;
  const std::string dir = std::string(JAMBA_SHARED_DIR) + "/golden-train/train-moe";
  const ParamStore P = ParamStore::load(dir);
  const TrainBatch b = read_train_batch(dir + "/train.safetensors");
  const LossValues v = train_forward(P, b, {}, nullptr);
  const Model model = Model::load(dir);
  TokenBatch tb;
  tb.B = b.B;
  tb.T = b.T;
  tb.ids = b.ids;
  const FullForwardResult r = full_forward(model, tb, false);
  const int64_t V = P.cfg.vocab_size;
  double ce = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < b.B; ++i)
    for (int64_t t = 0; t + 1 < b.T; ++t) {
      const int64_t l = b.labels[i * b.T + t + 1];
      if (l == kIgnoreIndex) continue;
      const float* z = r.logits.data() + (i * b.T + t) * V;
      const float mx = *std::max_element(z, z + V);
      double s = 0;
      for (int64_t k = 0; k < V; ++k) s += std::exp(double(z[k]) - mx);
      ce += mx + std::log(s) - z[l];
      ++n;
    }
  EXPECT_EQ(n, v.n_targets);
  EXPECT_NEAR(ce / n, v.loss, tol::kTrainLossTarget);
}

}  // namespace
}  // namespace jamba
