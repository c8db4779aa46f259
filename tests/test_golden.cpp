// Every case of ../shared/golden through the code path of `jamba forward`.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "io/safetensors.h"
#include "runtime/forward_tool.h"
#include "test_util.h"
#include "tolerances.h"

namespace jamba {
namespace {

const std::string kGolden = std::string(JAMBA_SHARED_DIR) + "/golden";

std::vector<std::string> cases() {
  return {"dense-tiny", "gqa-moe", "long-seq", "padded-batch", "jamba-layout", "tied-embeddings"};
}

struct Case {
  std::string dir;
  Model model;
  std::shared_ptr<SafetensorsFile> golden;
  TokenBatch in;
};

Case load_case(const std::string& name) {
  const std::string dir = kGolden + "/" + name;
  auto g = SafetensorsFile::open(dir + "/golden.safetensors");
  Case c{dir, Model::load(dir), g, read_token_batch(dir + "/golden.safetensors")};
  return c;
}

// max |a - b| over positions where mask (if any) is 1; rows of width `w`.
float max_diff(const std::vector<float>& a, const std::vector<float>& b, int64_t w,
               const std::vector<uint8_t>& mask) {
  return testing_util::max_row_diff(a, b, w, mask);
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, LogitsAndHiddenStates) {
  Case c = load_case(GetParam());
  const JambaConfig& cfg = c.model.config();
  FullForwardResult r = full_forward(c.model, c.in, /*hidden=*/true);
  const auto want = tensor_to_f32(c.golden->get("logits"));
  const float dl = max_diff(r.logits, want, cfg.vocab_size, c.in.mask);
  EXPECT_LE(dl, tol::kGoldenLogits) << GetParam();
  EXPECT_LE(dl, tol::kGoldenTarget) << GetParam();
  ASSERT_EQ(int64_t(r.hidden.size()), cfg.num_hidden_layers + 1);
  for (int64_t i = 0; i <= cfg.num_hidden_layers; ++i) {
    const auto hw = tensor_to_f32(c.golden->get("hidden_states." + std::to_string(i)));
    const float dh = max_diff(r.hidden[size_t(i)], hw, cfg.hidden_size, c.in.mask);
    EXPECT_LE(dh, tol::kGoldenHidden) << GetParam() << " hidden_states." << i;
    EXPECT_LE(dh, tol::kGoldenTarget) << GetParam() << " hidden_states." << i;
  }
  std::printf("[golden] %s: max |logits - ref| = %.3g\n", GetParam().c_str(), dl);
}

// The decode prompt of a golden case: P = gen_ids width - 16 tokens (the last P columns of
// input_ids for padded cases, the first P otherwise).
TokenBatch decode_prompt(const Case& c, int64_t* n_new) {
  const TensorInfo& g = c.golden->get("gen_ids");
  const int64_t N = std::stoll(c.golden->metadata().at("max_new_tokens"));
  const int64_t P = g.shape[1] - N;
  TokenBatch p;
  p.B = c.in.B;
  p.T = P;
  const int64_t off = c.in.mask.empty() ? 0 : c.in.T - P;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t t = 0; t < P; ++t) {
      p.ids.push_back(c.in.ids[size_t(b * c.in.T + off + t)]);
      if (!c.in.mask.empty()) p.mask.push_back(c.in.mask[size_t(b * c.in.T + off + t)]);
    }
  if (const TensorInfo* gm = c.golden->find("gen_prompt_attention_mask")) {
    auto m = tensor_to_i64(*gm);
    for (size_t i = 0; i < m.size(); ++i) EXPECT_EQ(int64_t(p.mask[i]), m[i]);
  }
  *n_new = N;
  return p;
}

TEST_P(Golden, GreedyDecodeThroughCache) {
  Case c = load_case(GetParam());
  int64_t N = 0;
  TokenBatch p = decode_prompt(c, &N);
  GreedyResult r = greedy_generate(c.model, p, N);
  EXPECT_EQ(r.gen_ids, tensor_to_i64(c.golden->get("gen_ids"))) << GetParam();
  const float d = max_diff(r.step_logits, tensor_to_f32(c.golden->get("step_logits")),
                           c.model.config().vocab_size, {});
  EXPECT_LE(d, tol::kGoldenStepLogits) << GetParam();
  EXPECT_LE(d, tol::kGoldenTarget) << GetParam();
}

TEST_P(Golden, ChunkedPrefillEqualsOnePrefill) {
  Case c = load_case(GetParam());
  const int64_t V = c.model.config().vocab_size;
  FullForwardResult one = full_forward(c.model, c.in, false);
  for (int64_t chunk : {1, 7, 64}) {
    if (GetParam() == "long-seq" && chunk == 1) continue;  // 1024 single steps: covered by decode
    FullForwardResult ch = full_forward(c.model, c.in, false, chunk);
    EXPECT_LE(max_diff(ch.logits, one.logits, V, c.in.mask), tol::kReassociation)
        << GetParam() << " chunk " << chunk;
  }
}

class GoldenBatched : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenBatched, BatchedEqualsOneAtATime) {
  Case c = load_case(GetParam());
  ASSERT_GE(c.in.B, 2);
  const int64_t V = c.model.config().vocab_size;
  FullForwardResult all = full_forward(c.model, c.in, false);
  for (int64_t b = 0; b < c.in.B; ++b) {
    // Row b alone, with its padding stripped (the real tokens only).
    TokenBatch one;
    one.B = 1;
    for (int64_t t = 0; t < c.in.T; ++t)
      if (c.in.mask.empty() || c.in.mask[size_t(b * c.in.T + t)]) {
        one.ids.push_back(c.in.ids[size_t(b * c.in.T + t)]);
      }
    one.T = int64_t(one.ids.size());
    FullForwardResult r = full_forward(c.model, one, false);
    const int64_t pad = c.in.T - one.T;
    std::vector<float> row(all.logits.begin() + (b * c.in.T + pad) * V,
                           all.logits.begin() + (b + 1) * c.in.T * V);
    EXPECT_LE(max_diff(r.logits, row, V, {}), tol::kReassociation) << GetParam() << " row " << b;
  }
}

// The cases with more than one row (padded-batch has left padding).
INSTANTIATE_TEST_SUITE_P(Cases, GoldenBatched,
                         ::testing::Values("dense-tiny", "padded-batch", "tied-embeddings"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

INSTANTIATE_TEST_SUITE_P(Cases, Golden, ::testing::ValuesIn(cases()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace jamba
