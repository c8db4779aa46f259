// LoRA training (src/train/lora_train, train/model_grad with a frozen base): the adapter
// gradients are the full-weight gradient projected (for W' = W + s B A: dA = s B^T dW,
// dB = s dW A^T, dW matched to ../shared/golden-train elsewhere) on every golden-train case;
// finite differences of the whole loss; activation checkpointing gives the same gradients; a
// frozen bf16 base passes the same gradients as its f32 values.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "checkpoint_util.h"
#include "model/model.h"
#include "train/grad_tool.h"
#include "train/lora_train.h"
#include "train/model_grad.h"
#include "train/trainer.h"
#include "train_test_util.h"
#include "tolerances.h"

namespace jamba {
namespace {

const std::string kGoldenTrain = std::string(JAMBA_SHARED_DIR) + "/golden-train";

LoraConfig all_targets(int64_t rank, double alpha) {
  LoraConfig lc;
  lc.rank = rank;
  lc.alpha = alpha;
  lc.targets = parse_lora_targets("all");
  return lc;
}

// Adapters with B != 0 (a trained adapter), so that both identities have content.
ParamStore random_adapters(const JambaConfig& cfg, const LoraConfig& lc, uint64_t seed) {
  ParamStore a = lora_param_store(cfg, lc, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> n(0.0f, 0.05f);
  for (size_t i = 0; i < a.size(); ++i)
    if (a.specs[i].name.find("lora_B") != std::string::npos)
      for (float& v : a.data[i]) v = n(rng);
  return a;
}

// max |a - b| / max |b|
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double md = 0, mx = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    md = std::max(md, double(std::fabs(a[i] - b[i])));
    mx = std::max(mx, double(std::fabs(b[i])));
  }
  return md / std::max(mx, 1e-30);
}

class LoraGolden : public ::testing::TestWithParam<std::string> {};

// On each golden-train case: LoRA gradients (frozen base + adapters, on the fly) equal
// s B^T dW and s dW A^T, with dW the full gradient of the merged weights W + s B A.
TEST_P(LoraGolden, AdapterGradientsAreTheProjectedFullGradient) {
  const std::string dir = kGoldenTrain + "/" + GetParam();
  const ParamStore base = ParamStore::load(dir);
  const TrainBatch b = read_train_batch(dir + "/train.safetensors");
  const LoraConfig lc = all_targets(3, 6.0);
  const float s = lc.scale();
  ParamStore ad = random_adapters(base.cfg, lc, 11);
  // LoRA: the frozen base's view with the adapters attached.
  Weights W = base.view();
  attach_lora_params(W, ad, lc);
  Grads GL(ad);
  const LossValues lv = forward_backward(TrainTarget{base.cfg, W}, b, {}, GL);
  // Full: the merged weights.
  ParamStore merged = base;
  const std::vector<LoraModule> mods = lora_modules(base.cfg, lc.targets);
  for (const LoraModule& m : mods) {
    const float* A = ad.data[ad.find(lora_a_name(m.name))].data();
    const float* B = ad.data[ad.find(lora_b_name(m.name))].data();
    float* w = merged.data[merged.find(m.name + ".weight")].data();  // [out, in] += s B A
    matmul(false, false, m.out, m.in, lc.rank, B, lc.rank, A, m.in, 1.0f, w, m.in, s);
  }
  Grads GF(merged);
  const LossValues fv = forward_backward(merged, b, {}, GF);
  EXPECT_NEAR(lv.total_loss, fv.total_loss, tol::kLoraMergedVsOnTheFly) << GetParam();
  double worst = 0;
  int checked = 0;
  for (const LoraModule& m : mods) {
    const size_t wi = merged.find(m.name + ".weight");
    if (!GF.has(wi)) continue;  // an expert without tokens: no gradient either way
    const std::vector<float>& dW = GF.get(wi);  // [out, in]
    const size_t ia = ad.find(lora_a_name(m.name)), ib = ad.find(lora_b_name(m.name));
    ASSERT_TRUE(GL.has(ia) && GL.has(ib)) << m.name;
    const int64_t r = lc.rank;
    std::vector<float> wantA(size_t(r * m.in), 0.0f), wantB(size_t(m.out * r), 0.0f);
    // dA [r, in] = s B^T [r, out] dW [out, in]; dB [out, r] = s dW [out, in] A^T [in, r]
    matmul(true, false, r, m.in, m.out, ad.data[ib].data(), r, dW.data(), m.in, 0.0f,
           wantA.data(), m.in, s);
    matmul(false, true, m.out, r, m.in, dW.data(), m.in, ad.data[ia].data(), m.in, 0.0f,
           wantB.data(), r, s);
    const double ea = rel_err(GL.get(ia), wantA), eb = rel_err(GL.get(ib), wantB);
    EXPECT_LE(ea, tol::kLoraGradIdentity) << GetParam() << " " << m.name << " lora_A";
    EXPECT_LE(eb, tol::kLoraGradIdentity) << GetParam() << " " << m.name << " lora_B";
    worst = std::max({worst, ea, eb});
    ++checked;
  }
  EXPECT_GT(checked, 0);
  // The base is frozen: the adapter store is the only thing with gradients.
  EXPECT_EQ(GL.size(), ad.size());
  std::printf("[lora] %s: %d modules, worst relative error of dA, dB vs s B^T dW, s dW A^T: %.2e\n",
              GetParam().c_str(), checked, worst);
}

INSTANTIATE_TEST_SUITE_P(TrainGoldenCases, LoraGolden,
                         ::testing::Values("train-dense", "train-moe", "train-tied"));

// Finite differences of the whole objective with respect to every adapter value sampled
// (A and B, attention and Mamba and MoE layers).
TEST(LoraTrain, FiniteDifferencesOfTheLoss) {
  testutil::OneThread one_thread;
  const JambaConfig c = testutil::tiny_train_config(false, true);
  const ParamStore base = testutil::noisy_params(c, 5, 0.4, 0.05);
  const LoraConfig lc = all_targets(2, 4.0);
  ParamStore ad = random_adapters(c, lc, 6);
  Weights W = base.view();
  attach_lora_params(W, ad, lc);
  TrainBatch b;
  b.B = 2;
  b.T = 6;
  std::mt19937 rng(3);
  for (int64_t i = 0; i < b.B * b.T; ++i) {
    b.ids.push_back(int32_t(1 + rng() % (c.vocab_size - 1)));
    b.labels.push_back(int64_t(rng() % c.vocab_size));
  }
  const TrainTarget m{c, W};
  Grads G(ad);
  forward_backward(m, b, {}, G);
  auto f = [&]() { return train_forward(m, b, {}, nullptr).objective; };
  for (size_t i = 0; i < ad.size(); ++i) {
    ASSERT_TRUE(G.has(i)) << ad.specs[i].name;
    testutil::check_grad("lora " + ad.specs[i].name, f, ad.data[i].data(), G.get(i).data(),
                         G.get(i).size(), 2e-2f, tol::kTrainFdModel, 6);
  }
}

// Activation checkpointing recomputes the same forward: bit-identical gradients and losses, for
// full training (every parameter) and for LoRA, at several group sizes.
TEST(LoraTrain, ActivationCheckpointingGivesTheSameGradients) {
  const std::string dir = kGoldenTrain + "/train-moe";
  const ParamStore P = ParamStore::load(dir);
  const TrainBatch b = read_train_batch(dir + "/train.safetensors");
  const Weights W = P.view();
  auto grads = [&](int64_t every, LossValues* v) {
    Grads G(P);
    *v = accumulate_gradients(TrainTarget{P.cfg, W}, b, 0, G, every);
    return G;
  };
  LossValues v0, v;
  const Grads g0 = grads(0, &v0);
  for (int64_t every : {1, 3, 100}) {
    const Grads g = grads(every, &v);
    EXPECT_EQ(v.total_loss, v0.total_loss) << every;
    for (size_t i = 0; i < P.size(); ++i) {
      ASSERT_EQ(g.has(i), g0.has(i)) << P.specs[i].name;
      EXPECT_EQ(g.get(i), g0.get(i)) << "every " << every << ": " << P.specs[i].name;
    }
  }
  const LoraConfig lc = all_targets(2, 4.0);
  const ParamStore ad = random_adapters(P.cfg, lc, 9);
  Weights WL = P.view();
  attach_lora_params(WL, ad, lc);
  Grads a(ad), c(ad);
  accumulate_gradients(TrainTarget{P.cfg, WL}, b, 0, a, 0);
  accumulate_gradients(TrainTarget{P.cfg, WL}, b, 0, c, 2);
  for (size_t i = 0; i < ad.size(); ++i) EXPECT_EQ(a.get(i), c.get(i)) << ad.specs[i].name;
}

// A frozen bf16 base (kernels on bf16 weights, dX through dequantized tiles) gives the
// gradients of an f32 base holding the same (bf16-rounded) values; a q4 base trains too (its
// forward rounds activations: only finite, non-zero gradients are asserted there).
TEST(LoraTrain, FrozenBf16BaseEqualsItsF32Values) {
  const std::string dir = kGoldenTrain + "/train-moe";
  ParamStore P = ParamStore::load(dir);
  for (auto& t : P.data)
    for (float& x : t) x = bf16_to_f32(f32_to_bf16(x));
  const std::string tmp = testutil::make_temp_dir("lora_bf16_base");
  write_hf_model(tmp, P, DType::BF16, "");  // the same values as a bf16 checkpoint
  const TrainBatch b = read_train_batch(dir + "/train.safetensors");
  const LoraConfig lc = all_targets(2, 4.0);
  const ParamStore ad = random_adapters(P.cfg, lc, 13);
  auto lora_grads = [&](Weights W, LossValues* v) {
    attach_lora_params(W, ad, lc);
    Grads G(ad);
    *v = forward_backward(TrainTarget{P.cfg, W}, b, {}, G);
    return G;
  };
  LossValues vf, vb, vq;
  const Grads gf = lora_grads(P.view(), &vf);
  Weights Wb = Weights::load(P.cfg, tmp, WeightType::BF16);
  ASSERT_NE(Wb.layers[0].mamba.in_proj.w16, nullptr);
  const Grads gb = lora_grads(std::move(Wb), &vb);
  EXPECT_NEAR(vb.total_loss, vf.total_loss, tol::kReassociation);
  for (size_t i = 0; i < ad.size(); ++i)
    EXPECT_LE(rel_err(gb.get(i), gf.get(i)), tol::kLoraGradIdentity) << ad.specs[i].name;
  const Grads gq = lora_grads(Weights::load(P.cfg, tmp, WeightType::Q4), &vq);
  EXPECT_TRUE(std::isfinite(vq.total_loss));
  for (size_t i = 0; i < ad.size(); ++i) {
    double mx = 0;
    for (float x : gq.get(i)) {
      ASSERT_TRUE(std::isfinite(x)) << ad.specs[i].name;
      mx = std::max(mx, double(std::fabs(x)));
    }
    EXPECT_GT(mx, 0.0) << ad.specs[i].name;
  }
}


// bf16 GEMM inputs (the default for a bf16 base; activations and dY rounded to bf16) vs f32
// inputs on the same bf16 weights: the loss and the adapter gradients move by bf16 steps only.
// (The dense case: in an MoE model one rounded router input can flip a top-k choice, which
// moves that expert's gradients by O(1) legitimately.)
TEST(LoraTrain, Bf16GemmInputsMoveGradientsByBf16Steps) {
  const std::string dir = kGoldenTrain + "/train-dense";
  ParamStore P = ParamStore::load(dir);
  const std::string tmp = testutil::make_temp_dir("lora_bf16_inputs");
  write_hf_model(tmp, P, DType::BF16, "");
  const TrainBatch b = read_train_batch(dir + "/train.safetensors");
  const LoraConfig lc = all_targets(2, 4.0);
  const ParamStore ad = random_adapters(P.cfg, lc, 17);
  auto lora_grads = [&](MatmulActivations act, LossValues* v) {
    Weights W = Weights::load(P.cfg, tmp, WeightType::BF16);
    set_matmul_activations(W, P.cfg, act);
    attach_lora_params(W, ad, lc);
    Grads G(ad);
    *v = forward_backward(TrainTarget{P.cfg, W}, b, {}, G);
    return G;
  };
  LossValues vf, va;
  const Grads gf = lora_grads(MatmulActivations::F32, &vf);
  const Grads ga = lora_grads(MatmulActivations::Bf16, &va);
  EXPECT_NEAR(va.total_loss, vf.total_loss, tol::kLoraBf16Loss);
  double worst = 0;
  for (size_t i = 0; i < ad.size(); ++i) {
    const double e = rel_err(ga.get(i), gf.get(i));
    EXPECT_LE(e, tol::kLoraBf16Grad) << ad.specs[i].name;
    worst = std::max(worst, e);
  }
  EXPECT_GT(worst, 0.0) << "bf16 inputs changed nothing: not on the bf16 path";
  std::printf("[lora] bf16 GEMM inputs: loss %.6f vs %.6f, worst gradient relative error %.2e\n",
              va.total_loss, vf.total_loss, worst);
}

}  // namespace
}  // namespace jamba
