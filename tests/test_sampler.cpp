#include "test_util.h"
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "runtime/sampler.h"

namespace jamba {
namespace {

std::vector<int32_t> ids_of(const std::vector<Candidate>& c) {
  std::vector<int32_t> ids;
  for (const Candidate& x : c) ids.push_back(x.id);
  return ids;
}

std::vector<Candidate> with_p(const std::vector<float>& p) {
  std::vector<Candidate> c;
  for (size_t i = 0; i < p.size(); ++i) c.push_back({static_cast<int32_t>(i), 0.0f, p[i]});
  return c;
}

using testing_util::error_of;

TEST(Sampler, MakeCandidates) {
  const std::vector<float> logits = {0.5f, -1.0f, 2.0f};
  const auto c = make_candidates(logits);
  ASSERT_EQ(c.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c[i].id, i);
    EXPECT_EQ(c[i].logit, logits[i]);
  }
}

TEST(Sampler, PenaltiesExactAmounts) {
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f};
  const std::vector<int32_t> history = {0, 1, 1, 3, 0, 0};  // counts: 0 -> 3, 1 -> 2, 3 -> 1
  SamplingParams p{.repetition_penalty = 2.0f,
                   .frequency_penalty = 0.5f,
                   .presence_penalty = 0.25f,
                   .penalty_last_n = -1};
  auto c = make_candidates(logits);
  apply_penalties(c, history, p, 4);
  EXPECT_EQ(c[0].logit, 2.0f / 2 - 0.5f * 3 - 0.25f);   // -0.75
  EXPECT_EQ(c[1].logit, -1.0f * 2 - 0.5f * 2 - 0.25f);  // -3.25
  EXPECT_EQ(c[2].logit, 0.5f);                          // not in history
  EXPECT_EQ(c[3].logit, 3.0f / 2 - 0.5f - 0.25f);       // 0.75

  // Only the last 2 tokens {0, 0} count.
  p.penalty_last_n = 2;
  c = make_candidates(logits);
  apply_penalties(c, history, p, 4);
  EXPECT_EQ(c[0].logit, 1.0f - 1.0f - 0.25f);
  EXPECT_EQ(c[1].logit, -1.0f);
  EXPECT_EQ(c[3].logit, 3.0f);

  // Repetition penalty alone; penalty_last_n = 0 disables.
  c = make_candidates(logits);
  apply_penalties(c, history, {.repetition_penalty = 1.25f, .penalty_last_n = 64}, 4);
  EXPECT_EQ(c[0].logit, 2.0f / 1.25f);
  EXPECT_EQ(c[1].logit, -1.0f * 1.25f);
  c = make_candidates(logits);
  apply_penalties(c, history, {.repetition_penalty = 2.0f, .penalty_last_n = 0}, 4);
  EXPECT_EQ(c[0].logit, 2.0f);

  // A reordered / truncated list is looked up by id.
  std::vector<Candidate> sub = {{3, 3.0f, 0.0f}, {0, 2.0f, 0.0f}};
  apply_penalties(sub, history, {.presence_penalty = 1.0f, .penalty_last_n = -1}, 4);
  EXPECT_EQ(sub[0].logit, 2.0f);
  EXPECT_EQ(sub[1].logit, 1.0f);

  const std::vector<int32_t> bad = {4};
  c = make_candidates(logits);
  EXPECT_THROW(apply_penalties(c, bad, {.presence_penalty = 1.0f}, 4), Error);
}

TEST(Sampler, ArgmaxTiesGoToLowestId) {
  EXPECT_EQ(argmax(make_candidates(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f})), 1);
  EXPECT_EQ(argmax(make_candidates(std::vector<float>{-INFINITY, -5.0f})), 1);
  std::vector<Candidate> c = {{7, 1.0f, 0}, {2, 1.0f, 0}, {5, 0.0f, 0}};
  EXPECT_EQ(argmax(c), 2);
}

TEST(Sampler, TopK) {
  const std::vector<float> logits = {0.1f, 0.5f, 0.3f, 0.5f, 0.2f};
  auto c = make_candidates(logits);
  top_k(c, 3);
  EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1, 3, 2}));
  c = make_candidates(logits);
  top_k(c, 0);
  EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  c = make_candidates(logits);
  top_k(c, 10);
  EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1, 3, 2, 4, 0}));
}

TEST(Sampler, SoftmaxWithTemperature) {
  const std::vector<float> logits = {std::log(1.0f), std::log(2.0f), std::log(5.0f)};
  auto c = make_candidates(logits);
  softmax(c, 1.0f);
  EXPECT_NEAR(c[0].p, 1.0 / 8, 1e-6);
  EXPECT_NEAR(c[1].p, 2.0 / 8, 1e-6);
  EXPECT_NEAR(c[2].p, 5.0 / 8, 1e-6);
  softmax(c, 2.0f);  // p ~ sqrt(1), sqrt(2), sqrt(5)
  const double s = 1 + std::sqrt(2.0) + std::sqrt(5.0);
  EXPECT_NEAR(c[0].p, 1 / s, 1e-6);
  EXPECT_NEAR(c[1].p, std::sqrt(2.0) / s, 1e-6);
  EXPECT_NEAR(c[2].p, std::sqrt(5.0) / s, 1e-6);
  // Masked (-inf) logits get p = 0; large logits do not overflow.
  c = make_candidates(std::vector<float>{1000.0f, -INFINITY, 1000.0f});
  softmax(c, 0.5f);
  EXPECT_EQ(c[0].p, 0.5f);
  EXPECT_EQ(c[1].p, 0.0f);
  EXPECT_EQ(c[2].p, 0.5f);
  c = make_candidates(std::vector<float>{-INFINITY, -INFINITY});
  EXPECT_THROW(softmax(c, 1.0f), Error);
}

TEST(Sampler, TopP) {
  const std::vector<float> p = {0.125f, 0.5f, 0.25f, 0.125f};
  auto run = [&](float top) {
    auto c = with_p(p);
    top_p(c, top);
    return ids_of(c);
  };
  EXPECT_EQ(run(0.75f), (std::vector<int32_t>{1, 2}));  // cumulative reaches exactly 0.75
  EXPECT_EQ(run(0.7f), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(run(0.5f), (std::vector<int32_t>{1}));
  EXPECT_EQ(run(0.01f), (std::vector<int32_t>{1}));       // at least one
  EXPECT_EQ(run(0.8f), (std::vector<int32_t>{1, 2, 0}));  // tie 0/3 -> lower id first
  EXPECT_EQ(run(0.9f), (std::vector<int32_t>{1, 2, 0, 3}));
  EXPECT_EQ(run(1.0f), (std::vector<int32_t>{0, 1, 2, 3}));  // off: order untouched
}

TEST(Sampler, TopPLargeVocabulary) {
  // Uniform over 1024: the nucleus of 0.5 is exactly the 512 lowest ids.
  auto c = with_p(std::vector<float>(1024, 1.0f / 1024));
  top_p(c, 0.5f);
  ASSERT_EQ(c.size(), 512u);
  for (int i = 0; i < 512; ++i) EXPECT_EQ(c[i].id, i);
  // Random distribution: same result as a full sort.
  std::mt19937_64 g(5);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> p(5000);
  for (float& x : p) x = std::pow(u(g), 8.0f);
  auto r = with_p(p);
  renormalize(r);
  auto expect = r;
  std::sort(expect.begin(), expect.end(), [](const Candidate& a, const Candidate& b) {
    return a.p > b.p || (a.p == b.p && a.id < b.id);
  });
  double cum = 0.0;
  size_t n = 0;
  while (n < expect.size() && cum < 0.9) cum += expect[n++].p;
  expect.resize(n);
  top_p(r, 0.9f);
  EXPECT_GT(r.size(), 128u);  // exercises the growing sorted prefix
  EXPECT_EQ(ids_of(r), ids_of(expect));
}

TEST(Sampler, MinP) {
  auto c = with_p({0.5f, 0.25f, 0.125f, 0.0625f, 0.0625f});
  min_p(c, 0.25f);  // threshold 0.125
  EXPECT_EQ(ids_of(c), (std::vector<int32_t>{0, 1, 2}));
  c = with_p({0.0625f, 0.5f, 0.25f});
  min_p(c, 0.5f);  // threshold 0.25; order kept
  EXPECT_EQ(ids_of(c), (std::vector<int32_t>{1, 2}));
  c = with_p({0.1f, 0.9f});
  min_p(c, 0.0f);
  EXPECT_EQ(c.size(), 2u);
  c = with_p({0.3f, 0.3f, 0.4f});
  min_p(c, 1.0f);
  EXPECT_EQ(ids_of(c), (std::vector<int32_t>{2}));
}

TEST(Sampler, Renormalize) {
  auto c = with_p({0.5f, 0.25f});
  renormalize(c);
  EXPECT_FLOAT_EQ(c[0].p, 2.0f / 3);
  EXPECT_FLOAT_EQ(c[1].p, 1.0f / 3);
  c = with_p({0.0f});
  EXPECT_THROW(renormalize(c), Error);
}

TEST(Sampler, DrawEmpiricalFrequencies) {
  const auto c = with_p({0.2f, 0.5f, 0.3f});
  std::mt19937_64 rng(1234);
  std::vector<int> counts(3, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[draw(c, rng)];
  EXPECT_NEAR(counts[0] / double(n), 0.2, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.3, 0.02);
  // A zero-probability candidate is never drawn.
  const auto z = with_p({0.0f, 1.0f, 0.0f});
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(draw(z, rng), 1);
}

TEST(Sampler, SamplerEmpiricalFrequencies) {
  // Full chain with defaults: softmax(log p) = p.
  const std::vector<float> logits = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  Sampler s({.seed = 42});
  std::vector<int> counts(3, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.sample(logits, {})];
  EXPECT_NEAR(counts[0] / double(n), 0.2, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.3, 0.02);
}

TEST(Sampler, GreedyPicksArgmaxAfterPenalties) {
  const std::vector<float> logits = {1.0f, 5.0f, 4.0f, 5.0f};
  Sampler greedy({.temperature = 0.0f});
  EXPECT_EQ(greedy.sample(logits, {}), 1);
  const std::vector<int32_t> hist = {1};
  Sampler penalised({.temperature = 0.0f, .repetition_penalty = 2.0f});
  EXPECT_EQ(penalised.sample(logits, hist), 3);  // 5 / 2 < 5
}

std::vector<float> random_logits(int n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

TEST(Sampler, TopK1EqualsGreedy) {
  Sampler k1({.temperature = 0.8f, .top_k = 1, .seed = 7});
  Sampler greedy({.temperature = 0.0f});
  for (uint64_t i = 0; i < 20; ++i) {
    const auto logits = random_logits(1000, i);
    EXPECT_EQ(k1.sample(logits, {}), greedy.sample(logits, {}));
  }
}

TEST(Sampler, SeedDeterminism) {
  const auto logits = random_logits(200, 99);
  auto seq = [&](uint64_t seed) {
    Sampler s({.temperature = 1.5f, .top_k = 50, .top_p = 0.95f, .min_p = 0.01f, .seed = seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(logits, out));
    return out;
  };
  EXPECT_EQ(seq(1), seq(1));
  EXPECT_NE(seq(1), seq(2));
}

TEST(Sampler, ChainRestrictsSupport) {
  const std::vector<float> logits = {3.0f, 2.9f, 2.8f, -1.0f, 0.0f};
  Sampler s({.top_k = 2, .seed = 3});
  for (int i = 0; i < 500; ++i) {
    const int32_t t = s.sample(logits, {});
    EXPECT_TRUE(t == 0 || t == 1) << t;
  }
  // min_p with p proportional to {8, 4, 2, 1}/15: min_p 0.3 keeps p >= 0.3 * 8/15 -> ids 0, 1.
  const std::vector<float> l2 = {std::log(8.0f), std::log(4.0f), std::log(2.0f), std::log(1.0f)};
  Sampler m({.min_p = 0.3f, .seed = 4});
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 3000; ++i) ++counts[m.sample(l2, {})];
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(counts[0] / 3000.0, 2.0 / 3, 0.04);
}

TEST(Sampler, InvalidParamsThrow) {
  auto msg = [](SamplingParams p) { return error_of([&] { Sampler s(p); }); };
  EXPECT_NE(msg({.temperature = -0.5f}).find("temperature"), std::string::npos);
  EXPECT_NE(msg({.temperature = -0.5f}).find("-0.5"), std::string::npos);
  EXPECT_NE(msg({.top_p = 0.0f}).find("top_p"), std::string::npos);
  EXPECT_NE(msg({.top_p = 1.5f}).find("1.5"), std::string::npos);
  EXPECT_NE(msg({.min_p = -0.1f}).find("min_p"), std::string::npos);
  EXPECT_NE(msg({.min_p = 2.0f}).find("min_p"), std::string::npos);
  EXPECT_NE(msg({.repetition_penalty = 0.0f}).find("repetition_penalty"), std::string::npos);
  EXPECT_NE(msg({.top_k = -1}).find("top_k"), std::string::npos);
  EXPECT_NE(msg({.penalty_last_n = -2}).find("penalty_last_n"), std::string::npos);
  EXPECT_NE(msg({.temperature = NAN}).find("temperature"), std::string::npos);
  EXPECT_EQ(msg({}), "");
  Sampler s({});
  EXPECT_THROW(s.sample(std::vector<float>{}, {}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{0.0f, NAN}, {}), Error);
}

TEST(Sampler, StopStringsAcrossChunks) {
  StopStrings st({"</s>", "STOP"});
  auto r = st.push("Hello <");
  EXPECT_EQ(r.text, "Hello ");
  EXPECT_FALSE(r.stopped);
  r = st.push("/");
  EXPECT_EQ(r.text, "");
  r = st.push("x ST");  // "</x" can no longer start a stop string; "ST" might
  EXPECT_EQ(r.text, "</x ");
  r = st.push("O");
  EXPECT_EQ(r.text, "");
  r = st.push("P and more");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_TRUE(st.stopped());
  r = st.push("later");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(st.flush(), "");
}

TEST(Sampler, StopStringsInsideChunkAndOverlaps) {
  StopStrings a({"STOP"});
  auto r = a.push("fooSTOPbar");
  EXPECT_EQ(r.text, "foo");
  EXPECT_TRUE(r.stopped);

  StopStrings b({"abcd"});  // "ababcd": the stop starts at the second "ab"
  EXPECT_EQ(b.push("abab").text, "ab");
  r = b.push("cd");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);

  StopStrings c({"bb", "ab"});  // earliest occurrence wins
  r = c.push("xabb");
  EXPECT_EQ(r.text, "x");
  EXPECT_TRUE(r.stopped);

  StopStrings d({"STOP"});
  EXPECT_EQ(d.push("hi S").text, "hi ");
  EXPECT_EQ(d.flush(), "S");  // end of stream: no stop

  StopStrings u({"。終"});  // multi-byte stop strings hold back whole characters
  EXPECT_EQ(u.push("はい。").text, "はい");
  r = u.push("終わり");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);

  StopStrings none({});
  EXPECT_EQ(none.push("anything").text, "anything");

  EXPECT_THROW(StopStrings({"ok", ""}), Error);
}

}  // namespace
}  // namespace jamba
