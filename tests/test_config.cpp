// JambaConfig: defaults of spec §1, derived layer schedule, and every validation error (the
// message must name the source, the field and the bad value).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint_util.h"
#include "core/error.h"
#include "model/config.h"

namespace jamba {
namespace {

using json = nlohmann::json;
constexpr const char* kSrc = "test/config.json";

JambaConfig parse(const json& j) { return JambaConfig::from_json_text(j.dump(), kSrc); }

// A small valid config that each error test perturbs.
json small() {
  return json{{"model_type", "jamba"},       {"vocab_size", 512},
              {"hidden_size", 64},           {"intermediate_size", 96},
              {"num_hidden_layers", 4},      {"num_attention_heads", 4},
              {"num_key_value_heads", 2},    {"num_experts", 4},
              {"num_experts_per_tok", 2},    {"attn_layer_period", 2},
              {"attn_layer_offset", 1},      {"expert_layer_period", 2},
              {"expert_layer_offset", 1},    {"mamba_d_state", 8},
              {"mamba_d_conv", 4},           {"mamba_expand", 2},
              {"mamba_dt_rank", "auto"}};
}

// Parses `j` expecting an Error mentioning every string of `parts`.
void expect_error(const json& j, const std::vector<std::string>& parts) {
  try {
    parse(j);
    ADD_FAILURE() << "no error for " << j.dump();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(kSrc), std::string::npos) << "message lacks the source: " << msg;
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks '" << p << "': " << msg;
  }
}

json with(json j, const std::string& key, const json& v) {
  j[key] = v;
  return j;
}

TEST(ConfigDefaults, EmptyObjectGivesReferenceDefaults) {
  const JambaConfig c = parse(json::object());
  EXPECT_EQ(c.vocab_size, 65536);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_DOUBLE_EQ(c.initializer_range, 0.02);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_TRUE(c.use_cache);
  EXPECT_EQ(c.num_logits_to_keep, 1);
  EXPECT_FALSE(c.output_router_logits);
  EXPECT_DOUBLE_EQ(c.router_aux_loss_coef, 0.001);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, std::vector<int64_t>{2});
  EXPECT_EQ(c.max_position_embeddings, 262144);
  EXPECT_DOUBLE_EQ(c.attention_dropout, 0.0);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.num_experts, 16);
  EXPECT_EQ(c.expert_layer_period, 2);
  EXPECT_EQ(c.expert_layer_offset, 1);
  EXPECT_EQ(c.attn_layer_period, 8);
  EXPECT_EQ(c.attn_layer_offset, 4);
  EXPECT_TRUE(c.use_mamba_kernels);
  EXPECT_EQ(c.mamba_d_state, 16);
  EXPECT_EQ(c.mamba_d_conv, 4);
  EXPECT_EQ(c.mamba_expand, 2);
  EXPECT_EQ(c.mamba_dt_rank, 256);  // "auto" -> ceil(4096 / 16)
  EXPECT_TRUE(c.mamba_conv_bias);
  EXPECT_FALSE(c.mamba_proj_bias);
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(c.d_inner(), 8192);
}

TEST(ConfigDefaults, DtRankAutoIsCeilOfHiddenOver16) {
  EXPECT_EQ(parse(with(small(), "mamba_dt_rank", "auto")).mamba_dt_rank, 4);  // 64 / 16
  json j = with(with(small(), "hidden_size", 72), "num_attention_heads", 4);
  EXPECT_EQ(parse(j).mamba_dt_rank, 5);  // ceil(72 / 16) = ceil(4.5)
  EXPECT_EQ(parse(with(j, "mamba_dt_rank", nullptr)).mamba_dt_rank, 5);
  json k = small();
  k.erase("mamba_dt_rank");
  EXPECT_EQ(parse(k).mamba_dt_rank, 4);
}

TEST(ConfigDefaults, ExplicitDtRank) {
  EXPECT_EQ(parse(with(small(), "mamba_dt_rank", 7)).mamba_dt_rank, 7);
  EXPECT_EQ(parse(with(small(), "mamba_dt_rank", 3.0)).mamba_dt_rank, 3);  // integral float
}

TEST(ConfigDefaults, EosTokenIdIntOrList) {
  EXPECT_EQ(parse(with(json::object(), "eos_token_id", 518)).eos_token_id,
            std::vector<int64_t>{518});
  EXPECT_EQ(parse(with(json::object(), "eos_token_id", {2, 518})).eos_token_id,
            (std::vector<int64_t>{2, 518}));
  EXPECT_EQ(parse(with(json::object(), "eos_token_id", nullptr)).eos_token_id,
            std::vector<int64_t>{2});
}

TEST(ConfigDefaults, KvHeadsNullMeansAttentionHeads) {
  const JambaConfig c = parse(with(small(), "num_key_value_heads", nullptr));
  EXPECT_EQ(c.num_key_value_heads, 4);
  json j = small();
  j.erase("num_key_value_heads");
  j["num_attention_heads"] = 16;
  EXPECT_EQ(parse(j).num_key_value_heads, 8);  // absent -> reference default 8
}

TEST(ConfigDefaults, NullPadTokenAndAliasesAndLegacyKeys) {
  json j = small();
  j["pad_token_id"] = nullptr;
  j.erase("num_experts");
  j["num_local_experts"] = 8;  // v5 attribute_map alias
  j["calc_logits_for_entire_prompt"] = false;
  j["mamba_inner_layernorms"] = true;
  j["n_ctx"] = 262144;
  j["auto_map"] = {{"AutoConfig", "configuration_jamba.JambaConfig"}};
  j["sliding_window"] = nullptr;
  j["architectures"] = {"JambaForCausalLM"};
  const JambaConfig c = parse(j);
  EXPECT_EQ(c.pad_token_id, -1);
  EXPECT_EQ(c.num_experts, 8);
}

TEST(ConfigDefaults, ToJsonRoundTrip) {
  json j = small();
  j["eos_token_id"] = {2, 7};
  j["tie_word_embeddings"] = true;
  j["rms_norm_eps"] = 1e-5;
  const JambaConfig a = parse(j);
  const JambaConfig b = JambaConfig::from_json_text(a.to_json_text(), "roundtrip");
  EXPECT_EQ(a.to_json_text(), b.to_json_text());
  EXPECT_EQ(b.eos_token_id, (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(b.mamba_dt_rank, 4);
  EXPECT_TRUE(b.tie_word_embeddings);
}

TEST(ConfigDefaults, GoldenConfigsParse) {
  for (const char* c : {"dense-tiny", "gqa-moe", "jamba-layout", "tied-embeddings"}) {
    const JambaConfig cfg = JambaConfig::from_file(testutil::golden_dir(c) + "/config.json");
    EXPECT_EQ(int64_t(cfg.layers.size()), cfg.num_hidden_layers) << c;
  }
}

TEST(ConfigSchedule, JambaV01Layout) {
  const JambaConfig c = parse(json::object());  // defaults are Jamba-v0.1: 8/4 and 2/1
  ASSERT_EQ(c.layers.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    const bool attn = i == 4 || i == 12 || i == 20 || i == 28;
    EXPECT_EQ(c.layers[size_t(i)].mixer, attn ? MixerKind::Attention : MixerKind::Mamba) << i;
    EXPECT_EQ(c.layers[size_t(i)].ffn, i % 2 == 1 ? FfnKind::Moe : FfnKind::Dense) << i;
  }
  EXPECT_EQ(c.n_attention_layers(), 4);
  EXPECT_EQ(c.n_moe_layers(), 16);
}

TEST(ConfigSchedule, NoAttentionLayerAtAll) {
  json j = small();
  j["num_hidden_layers"] = 3;
  j["attn_layer_period"] = 8;
  j["attn_layer_offset"] = 4;  // first attention layer would be 4
  const JambaConfig c = parse(j);
  ASSERT_EQ(c.layers.size(), 3u);
  EXPECT_EQ(c.n_attention_layers(), 0);
  for (const auto& l : c.layers) EXPECT_EQ(l.mixer, MixerKind::Mamba);
  EXPECT_EQ(c.layers[1].ffn, FfnKind::Moe);
}

TEST(ConfigSchedule, OneExpertMeansAllDense) {
  json j = with(small(), "num_experts", 1);
  j["num_experts_per_tok"] = 2;  // top-k is irrelevant without MoE layers
  const JambaConfig c = parse(j);
  EXPECT_EQ(c.n_moe_layers(), 0);
  for (const auto& l : c.layers) EXPECT_EQ(l.ffn, FfnKind::Dense);
  EXPECT_EQ(c.n_attention_layers(), 2);  // layers 1 and 3
}

TEST(ConfigErrors, OffsetNotBelowPeriod) {
  expect_error(with(small(), "attn_layer_offset", 2), {"attn_layer_offset", "(2)", "period=2"});
  expect_error(with(small(), "attn_layer_offset", -1), {"attn_layer_offset", "(-1)"});
  expect_error(with(small(), "expert_layer_offset", 5), {"expert_layer_offset", "(5)"});
  expect_error(with(small(), "expert_layer_offset", 2),
               {"expert_layer_offset", "(2)", "expert_layer_period=2"});
}

TEST(ConfigErrors, HiddenNotDivisibleByHeads) {
  expect_error(with(small(), "num_attention_heads", 6),
               {"hidden_size", "(64)", "num_attention_heads", "(6)"});
}

TEST(ConfigErrors, HeadsNotDivisibleByKvHeads) {
  json j = with(small(), "num_attention_heads", 8);
  expect_error(with(j, "num_key_value_heads", 3), {"num_key_value_heads", "(8)", "(3)"});
}

TEST(ConfigErrors, UnsupportedActivation) {
  expect_error(with(small(), "hidden_act", "gelu"), {"hidden_act", "gelu", "silu"});
}

TEST(ConfigErrors, NonPositiveSizes) {
  for (const char* f :
       {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "num_experts", "num_experts_per_tok",
        "expert_layer_period", "attn_layer_period", "mamba_d_state", "mamba_d_conv",
        "mamba_expand", "mamba_dt_rank"}) {
    SCOPED_TRACE(f);
    expect_error(with(small(), f, 0), {f, "got 0"});
    expect_error(with(small(), f, -3), {f, "got -3"});
  }
  expect_error(with(small(), "rms_norm_eps", -1e-6), {"rms_norm_eps", "got -1e-06"});
  expect_error(with(small(), "rms_norm_eps", 0), {"rms_norm_eps", "got 0"});
}

TEST(ConfigErrors, WrongJsonTypes) {
  expect_error(with(small(), "hidden_size", "big"), {"hidden_size", "\"big\"", "integer"});
  expect_error(with(small(), "hidden_size", 64.5), {"hidden_size", "got 64.5"});
  expect_error(with(small(), "vocab_size", json::array({512})), {"vocab_size", "[512]"});
  expect_error(with(small(), "tie_word_embeddings", "yes"),
               {"tie_word_embeddings", "\"yes\"", "boolean"});
  expect_error(with(small(), "rms_norm_eps", "tiny"), {"rms_norm_eps", "\"tiny\"", "number"});
  expect_error(with(small(), "hidden_act", 3), {"hidden_act", "got 3", "string"});
  expect_error(with(small(), "eos_token_id", "</s>"), {"eos_token_id", "\"</s>\""});
  expect_error(with(small(), "eos_token_id", {2, "x"}), {"eos_token_id", "[2,\"x\"]"});
  expect_error(with(small(), "mamba_dt_rank", json::object()), {"mamba_dt_rank", "{}"});
  expect_error(with(small(), "hidden_size", 1e30), {"hidden_size", "got 1e+30"});
  expect_error(with(small(), "vocab_size", json(18446744073709551615ull)),
               {"vocab_size", "18446744073709551615", "integer"});
  expect_error(with(small(), "model_type", 7), {"model_type", "is 7", "jamba"});
}

TEST(ConfigErrors, InvalidJsonText) {
  for (const std::string text : {"{\"hidden_size\": 64,", "not json", ""}) {
    try {
      JambaConfig::from_json_text(text, kSrc);
      ADD_FAILURE() << "no error for '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(kSrc), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("JSON"), std::string::npos) << e.what();
    }
  }
  expect_error(json::array({1, 2}), {"JSON object", "array"});
}

TEST(ConfigErrors, ModelTypeNotJamba) {
  expect_error(with(small(), "model_type", "mamba"), {"model_type", "mamba", "jamba"});
}

TEST(ConfigErrors, TopKExceedsExperts) {
  expect_error(with(small(), "num_experts_per_tok", 5), {"num_experts_per_tok", "(5)", "(4)"});
}

TEST(ConfigErrors, EosOutsideVocab) {
  expect_error(with(small(), "eos_token_id", {2, 518}), {"eos_token_id", "518", "[0, 512)"});
  expect_error(with(small(), "eos_token_id", 512), {"eos_token_id", "value 512", "[0, 512)"});
  expect_error(with(small(), "eos_token_id", -1), {"eos_token_id", "value -1"});
}

TEST(ConfigErrors, DtRankStringOtherThanAuto) {
  expect_error(with(small(), "mamba_dt_rank", "big"), {"mamba_dt_rank", "\"big\"", "auto"});
}

TEST(ConfigErrors, MissingFileNamesPath) {
  const std::string p = testutil::make_temp_dir("cfg") + "/config.json";
  try {
    JambaConfig::from_file(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace jamba
