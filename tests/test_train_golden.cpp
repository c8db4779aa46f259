// Every case of ../shared/golden-train through the code path of `jamba grad`: losses, every
// gradient, the 10-step AdamW trajectory (losses, grad norms) and every final weight, with the
// tolerances of that README (tests/tolerances.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "io/safetensors.h"
#include "train/grad_tool.h"
#include "tolerances.h"
#include "train_test_util.h"

namespace jamba {
namespace {

const std::string kGoldenTrain = std::string(JAMBA_SHARED_DIR) + "/golden-train";

struct Errors {
  double loss = 0, grad_rel = 0, grad_global_l2 = 0, traj_loss = 0, grad_norm_rel = 0,
         final_update_rel = 0, final_abs = 0, final_loss = 0;
};

float scalar(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo& t = f.get(name);
  EXPECT_TRUE(t.shape.empty()) << name << " is not 0-dimensional";
  return tensor_to_f32(t)[0];
}

// Compares a job result (in memory, or read back from the CLI's file) with the golden file and
// prints the measured errors.
// (void: gtest's ASSERT_* return from it.)
void compare(const std::string& name, const ParamStore& init, const ParamStore& fin,
             const GradJobResult& r, const SafetensorsFile& g) {
  Errors e;
  const float loss = scalar(g, "loss"), aux = scalar(g, "aux_loss"), tot = scalar(g, "total_loss");
  e.loss = std::max({std::fabs(r.initial.loss - loss), std::fabs(r.initial.aux_loss - aux),
                     std::fabs(r.initial.total_loss - tot)});
  EXPECT_LE(e.loss, tol::kTrainLoss) << name;
  EXPECT_LE(e.loss, tol::kTrainLossTarget) << name;
  // As close to exact arithmetic (the float64 run) as the float32 reference is (README).
  EXPECT_LE(std::fabs(r.initial.total_loss - scalar(g, "total_loss_f64")), tol::kTrainLossTarget)
      << name;
  // Gradients: exactly the golden's set of names, each within max|dg| / max|g_ref|.
  std::set<std::string> want;
  for (const auto& [n, t] : g.tensors())
    if (n.rfind("grad.", 0) == 0) want.insert(n.substr(5));
  double num = 0, den = 0;
  for (size_t i = 0; i < init.size(); ++i) {
    const std::string& pn = init.specs[i].name;
    ASSERT_TRUE(want.count(pn)) << name << ": golden has no grad." << pn;
    ASSERT_TRUE(r.grads.has(i)) << name << ": no gradient for " << pn;
    const std::vector<float> ref = tensor_to_f32(g.get("grad." + pn));
    const std::vector<float>& got = r.grads.get(i);
    ASSERT_EQ(ref.size(), got.size()) << pn;
    double mx = 0, md = 0;
    for (size_t j = 0; j < ref.size(); ++j) {
      mx = std::max(mx, double(std::fabs(ref[j])));
      const double d = std::fabs(double(got[j]) - ref[j]);
      md = std::isnan(d) ? INFINITY : std::max(md, d);
      num += d * d;
      den += double(ref[j]) * ref[j];
    }
    const double rel = md / std::max(mx, 1e-30);
    EXPECT_LE(rel, tol::kTrainGradRel) << name << " grad." << pn;
    e.grad_rel = std::max(e.grad_rel, rel);
    want.erase(pn);
  }
  EXPECT_TRUE(want.empty()) << name << ": golden gradients this model lacks: " << *want.begin();
  e.grad_global_l2 = std::sqrt(num / den);
  EXPECT_LE(e.grad_global_l2, tol::kTrainGradGlobalL2) << name;
  // Trajectory.
  const auto losses = tensor_to_f32(g.get("losses")), ce = tensor_to_f32(g.get("ce_losses")),
             auxs = tensor_to_f32(g.get("aux_losses")), gn = tensor_to_f32(g.get("grad_norms"));
  EXPECT_EQ(r.losses.size(), losses.size()) << name;
  for (size_t s = 0; s < std::min(losses.size(), r.losses.size()); ++s) {
    e.traj_loss = std::max({e.traj_loss, double(std::fabs(r.losses[s] - losses[s])),
                            double(std::fabs(r.ce_losses[s] - ce[s])),
                            double(std::fabs(r.aux_losses[s] - auxs[s]))});
    e.grad_norm_rel =
        std::max(e.grad_norm_rel, double(std::fabs(r.grad_norms[s] - gn[s]) / gn[s]));
  }
  EXPECT_LE(e.traj_loss, tol::kTrainLoss) << name;
  EXPECT_LE(e.traj_loss, tol::kTrainLossTarget) << name;
  EXPECT_LE(e.grad_norm_rel, tol::kTrainGradNormRel) << name;
  const auto losses64 = tensor_to_f32(g.get("losses_f64"));
  for (size_t s = 0; s < std::min(losses64.size(), r.losses.size()); ++s)
    EXPECT_LE(std::fabs(r.losses[s] - losses64[s]), tol::kTrainLossTarget) << name << " step " << s;
  // Final weights: per tensor ||delta - delta_ref|| / ||delta_ref||, and every element.
  for (size_t i = 0; i < init.size(); ++i) {
    const std::string& pn = init.specs[i].name;
    const std::vector<float> ref = tensor_to_f32(g.get("final." + pn));
    const std::vector<float>& w0 = init.data[i];
    const std::vector<float>& w1 = fin.data[i];
    double n2 = 0, d2 = 0;
    for (size_t j = 0; j < ref.size(); ++j) {
      const double dref = double(ref[j]) - w0[j], dgot = double(w1[j]) - w0[j];
      n2 += (dgot - dref) * (dgot - dref);
      d2 += dref * dref;
      e.final_abs = std::max(e.final_abs, double(std::fabs(w1[j] - ref[j])));
    }
    const double rel = std::sqrt(n2 / std::max(d2, 1e-300));
    EXPECT_LE(rel, tol::kTrainFinalUpdateRel) << name << " final." << pn;
    e.final_update_rel = std::max(e.final_update_rel, rel);
  }
  EXPECT_LE(e.final_abs, tol::kTrainFinalAbs) << name;
  e.final_loss = std::fabs(r.final_values.total_loss - scalar(g, "final_loss"));
  EXPECT_LE(e.final_loss, tol::kTrainLoss) << name;
  EXPECT_LE(e.final_loss, tol::kTrainLossTarget) << name;
  std::printf(
      "[%s] |loss| %.2e  grads: worst rel %.2e, global L2 %.2e  losses[10] %.2e  grad_norms "
      "rel %.2e  final: update rel %.2e, max abs %.2e  final_loss %.2e\n",
      name.c_str(), e.loss, e.grad_rel, e.grad_global_l2, e.traj_loss, e.grad_norm_rel,
      e.final_update_rel, e.final_abs, e.final_loss);
}

GradJobOptions golden_options(const SafetensorsFile& g) {
  GradJobOptions o;  // defaults = the README's settings: lr 1e-3, (0.9, 0.95), 1e-8, 0.1, clip 1
  o.steps = std::stoll(g.metadata().at("steps"));
  return o;
}

class TrainGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainGolden, LossGradsTrajectory) {
  testutil::OneThread one_thread;
  const std::string dir = kGoldenTrain + "/" + GetParam();
  auto g = SafetensorsFile::open(dir + "/train.safetensors");
  ParamStore P = ParamStore::load(dir);
  const ParamStore init = P;
  const TrainBatch b = read_train_batch(dir + "/train.safetensors");
  const GradJobResult r = run_grad_job(P, b, golden_options(*g));
  compare(GetParam(), init, P, r, *g);
}

INSTANTIATE_TEST_SUITE_P(TrainGoldenCases, TrainGolden,
                         ::testing::Values("train-dense", "train-moe", "train-tied"));

// The `jamba grad` binary on the MoE case: the file holds the golden's names with the golden's
// shapes (scalars 0-dimensional), and its values pass the same checks.
TEST(TrainGoldenCli, GradCommandWritesGoldenLayout) {
  const std::string dir = kGoldenTrain + "/train-moe";
  const std::string out =
      (std::filesystem::path(::testing::TempDir()) / "jamba_train_golden_cli.safetensors").string();
  const std::string cmd = std::string(JAMBA_BINARY) + " grad --model " + dir + " --input " + dir +
                          "/train.safetensors --output " + out + " --steps 10 --threads 1 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto g = SafetensorsFile::open(dir + "/train.safetensors");
  auto f = SafetensorsFile::open(out);
  for (const auto& [n, t] : g->tensors()) {
    if (n == "input_ids" || n == "labels" || n.find("_f64") != std::string::npos) continue;
    const TensorInfo* m = f->find(n);
    ASSERT_NE(m, nullptr) << "jamba grad did not write " << n;
    EXPECT_EQ(m->shape, t.shape) << n;
    EXPECT_EQ(m->dtype, t.dtype) << n;
  }
  // Rebuild a result from the file and run the value checks.
  const ParamStore init = ParamStore::load(dir);
  ParamStore fin = init;
  GradJobResult r;
  r.grads = Grads(init);
  r.initial.loss = scalar(*f, "loss");
  r.initial.aux_loss = scalar(*f, "aux_loss");
  r.initial.total_loss = scalar(*f, "total_loss");
  r.final_values.total_loss = scalar(*f, "final_loss");
  r.losses = tensor_to_f32(f->get("losses"));
  r.ce_losses = tensor_to_f32(f->get("ce_losses"));
  r.aux_losses = tensor_to_f32(f->get("aux_losses"));
  r.grad_norms = tensor_to_f32(f->get("grad_norms"));
  for (size_t i = 0; i < init.size(); ++i) {
    const std::vector<float> gv = tensor_to_f32(f->get("grad." + init.specs[i].name));
    std::copy(gv.begin(), gv.end(), r.grads.acc(i));
    fin.data[i] = tensor_to_f32(f->get("final." + init.specs[i].name));
  }
  compare("train-moe via jamba grad", init, fin, r, *g);
}

}  // namespace
}  // namespace jamba
