// The trained demo model shipped in models/kjv (docs/TRAINING.md): a standard HF checkpoint in
// bf16 of a real hybrid, that has learnt its corpus (held-out verses are far more likely than
// the same words shuffled), and `jamba demo` runs on it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "checkpoint_util.h"
#include "cli_util.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "runtime/forward_tool.h"
#include "tolerances.h"
#include "train/params.h"

namespace jamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kDemo = std::string(JAMBA_SOURCE_DIR) + "/models/kjv";

// Mean next-token cross-entropy (nats) of `text` as one line of the training stream (no BOS,
// EOS after it).
double mean_ce(const Model& m, const Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids = tok.encode(text, false, false);
  ids.push_back(tok.eos_ids().front());
  const int64_t T = int64_t(ids.size()), V = m.config().vocab_size;
  const FullForwardResult r = full_forward(m, {1, T, ids, {}}, false);
  double ce = 0;
  for (int64_t t = 0; t + 1 < T; ++t) {
    const float* row = r.logits.data() + t * V;
    double mx = row[0], s = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(row[v]) - mx);
    ce += mx + std::log(s) - row[ids[size_t(t + 1)]];
  }
  return ce / double(T - 1);
}

TEST(DemoModel, IsAStandardHfHybridCheckpoint) {
  ASSERT_TRUE(fs::is_directory(kDemo)) << kDemo;
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors",
                        "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(kDemo) / f)) << f;
  const json c = testutil::read_json(kDemo + "/config.json");
  EXPECT_EQ(c["architectures"], json::array({"JambaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "jamba");
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
  const JambaConfig cfg = JambaConfig::from_file(kDemo + "/config.json");
  EXPECT_GT(cfg.n_attention_layers(), 0);
  EXPECT_LT(cfg.n_attention_layers(), cfg.num_hidden_layers);  // Mamba layers too
  EXPECT_GT(cfg.n_moe_layers(), 0);
  auto f = SafetensorsFile::open(kDemo + "/model.safetensors");
  std::set<std::string> names;
  for (const auto& [n, t] : f->tensors()) {
    names.insert(n);
    EXPECT_EQ(t.dtype, DType::BF16) << n;
  }
  const std::vector<std::string> order = hf_parameter_order(cfg);
  EXPECT_EQ(names, std::set<std::string>(order.begin(), order.end()));
  const Tokenizer tok = Tokenizer::load(kDemo);
  EXPECT_EQ(tok.vocab_size(), cfg.vocab_size);
}

TEST(DemoModel, HeldOutVersesAreFarMoreLikelyThanShuffledWords) {
  const Model m = Model::load(kDemo);
  const Tokenizer tok = Tokenizer::load(kDemo);
  // The last verses of Revelation: in the held-out tail of the training stream.
  const std::vector<std::string> verses = {
      "And God shall wipe away all tears from their eyes; and there shall be no more death, "
      "neither sorrow, nor crying, neither shall there be any more pain: for the former things "
      "are passed away.",
      "He which testifieth these things saith, Surely I come quickly. Amen. Even so, come, Lord "
      "Jesus.",
      "The grace of our Lord Jesus Christ be with you all. Amen."};
  double real = 0, shuffled = 0;
  for (const std::string& v : verses) {
    std::vector<std::string> words;
    size_t p = 0;
    while (p < v.size()) {
      size_t e = v.find(' ', p);
      if (e == std::string::npos) e = v.size();
      words.push_back(v.substr(p, e - p));
      p = e + 1;
    }
    // A fixed derangement-like shuffle: every other word from the end first.
    std::vector<std::string> mixed;
    for (size_t i = words.size(); i-- > 0;)
      if (i % 2 == 1) mixed.push_back(words[i]);
    for (size_t i = 0; i < words.size(); ++i)
      if (i % 2 == 0) mixed.push_back(words[i]);
    std::string s;
    for (const auto& w : mixed) s += (s.empty() ? "" : " ") + w;
    const double r = mean_ce(m, tok, v), x = mean_ce(m, tok, s);
    std::printf("[demo model] %.3f nats/token on \"%s\", %.3f shuffled\n", r, v.substr(0, 40).c_str(), x);
    real += r / double(verses.size());
    shuffled += x / double(verses.size());
  }
  EXPECT_LT(real, tol::kDemoHeldOutCe);
  EXPECT_GT(shuffled - real, tol::kDemoShuffleGap);
}

TEST(DemoModel, DemoCommandRunsOnIt) {
  const testutil::RunResult r =
      testutil::run("demo --prompt-tokens 16 --gen-tokens 4 --batch 2 --threads 1");
  ASSERT_EQ(r.rc, 0) << testutil::describe(r);
  EXPECT_NE(r.out.find("In the beginning"), std::string::npos) << testutil::describe(r);
  EXPECT_NE(r.out.find("4 Mamba, 2 attention, 3 MoE"), std::string::npos) << testutil::describe(r);
  EXPECT_NE(r.out.find("speed, 2 sequences batched"), std::string::npos) << testutil::describe(r);
}

}  // namespace
}  // namespace jamba
