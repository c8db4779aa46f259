// Batched engine, prefix cache, snapshots and session files.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "runtime/engine.h"
#include "runtime/forward_tool.h"
#include "runtime/session_file.h"
#include "tolerances.h"

namespace jamba {
namespace {

const std::string kGolden = std::string(JAMBA_SHARED_DIR) + "/golden";

// Golden decode prompts with padding stripped, and the expected generated tokens.
struct GoldenDecode {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> expected;  // 16 tokens each
  std::vector<std::vector<float>> step_logits;  // [N*V] per row
};

GoldenDecode golden_decode(const std::string& name) {
  auto g = SafetensorsFile::open(kGolden + "/" + name + "/golden.safetensors");
  const auto gen = tensor_to_i64(g->get("gen_ids"));
  const auto& shape = g->get("gen_ids").shape;
  const int64_t B = shape[0], W = shape[1];
  const int64_t N = std::stoll(g->metadata().at("max_new_tokens")), P = W - N;
  std::vector<int64_t> mask;
  if (const TensorInfo* m = g->find("gen_prompt_attention_mask")) mask = tensor_to_i64(*m);
  const auto sl = tensor_to_f32(g->get("step_logits"));
  const int64_t V = g->get("step_logits").shape[2];
  GoldenDecode d;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> p, e;
    for (int64_t t = 0; t < P; ++t)
      if (mask.empty() || mask[size_t(b * P + t)]) p.push_back(int32_t(gen[size_t(b * W + t)]));
    for (int64_t t = P; t < W; ++t) e.push_back(int32_t(gen[size_t(b * W + t)]));
    d.prompts.push_back(p);
    d.expected.push_back(e);
    d.step_logits.emplace_back(sl.begin() + b * N * V, sl.begin() + (b + 1) * N * V);
  }
  return d;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class EngineGolden : public ::testing::TestWithParam<std::string> {};

// Greedy generation through the batched engine reproduces the golden gen_ids; requests join at
// different steps (staggered submission) and the prompts are fed in small chunks.
TEST_P(EngineGolden, BatchedGreedyReproducesGoldenGenIds) {
  Model model = Model::load(kGolden + "/" + GetParam());
  GoldenDecode d = golden_decode(GetParam());
  const int64_t V = model.config().vocab_size;
  Engine eng(model, {.prefill_chunk = 7, .prefix_cache = false});
  std::vector<int64_t> ids;
  for (size_t b = 0; b < d.prompts.size(); ++b) {
    GenerateRequest r{.prompt = d.prompts[b], .max_new_tokens = 16, .stop_ids = {}, .record_logits = true};
    ids.push_back(eng.submit(r));
    eng.step();  // the next request joins a running batch
  }
  eng.run_until_idle();
  for (size_t b = 0; b < ids.size(); ++b) {
    RequestResult r = eng.take_result(ids[b]);
    EXPECT_EQ(r.tokens, d.expected[b]) << GetParam() << " row " << b;
    std::vector<float> got;
    for (const auto& l : r.step_logits) got.insert(got.end(), l.begin(), l.end());
    EXPECT_LE(max_abs_diff(got, d.step_logits[b]), tol::kGoldenStepLogits) << GetParam();
    EXPECT_EQ(int64_t(got.size()), 16 * V);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, EngineGolden,
                         ::testing::Values("dense-tiny", "gqa-moe", "long-seq", "padded-batch",
                                           "jamba-layout", "tied-embeddings"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

std::vector<int32_t> random_prompt(int64_t n, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p;
  for (int64_t i = 0; i < n; ++i) p.push_back(int32_t(3 + rng() % uint32_t(V - 3)));
  return p;
}

TEST(Engine, BatchedSamplingEqualsSequential) {
  Model model = Model::load(kGolden + "/gqa-moe");
  const int64_t V = model.config().vocab_size;
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 4; ++i)
    reqs.push_back({.prompt = random_prompt(5 + 9 * i, V, uint32_t(i)),
                    .max_new_tokens = 6 + 3 * i,
                    .sampling = {.temperature = 0.9f, .top_k = 50, .top_p = 0.95f,
                                 .seed = uint64_t(100 + i)},
                    .record_logits = true});
  std::vector<RequestResult> seq;
  for (const auto& r : reqs) {
    Engine e(model, {.prefix_cache = false});
    const int64_t id = e.submit(r);
    e.run_until_idle();
    seq.push_back(e.take_result(id));
  }
  Engine e(model, {.prefill_chunk = 16, .prefix_cache = false});
  std::vector<int64_t> ids;
  for (const auto& r : reqs) ids.push_back(e.submit(r));
  e.run_until_idle();
  for (size_t i = 0; i < reqs.size(); ++i) {
    RequestResult r = e.take_result(ids[i]);
    EXPECT_EQ(r.tokens, seq[i].tokens) << "request " << i;
    ASSERT_EQ(r.step_logits.size(), seq[i].step_logits.size());
    for (size_t s = 0; s < r.step_logits.size(); ++s)
      EXPECT_LE(max_abs_diff(r.step_logits[s], seq[i].step_logits[s]), tol::kReassociation);
  }
}

TEST(Engine, StopIdsAndLimits) {
  Model model = Model::load(kGolden + "/dense-tiny");
  GoldenDecode d = golden_decode("dense-tiny");
  Engine e(model, {.prefix_cache = false});
  // Stop at the 3rd greedy token: the result ends with it.
  GenerateRequest r{.prompt = d.prompts[0], .max_new_tokens = 16, .stop_ids = {d.expected[0][2]}};
  const int64_t id = e.submit(r);
  e.run_until_idle();
  RequestResult res = e.take_result(id);
  ASSERT_FALSE(res.tokens.empty());
  EXPECT_EQ(res.tokens.back(), d.expected[0][2]);
  EXPECT_LE(res.tokens.size(), 3u);
  EXPECT_EQ(res.finish, FinishReason::Stop);
  // Over-long prompt and bad token ids are rejected with a clear error.
  Engine small(model, {.max_context = 8});
  EXPECT_THROW(
      {
        try {
          small.submit({.prompt = random_prompt(9, 512, 1)});
        } catch (const Error& err) {
          EXPECT_NE(std::string(err.what()).find("longer than the context of 8"), std::string::npos)
              << err.what();
          throw;
        }
      },
      Error);
  EXPECT_THROW(e.submit({.prompt = {5, 512}}), Error);
  EXPECT_THROW(e.submit({.prompt = {}}), Error);
  EXPECT_THROW(e.submit({.prompt = {5}, .sampling = {.temperature = -1.0f}}), Error);
}

// Snapshot at p, continue, restore, continue again: bit-identical to the uninterrupted run.
TEST(Snapshot, RestoreThenDecodeIsBitIdentical) {
  Model model = Model::load(kGolden + "/gqa-moe");
  const int64_t V = model.config().vocab_size;
  const auto prompt = random_prompt(40, V, 7);
  auto run = [&](SequenceState& st, std::vector<int32_t> toks, int n) {
    std::vector<std::vector<float>> logits;
    ForwardOutput out;
    for (int i = 0; i < n; ++i) {
      BatchItem it{&st, toks, {}, LogitsMode::Last};
      std::vector<BatchItem> items{it};
      model.forward(items, &out);
      logits.push_back(out.logits);
      toks = {argmax(out.logits.data(), V)};
    }
    return logits;
  };
  SequenceState a = model.new_state();
  std::vector<BatchItem> pre{{&a, std::span(prompt).subspan(0, 30), {}, LogitsMode::None}};
  ForwardOutput out;
  model.forward(pre, &out);
  SequenceState snap = a.snapshot();  // at p = 30
  const std::vector<int32_t> rest(prompt.begin() + 30, prompt.end());
  auto first = run(a, rest, 12);
  // Truncate back to the snapshot (restore) and continue: identical bits.
  a = snap;
  EXPECT_EQ(a.pos, 30);
  auto again = run(a, rest, 12);
  ASSERT_EQ(first.size(), again.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i], again[i]) << "step " << i;
  // And a different continuation from the same snapshot does not disturb it.
  SequenceState b = snap;
  run(b, {9, 10, 11}, 3);
  SequenceState c = snap;
  EXPECT_EQ(run(c, rest, 12), first);
}

TEST(PrefixCache, SecondPromptReusesSharedPrefix) {
  Model model = Model::load(kGolden + "/dense-tiny");
  const int64_t V = model.config().vocab_size;
  const auto prefix = random_prompt(200, V, 3);
  auto p1 = prefix, p2 = prefix;
  for (int32_t t : random_prompt(10, V, 4)) p1.push_back(t);
  Engine e(model, {.prefill_chunk = 64});
  const int64_t a = e.submit({.prompt = prefix, .max_new_tokens = 1});
  e.run_until_idle();
  e.take_result(a);
  const int64_t b = e.submit({.prompt = p1, .max_new_tokens = 8, .record_logits = true});
  e.run_until_idle();
  RequestResult rb = e.take_result(b);
  EXPECT_EQ(rb.reused_tokens, 200);
  // The same request without the cache: identical tokens and logits within reassociation noise
  // (the cached path runs the suffix as its own chunk).
  Engine fresh(model, {.prefill_chunk = 64, .prefix_cache = false});
  const int64_t c = fresh.submit({.prompt = p1, .max_new_tokens = 8, .record_logits = true});
  fresh.run_until_idle();
  RequestResult rc = fresh.take_result(c);
  EXPECT_EQ(rc.reused_tokens, 0);
  EXPECT_EQ(rb.tokens, rc.tokens);
  for (size_t s = 0; s < rb.step_logits.size(); ++s)
    EXPECT_LE(max_abs_diff(rb.step_logits[s], rc.step_logits[s]), tol::kReassociation);
  // A whole-prompt hit samples from the stored logits without any forward.
  const int64_t d = e.submit({.prompt = prefix, .max_new_tokens = 1});
  e.run_until_idle();
  EXPECT_EQ(e.take_result(d).reused_tokens, 200);
}

class SessionFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("jamba_session_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(SessionFile, RoundTripAndContinueBitIdentical) {
  Model model = Model::load(kGolden + "/gqa-moe");
  const int64_t V = model.config().vocab_size;
  const auto prompt = random_prompt(37, V, 11);
  SequenceState st = model.new_state();
  std::vector<BatchItem> items{{&st, prompt, {}, LogitsMode::Last}};
  ForwardOutput out;
  model.forward(items, &out);
  const std::string path = (dir_ / "s.session").string();
  save_session(path, model, {prompt, st, out.logits});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));
  Session s = load_session(path, model);
  EXPECT_EQ(s.tokens, prompt);
  EXPECT_EQ(s.last_logits, out.logits);
  EXPECT_EQ(s.state.pos, st.pos);
  // Continue both: identical.
  const std::vector<int32_t> next{17};
  std::vector<BatchItem> i1{{&st, next, {}, LogitsMode::Last}}, i2{{&s.state, next, {}, LogitsMode::Last}};
  ForwardOutput o1, o2;
  model.forward(i1, &o1);
  model.forward(i2, &o2);
  EXPECT_EQ(o1.logits, o2.logits);
}

TEST_F(SessionFile, RejectsDamagedOrMismatched) {
  Model model = Model::load(kGolden + "/dense-tiny");
  Model other = Model::load(kGolden + "/tied-embeddings");
  const auto prompt = random_prompt(20, model.config().vocab_size, 5);
  SequenceState st = model.new_state();
  std::vector<BatchItem> items{{&st, prompt, {}, LogitsMode::None}};
  ForwardOutput out;
  model.forward(items, &out);
  const std::string path = (dir_ / "s.session").string();
  save_session(path, model, {prompt, st, {}});
  auto expect_error = [&](const std::string& p, const Model& m, const std::string& needle) {
    try {
      load_session(p, m);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(path, other, "another model");
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& b) {
    std::ofstream o(dir_ / name, std::ios::binary);
    o << b;
    return (dir_ / name).string();
  };
  std::string flipped = bytes;
  flipped[flipped.size() - 5] ^= 0x40;
  expect_error(write("flip", flipped), model, "checksum mismatch");
  expect_error(write("trunc", bytes.substr(0, bytes.size() - 100)), model, "past the end");
  expect_error(write("short", bytes.substr(0, 4)), model, "truncated");
  expect_error((dir_ / "missing").string(), model, "cannot open");
  // A model checkpoint is not a session.
  expect_error(kGolden + "/dense-tiny/model.safetensors", model, "not a jamba session file");
}

}  // namespace
}  // namespace jamba

namespace jamba {
namespace {

// A prompt that diverges from an earlier one inside it resumes from the last interval snapshot.
TEST(PrefixCache, IntervalSnapshotsServeDivergingPrompts) {
  Model model = Model::load(kGolden + "/dense-tiny");
  const int64_t V = model.config().vocab_size;
  auto p1 = random_prompt(300, V, 8);
  auto p2 = p1;
  p2.resize(250);
  for (int32_t t : random_prompt(20, V, 9)) p2.push_back(t);
  Engine e(model, {.prefill_chunk = 64, .snapshot_interval = 100});
  e.submit({.prompt = p1, .max_new_tokens = 1});
  e.run_until_idle();
  const int64_t b = e.submit({.prompt = p2, .max_new_tokens = 4, .record_logits = true});
  e.run_until_idle();
  RequestResult r = e.take_result(b);
  EXPECT_EQ(r.reused_tokens, 200);
  Engine fresh(model, {.prefix_cache = false});
  const int64_t c = fresh.submit({.prompt = p2, .max_new_tokens = 4, .record_logits = true});
  fresh.run_until_idle();
  RequestResult rf = fresh.take_result(c);
  EXPECT_EQ(r.tokens, rf.tokens);
  for (size_t s = 0; s < r.step_logits.size(); ++s)
    EXPECT_LE(max_abs_diff(r.step_logits[s], rf.step_logits[s]), tol::kReassociation);
}

}  // namespace
}  // namespace jamba
