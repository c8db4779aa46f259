// Inputs found by the fuzz targets (fuzz/, docs/FUZZING.md) after the known reproducers of
// ../shared/fuzz were fixed: each one here ends in a clear Error. The same inputs are kept in
// fuzz/regressions/TARGET/ and replayed by the fuzz preset's CTest.
#include <gtest/gtest.h>

#include <string>

#include <fstream>

#include "checkpoint_util.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/config.h"
#include "model/param_list.h"
#include "runtime/forward_tool.h"

namespace jamba {
namespace {

using namespace testutil;

std::string regression(const std::string& target, const std::string& name) {
  return std::string(JAMBA_SOURCE_DIR) + "/fuzz/regressions/" + target + "/" + name;
}

// fuzz_token_input: input_ids of shape [2^20, 0] hold zero bytes, yet `jamba forward` made 2^20
// sequence states before noticing there was nothing to run (20 GB on the fuzzers' tiny model).
TEST(FuzzFound, TokenInputEmptyBatchIsAnError) {
  try {
    read_token_batch(regression("token_input", "oom_empty_batch_B2p20_T0.safetensors"));
    FAIL() << "an empty batch was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no tokens"), std::string::npos) << e.what();
  }
  // [1, 0] and [0, 3] too.
  const std::string dir = make_temp_dir("fuzz_found");
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 0}, {0, 3}}) {
    SafetensorsWriter w;
    w.add_i64("input_ids", shape, nullptr);
    w.write(dir + "/empty.safetensors");
    EXPECT_THROW(read_token_batch(dir + "/empty.safetensors"), Error) << shape_str(shape);
  }
}

// Expects `f` to throw Error with every one of `parts` in its message.
template <typename F>
void expect_error(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one with '" << parts[0] << "'";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "lacks '" << p << "': " << e.what();
  }
}

// fuzz_safetensors_index: a shard name longer than NAME_MAX made std::filesystem throw its
// filesystem_error out of Checkpoint::open (not a jamba::Error, and not naming the index). Empty,
// "." and NUL-holding names are refused the same way.
TEST(FuzzFound, IndexShardNameMustBeAFileName) {
  const std::string dir = make_temp_dir("fuzz_found_index");
  const float a[2] = {1.0f, 2.0f};
  SafetensorsWriter w;
  w.add_f32("a", {2}, a);
  w.write(dir + "/model-00001-of-00001.safetensors");
  const std::string index = dir + "/model.safetensors.index.json";
  write_bytes(index, read_bytes(regression("safetensors_index",
                                           "filesystem_error_shard_name_too_long.json")));
  expect_error([&] { Checkpoint::open(dir); },
               {"model.safetensors.index.json", "'a'", "not a valid shard file name"});
  for (const std::string& bad : {std::string(""), std::string("."),
                                 std::string("model-00001-of-00001.safetensors\0x", 34)}) {
    write_json(index, {{"weight_map", {{"a", bad}}}});
    expect_error([&] { Checkpoint::open(dir); }, {"not a valid shard file name"});
  }
  write_json(index, {{"weight_map", {{"a", "model-00001-of-00001.safetensors"}}}});
  EXPECT_EQ(Checkpoint::open(dir).tensors().size(), 1u);
}

// fuzz_config: 4096 layers of 4096 one-wide experts pass every per-field bound and the parameter
// bound (67M parameters), but list 50M tensors: param_list (`jamba init`) took GBs. The number of
// expert MLPs is bounded now.
TEST(FuzzFound, ConfigExpertMlpsAreBounded) {
  const std::string path = regression("config", "oom_param_list_4096_layers_x_4096_experts.json");
  expect_error([&] { JambaConfig::from_file(path); },
               {"4096 MoE layers of 4096 experts", "expert MLPs", "maximum 65536"});
  // Released shapes stay far below: Jamba 1.5 Large, 36 MoE layers of 16 experts.
  JambaConfig c;
  c.hidden_size = 8192;
  c.num_hidden_layers = 72;
  c.num_attention_heads = 64;
  c.num_key_value_heads = 8;
  c.intermediate_size = 24576;
  c.num_experts = 16;
  c.mamba_dt_rank = 512;
  EXPECT_NO_THROW(c.validate("large"));
  // At the bound: 256 experts in each of 256 MoE layers.
  c.hidden_size = 64;
  c.num_attention_heads = 8;
  c.intermediate_size = 64;
  c.mamba_dt_rank = 4;
  c.num_hidden_layers = 256;
  c.expert_layer_period = 1;
  c.expert_layer_offset = 0;
  c.num_experts = 256;
  EXPECT_NO_THROW(c.validate("at the bound"));
  c.derive();
  const size_t n_tensors = param_list(c).size();  // 3 per expert, ~14 per layer
  EXPECT_GT(n_tensors, size_t(3 * 256 * 256));
  EXPECT_LT(n_tensors, size_t(3 * 256 * 256 + 16 * 256));
  c.num_hidden_layers = 257;
  EXPECT_THROW(c.validate("past the bound"), Error);
}


// fuzz_tokenizer_meta: tokenizer_config.json's added_tokens_decoder gave the id of the piece
// "\u2581" (the space marker, a normal piece) the text "<|extra|>", marked special: plain text
// then encoded spaces to a special token, and decode(encode(x)) printed "<|extra|>" for them.
// Renaming a piece that encoding can yield is an error now; control pieces may still be renamed.
TEST(FuzzFound, AddedTokenMayNotRenameANormalPiece) {
  const std::string d = make_temp_dir("fuzz_added_rename");
  fs::copy_file(std::string(JAMBA_SHARED_DIR) + "/tokenizers/jamba.model", d + "/tokenizer.model");
  auto write_config = [&](const std::string& text) {
    std::ofstream(d + "/tokenizer_config.json", std::ios::binary | std::ios::trunc) << text;
  };
  // 62934 is "\u2581" in the Jamba 1.5 tokenizer.
  write_config(R"({"added_tokens_decoder": {"62934": {"content": "<|extra|>", "special": true}}})");
  expect_error([&] { Tokenizer::load(d); },
               {"tokenizer_config.json", "added_tokens_decoder gives id 62934", "<|extra|>",
                "tokenizer.model"});
  // Id 0 is the control piece <|pad|>: the same text or a new one both load.
  write_config(R"({"added_tokens_decoder": {"0": {"content": "<|pad|>", "special": true}}})");
  EXPECT_NO_THROW(Tokenizer::load(d));
  write_config(R"({"added_tokens_decoder": {"0": {"content": "[PAD]", "special": true}}})");
  const Tokenizer t = Tokenizer::load(d);
  EXPECT_EQ(t.decode(t.encode("a b c", false, false)), "a b c");
}
}  // namespace
}  // namespace jamba
