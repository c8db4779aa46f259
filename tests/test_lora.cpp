// LoRA adapters (model/lora.h): target lists, module shapes, the PEFT files (save -> load round
// trip, damaged adapters), the adapter applied on the fly against the same adapter merged into
// the weights (train/lora_merge.h), over f32 / bf16 / int8 / q4 bases, and the CLI
// (`generate --lora`, `merge-lora`).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "checkpoint_util.h"
#include "cli_util.h"
#include "model/lora.h"
#include "model/param_list.h"
#include "runtime/forward_tool.h"
#include "test_util.h"
#include "tolerances.h"
#include "train/lora_merge.h"
#include "train/params.h"
#include "train/trainer.h"

namespace jamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace testutil;
using testing_util::error_of;

JambaConfig golden_config(const std::string& c) {
  return JambaConfig::from_file(golden_dir(c) + "/config.json");
}

bool has_all(const std::string& msg, const std::vector<std::string>& parts) {
  for (const auto& p : parts)
    if (msg.find(p) == std::string::npos) return false;
  return true;
}

#define EXPECT_ERROR_WITH(stmt, ...)                                                           \
  do {                                                                                         \
    const std::string msg_ = error_of([&] { stmt; });                                          \
    EXPECT_FALSE(msg_.empty()) << #stmt << " did not throw";                                   \
    const std::vector<std::string> parts_ = {__VA_ARGS__};                                     \
    for (const auto& p_ : parts_)                                                              \
      EXPECT_NE(msg_.find(p_), std::string::npos) << "message lacks '" << p_ << "': " << msg_; \
  } while (0)

// A random adapter: A, B ~ N(0, sd) (B non-zero, unlike PEFT's init, so that it changes the model).
LoraWeights random_adapter(const JambaConfig& cfg, const std::vector<std::string>& targets,
                           int64_t r, double alpha, uint64_t seed, float sd = 0.05f) {
  LoraWeights lw;
  lw.config = {.rank = r, .alpha = alpha, .targets = targets};
  lw.modules = lora_modules(cfg, targets);
  lw.base_model = "golden/test";
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  for (const LoraModule& m : lw.modules) {
    lw.A.emplace_back(size_t(r * m.in));
    lw.B.emplace_back(size_t(m.out * r));
    for (float& v : lw.A.back()) v = nd(rng);
    for (float& v : lw.B.back()) v = nd(rng);
  }
  return lw;
}

std::vector<float> logits(const Model& m, const std::string& golden_case) {
  return full_forward(m, read_token_batch(golden_dir(golden_case) + "/golden.safetensors"), false)
      .logits;
}

// max |a - b| (NaN as inf)
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  return testing_util::max_row_diff(a, b, std::max<int64_t>(1, int64_t(b.size())));
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Targets and modules.

TEST(LoraTargets, NamesAndParsing) {
  EXPECT_EQ(lora_target_names().size(), 12u);
  EXPECT_EQ(lora_target_names().back(), "dt_proj");
  const auto def = default_lora_targets();
  EXPECT_EQ(def.size(), 11u);
  EXPECT_EQ(std::find(def.begin(), def.end(), "dt_proj"), def.end());
  EXPECT_EQ(parse_lora_targets("q_proj, v_proj"), (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(parse_lora_targets("all"), lora_target_names());
  EXPECT_ERROR_WITH(parse_lora_targets("q_proj,qkv"), "'qkv'", "in_proj", "dt_proj");
  EXPECT_ERROR_WITH(parse_lora_targets("q_proj,q_proj"), "'q_proj'", "repeated");
  EXPECT_ERROR_WITH(parse_lora_targets(""), "empty");
  EXPECT_ERROR_WITH(parse_lora_targets("q_proj,,v_proj"), "unknown module ''");
  EXPECT_ERROR_WITH(parse_lora_targets("all,q_proj"), "'all'");
  EXPECT_ERROR_WITH(lora_modules(golden_config("dense-tiny"), {"lm_head"}), "'lm_head'");
}

// Every module is a matrix of param_list (same name + ".weight", shape [out, in]), in its order.
void expect_in_param_list(const JambaConfig& cfg, const std::vector<LoraModule>& mods) {
  const auto params = param_list(cfg);
  size_t pos = 0;
  for (const LoraModule& m : mods) {
    const auto it = std::find_if(params.begin() + long(pos), params.end(),
                                 [&](const ParamSpec& p) { return p.name == m.name + ".weight"; });
    ASSERT_NE(it, params.end()) << m.name << " (missing or out of param_list order)";
    EXPECT_EQ(it->shape, (std::vector<int64_t>{m.out, m.in})) << m.name;
    pos = size_t(it - params.begin());
  }
}

const LoraModule* find_module(const std::vector<LoraModule>& mods, const std::string& name) {
  for (const auto& m : mods)
    if (m.name == name) return &m;
  return nullptr;
}

void expect_shape(const std::vector<LoraModule>& mods, const std::string& name, int64_t out,
                  int64_t in) {
  const LoraModule* m = find_module(mods, name);
  ASSERT_NE(m, nullptr) << name;
  EXPECT_EQ(m->out, out) << name;
  EXPECT_EQ(m->in, in) << name;
}

TEST(LoraModules, MoeConfigShapes) {
  // gqa-moe: D 128, Din 256, N 16, R 8, 8 heads / 2 KV heads of 16, I 64, 4 experts; layer 4 is
  // attention, the odd layers MoE.
  const JambaConfig cfg = golden_config("gqa-moe");
  const auto def = lora_modules(cfg, default_lora_targets());
  EXPECT_EQ(def.size(), 7u * 3 + 4 + 4 * 3 + 4 * (1 + 4 * 3));
  EXPECT_EQ(def.front().name, "model.layers.0.mamba.in_proj");
  EXPECT_EQ(find_module(def, "model.layers.0.mamba.dt_proj"), nullptr);
  expect_shape(def, "model.layers.0.mamba.in_proj", 512, 128);
  expect_shape(def, "model.layers.0.mamba.x_proj", 40, 256);
  expect_shape(def, "model.layers.0.mamba.out_proj", 128, 256);
  expect_shape(def, "model.layers.0.feed_forward.gate_proj", 64, 128);
  expect_shape(def, "model.layers.4.self_attn.q_proj", 128, 128);
  expect_shape(def, "model.layers.4.self_attn.k_proj", 32, 128);
  expect_shape(def, "model.layers.4.self_attn.v_proj", 32, 128);
  expect_shape(def, "model.layers.4.self_attn.o_proj", 128, 128);
  expect_shape(def, "model.layers.1.feed_forward.router", 4, 128);
  expect_shape(def, "model.layers.7.feed_forward.experts.3.down_proj", 128, 64);
  expect_shape(def, "model.layers.7.feed_forward.experts.0.up_proj", 64, 128);
  EXPECT_EQ(find_module(def, "model.layers.1.feed_forward.gate_proj"), nullptr);
  expect_in_param_list(cfg, def);
  const auto all = lora_modules(cfg, lora_target_names());
  EXPECT_EQ(all.size(), def.size() + 7);
  expect_shape(all, "model.layers.6.mamba.dt_proj", 256, 8);
  expect_in_param_list(cfg, all);
  const auto q = lora_modules(cfg, {"q_proj", "router"});
  ASSERT_EQ(q.size(), 1u + 4);
  EXPECT_EQ(q[0].name, "model.layers.1.feed_forward.router");
  EXPECT_EQ(q[2].name, "model.layers.4.self_attn.q_proj");
}

TEST(LoraModules, DenseConfigShapes) {
  // dense-tiny: D 64, Din 128, N 16, R 4, 4 heads / 4 KV heads of 16, I 128, no MoE; layers 1
  // and 3 attention.
  const JambaConfig cfg = golden_config("dense-tiny");
  const auto all = lora_modules(cfg, lora_target_names());
  EXPECT_EQ(all.size(), 2u * 4 + 2 * 4 + 4 * 3);
  expect_shape(all, "model.layers.2.mamba.in_proj", 256, 64);
  expect_shape(all, "model.layers.2.mamba.x_proj", 36, 128);
  expect_shape(all, "model.layers.2.mamba.dt_proj", 128, 4);
  expect_shape(all, "model.layers.0.mamba.out_proj", 64, 128);
  expect_shape(all, "model.layers.3.self_attn.k_proj", 64, 64);
  expect_shape(all, "model.layers.3.feed_forward.up_proj", 128, 64);
  expect_shape(all, "model.layers.3.feed_forward.down_proj", 64, 128);
  for (const auto& m : all) EXPECT_EQ(m.name.find("router"), std::string::npos) << m.name;
  expect_in_param_list(cfg, all);
  EXPECT_TRUE(lora_modules(cfg, {"router"}).empty());
}

// ---------------------------------------------------------------------------------------------
// Files.

TEST(LoraIo, SaveLoadRoundTrip) {
  const JambaConfig cfg = golden_config("gqa-moe");
  const std::vector<std::string> targets = {"q_proj", "in_proj", "down_proj", "router", "dt_proj"};
  const LoraWeights lw = random_adapter(cfg, targets, 4, 12.5, 7);
  const std::string dir = make_temp_dir("lora_rt") + "/adapter";  // created by save
  lw.save(dir);
  const json j = read_json(dir + "/adapter_config.json");
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 4);
  EXPECT_EQ(j["lora_alpha"], 12.5);
  EXPECT_EQ(j["target_modules"], json(targets));
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["fan_in_fan_out"], false);
  EXPECT_EQ(j["use_rslora"], false);
  EXPECT_EQ(j["lora_dropout"], 0.0);
  EXPECT_TRUE(j["modules_to_save"].is_null());
  EXPECT_EQ(j["inference_mode"], true);
  EXPECT_EQ(j["base_model_name_or_path"], "golden/test");
  const auto file = SafetensorsFile::open(dir + "/adapter_model.safetensors");
  EXPECT_EQ(file->tensors().size(), 2 * lw.modules.size());
  const TensorInfo& a0 = file->get("base_model.model.model.layers.0.mamba.in_proj.lora_A.weight");
  EXPECT_EQ(a0.dtype, DType::F32);
  EXPECT_EQ(a0.shape, (std::vector<int64_t>{4, 128}));
  EXPECT_EQ(file->get("base_model.model.model.layers.0.mamba.in_proj.lora_B.weight").shape,
            (std::vector<int64_t>{512, 4}));

  const LoraWeights back = LoraWeights::load(dir, cfg);
  EXPECT_EQ(back.config.rank, 4);
  EXPECT_EQ(back.config.alpha, 12.5);
  EXPECT_FLOAT_EQ(back.config.scale(), 12.5f / 4);
  EXPECT_EQ(back.config.targets, targets);
  EXPECT_EQ(back.base_model, "golden/test");
  ASSERT_EQ(back.modules.size(), lw.modules.size());
  for (size_t i = 0; i < lw.modules.size(); ++i) {
    EXPECT_EQ(back.modules[i].name, lw.modules[i].name);
    EXPECT_EQ(back.modules[i].out, lw.modules[i].out);
    EXPECT_EQ(back.modules[i].in, lw.modules[i].in);
    ASSERT_EQ(back.A[i].size(), lw.A[i].size());
    ASSERT_EQ(back.B[i].size(), lw.B[i].size());
    EXPECT_EQ(std::memcmp(back.A[i].data(), lw.A[i].data(), lw.A[i].size() * 4), 0) << i;
    EXPECT_EQ(std::memcmp(back.B[i].data(), lw.B[i].data(), lw.B[i].size() * 4), 0) << i;
  }

  // PEFT writes adapters in the model's dtype: BF16 / F16 tensors load as their float32 values.
  for (const DType dt : {DType::BF16, DType::F16}) {
    const std::string p = dir + "/adapter_model.safetensors";
    auto ts = read_tensors(p);
    convert_all(ts, dt);
    const std::string d2 = make_temp_dir("lora_half");
    write_tensors(d2 + "/adapter_model.safetensors", ts);
    fs::copy_file(dir + "/adapter_config.json", d2 + "/adapter_config.json");
    const LoraWeights h = LoraWeights::load(d2, cfg);
    const RawTensor* t = find_tensor(ts, lora_b_name(lw.modules[3].name));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(h.B[3], t->f32()) << dtype_name(dt);
    EXPECT_NE(h.B[3], lw.B[3]) << dtype_name(dt) << ": nothing was rounded";
  }
}

// A saved adapter in a fresh directory, for damaging.
struct AdapterDir {
  JambaConfig cfg = golden_config("dense-tiny");
  LoraWeights lw = random_adapter(cfg, {"q_proj", "v_proj", "in_proj"}, 2, 4, 3);
  std::string dir = make_temp_dir("lora_bad");
  std::string st() const { return dir + "/adapter_model.safetensors"; }
  std::string cj() const { return dir + "/adapter_config.json"; }
  AdapterDir() { lw.save(dir); }
  void edit_json(const std::function<void(json&)>& f) const {
    json j = read_json(cj());
    f(j);
    write_json(cj(), j);
  }
  std::string load_error() const {
    return error_of([&] { LoraWeights::load(dir, cfg); });
  }
};

void expect_msg(const std::string& msg, const std::vector<std::string>& parts) {
  EXPECT_FALSE(msg.empty()) << "no error";
  EXPECT_TRUE(has_all(msg, parts)) << msg;
}

TEST(LoraIo, DamagedAdaptersNameFileAndField) {
  const std::string q1A = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
  {  // missing tensor
    AdapterDir a;
    auto ts = read_tensors(a.st());
    drop_tensor(ts, q1A);
    write_tensors(a.st(), ts);
    expect_msg(a.load_error(), {a.st(), "missing tensor '" + q1A + "'", "[2,64]"});
  }
  {  // wrong shape
    AdapterDir a;
    auto ts = read_tensors(a.st());
    *find_tensor(ts, q1A) = RawTensor::from_f32(q1A, {2, 65}, std::vector<float>(130, 0.5f));
    write_tensors(a.st(), ts);
    expect_msg(a.load_error(), {a.st(), q1A, "expected shape [2,64]", "got [2,65]"});
  }
  {  // unknown tensor
    AdapterDir a;
    auto ts = read_tensors(a.st());
    ts.push_back(RawTensor::from_f32("base_model.model.lm_head.lora_A.weight", {2, 64},
                                     std::vector<float>(128, 0.5f)));
    write_tensors(a.st(), ts);
    expect_msg(a.load_error(), {a.st(), "unexpected tensor 'base_model.model.lm_head.lora_A"});
  }
  {  // a tensor of a module not in target_modules
    AdapterDir a;
    a.edit_json([](json& j) { j["target_modules"] = {"q_proj", "in_proj"}; });
    expect_msg(a.load_error(), {a.st(), "unexpected tensor", "v_proj.lora_A"});
  }
  {  // integer dtype
    AdapterDir a;
    auto ts = read_tensors(a.st());
    RawTensor* t = find_tensor(ts, q1A);
    t->dtype = DType::I32;
    write_tensors(a.st(), ts);
    expect_msg(a.load_error(), {a.st(), q1A, "dtype I32"});
  }
  {  // r of the config disagrees with the tensors
    AdapterDir a;
    a.edit_json([](json& j) { j["r"] = 8; });
    expect_msg(a.load_error(), {a.st(), "expected shape [8,", "got [2,"});
  }
  for (const json& bad_r : {json(0), json(-1), json(2.5), json("2"), json(nullptr)}) {
    AdapterDir a;
    a.edit_json([&](json& j) { j["r"] = bad_r; });
    expect_msg(a.load_error(), {a.cj(), "'r'"});
  }
  struct FieldCase {
    const char* field;
    json value;
    const char* says;
  };
  for (const FieldCase& c :
       {FieldCase{"use_dora", true, "'use_dora'"}, FieldCase{"use_rslora", true, "'use_rslora'"},
        FieldCase{"fan_in_fan_out", true, "'fan_in_fan_out'"}, FieldCase{"bias", "all", "'bias'"},
        FieldCase{"peft_type", "IA3", "'peft_type'"}, FieldCase{"lora_alpha", "16", "'lora_alpha'"},
        FieldCase{"target_modules", ".*proj", "regex"},
        FieldCase{"target_modules", json::array({"q_proj", "qkv"}), "qkv"},
        FieldCase{"target_modules", 3, "'target_modules'"},
        FieldCase{"rank_pattern", json{{"q_proj", 4}}, "'rank_pattern'"},
        FieldCase{"layers_to_transform", json::array({1}), "'layers_to_transform'"},
        FieldCase{"base_model_name_or_path", 5, "base_model_name_or_path"}}) {
    AdapterDir a;
    a.edit_json([&](json& j) { j[c.field] = c.value; });
    expect_msg(a.load_error(), {a.cj(), c.says});
  }
  {  // a single module name as a string is the list of that one name
    AdapterDir a;
    auto ts = read_tensors(a.st());
    std::erase_if(ts,
                  [](const RawTensor& t) { return t.name.find(".q_proj.") == std::string::npos; });
    write_tensors(a.st(), ts);
    a.edit_json([](json& j) { j["target_modules"] = "q_proj"; });
    const LoraWeights lw = LoraWeights::load(a.dir, a.cfg);
    EXPECT_EQ(lw.modules.size(), 2u);
  }
  {  // truncated safetensors file
    AdapterDir a;
    const std::string b = read_bytes(a.st());
    write_bytes(a.st(), b.substr(0, b.size() / 2));
    expect_msg(a.load_error(), {a.st()});
  }
  {  // malformed JSON
    AdapterDir a;
    write_bytes(a.cj(), "{\"r\": 2, \"lora_alpha\": ");
    expect_msg(a.load_error(), {a.cj(), "JSON"});
    write_bytes(a.cj(), "[1, 2]");
    expect_msg(a.load_error(), {a.cj(), "object"});
  }
  {  // missing files / directory
    AdapterDir a;
    fs::remove(a.st());
    expect_msg(a.load_error(), {a.st(), "missing"});
    fs::remove(a.cj());
    expect_msg(a.load_error(), {a.cj(), "missing"});
    expect_msg(error_of([&] { LoraWeights::load(a.dir + "/nope", a.cfg); }),
               {a.dir + "/nope", "does not exist"});
  }
  {  // an adapter made for another config
    AdapterDir a;
    expect_msg(error_of([&] { LoraWeights::load(a.dir, golden_config("gqa-moe")); }),
               {a.st(), "tensor"});
  }
}

TEST(LoraAttach, UnknownModuleOrShapeIsNamed) {
  Weights w = Weights::load(golden_config("dense-tiny"), golden_dir("dense-tiny"), WeightType::F32);
  const JambaConfig cfg = golden_config("dense-tiny");
  std::vector<float> a(2 * 64), b(64 * 2);
  const LoraConfig lc{.rank = 2, .alpha = 2, .targets = {"q_proj"}};
  EXPECT_ERROR_WITH(attach_lora(w, cfg, lc, {{"model.layers.9.self_attn.q_proj", 64, 64}},
                                {a.data()}, {b.data()}),
                    "'model.layers.9.self_attn.q_proj'");
  EXPECT_ERROR_WITH(attach_lora(w, cfg, lc, {{"model.layers.1.self_attn.q_proj", 64, 32}},
                                {a.data()}, {b.data()}),
                    "'model.layers.1.self_attn.q_proj'", "[64,32]", "[64,64]");
  EXPECT_ERROR_WITH(
      attach_lora(w, cfg, lc, {{"model.embed_tokens", 512, 64}}, {a.data()}, {b.data()}),
      "'model.embed_tokens'");
  // Attach, then replace: only the latest adapter's layers point at an adapter.
  attach_lora(w, cfg, lc, {{"model.layers.1.self_attn.q_proj", 64, 64}}, {a.data()}, {b.data()});
  ASSERT_NE(w.layers[1].attn.q.lora, nullptr);
  EXPECT_EQ(w.layers[1].attn.q.lora->scale, 1.0f);
  attach_lora(w, cfg, lc, {{"model.layers.3.self_attn.v_proj", 64, 64}}, {a.data()}, {b.data()});
  EXPECT_EQ(w.layers[1].attn.q.lora, nullptr);
  ASSERT_NE(w.layers[3].attn.v.lora, nullptr);
  EXPECT_EQ(w.layers[3].attn.v.lora->A, a.data());
  EXPECT_EQ(w.lora_adapters->size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// The model with an adapter.

// Writes the adapter and the merged float32 checkpoint (ParamStore + merge_lora_into, the code
// `jamba merge-lora` runs) for a golden case.
struct Merged {
  std::string adapter, merged;
};
Merged write_adapter_and_merged(const std::string& c, const std::vector<std::string>& targets) {
  const std::string tmp = make_temp_dir("lora_merge_" + c);
  ParamStore P = ParamStore::load(golden_dir(c));
  const LoraWeights lw = random_adapter(P.cfg, targets, 4, 8, 11);
  lw.save(tmp + "/adapter");
  merge_lora_into(P, LoraWeights::load(tmp + "/adapter", P.cfg));
  write_hf_model(tmp + "/merged", P, DType::F32, "");
  return {tmp + "/adapter", tmp + "/merged"};
}

class LoraModel : public ::testing::TestWithParam<std::string> {};

TEST_P(LoraModel, MergedEqualsOnTheFly) {
  const std::string c = GetParam();
  const Merged m = write_adapter_and_merged(c, lora_target_names());
  const std::vector<float> base =
      logits(Model::load(golden_dir(c), {.weights = WeightType::F32}), c);
  const std::vector<float> fly =
      logits(Model::load(golden_dir(c), {.weights = WeightType::F32, .lora = m.adapter}), c);
  const std::vector<float> merged = logits(Model::load(m.merged), c);
  const float d = max_abs_diff(fly, merged), moved = max_abs_diff(fly, base);
  std::printf("[lora] %s: max |on the fly - merged| = %.3g, max |adapter - base| = %.3g\n",
              c.c_str(), d, moved);
  EXPECT_LE(d, tol::kLoraMergedVsOnTheFly) << c;
  EXPECT_GT(moved, 100 * tol::kLoraMergedVsOnTheFly) << c << ": the adapter changed nothing";
  EXPECT_TRUE(all_finite(fly));

  // Only some targets: the adapter touches only those layers.
  const Merged q = write_adapter_and_merged(c, {"q_proj", "down_proj"});
  const std::vector<float> fly_q =
      logits(Model::load(golden_dir(c), {.weights = WeightType::F32, .lora = q.adapter}), c);
  const float dq = max_abs_diff(fly_q, logits(Model::load(q.merged), c));
  EXPECT_LE(dq, tol::kLoraMergedVsOnTheFly) << c;
  EXPECT_GT(max_abs_diff(fly_q, base), 100 * tol::kLoraMergedVsOnTheFly) << c;
}

INSTANTIATE_TEST_SUITE_P(Cases, LoraModel, ::testing::Values("gqa-moe", "dense-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::erase(n, '-');
                           return n;
                         });

TEST(LoraModelTypes, AdapterOverBf16Int8AndQ4Bases) {
  const std::string c = "gqa-moe";
  const Merged m = write_adapter_and_merged(c, default_lora_targets());
  for (const WeightType t : {WeightType::BF16, WeightType::Int8, WeightType::Q4}) {
    const Model with = Model::load(golden_dir(c), {.weights = t, .lora = m.adapter});
    EXPECT_EQ(with.weights().type, t);
    const std::vector<float> base = logits(Model::load(golden_dir(c), {.weights = t}), c);
    const std::vector<float> fly = logits(with, c);
    EXPECT_TRUE(all_finite(fly)) << weight_type_name(t);
    const float moved = max_abs_diff(fly, base);
    std::printf("[lora] %s over %s: max |adapter - base| = %.3g\n", c.c_str(), weight_type_name(t),
                moved);
    EXPECT_GT(moved, 100 * tol::kLoraMergedVsOnTheFly) << weight_type_name(t);
  }
}

// ---------------------------------------------------------------------------------------------
// CLI.

const std::string kJambaTokenizer = std::string(JAMBA_SHARED_DIR) + "/tokenizers/jamba.model";

TEST(LoraCli, GenerateWithAdapterAndMerge) {
  const std::string tmp = make_temp_dir("lora_cli");
  const std::string base = tmp + "/base", adapter = tmp + "/adapter", merged = tmp + "/merged";
  ASSERT_OK(run("init --config tiny --out " + q(base) + " --tokenizer " + q(kJambaTokenizer) +
                " --seed 1"));
  const JambaConfig cfg = JambaConfig::from_file(base + "/config.json");
  random_adapter(cfg, lora_target_names(), 4, 8, 5).save(adapter);

  const RunResult g =
      run("generate --model " + q(base) + " --lora " + q(adapter) + " -p Hello -n 4 --greedy");
  ASSERT_OK(g);
  EXPECT_EQ(g.out.rfind("Hello", 0), 0u) << g.out;
  EXPECT_TRUE(contains(g.err, "tokens/s")) << g.err;

  const RunResult mr =
      run("merge-lora --model " + q(base) + " --lora " + q(adapter) + " --out " + q(merged));
  ASSERT_OK(mr);
  EXPECT_TRUE(contains(mr.out, "merged")) << mr.out;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    EXPECT_TRUE(fs::exists(fs::path(merged) / f)) << f;
  // The merged weight is W + scale * B A (checked on one matrix).
  {
    const ParamStore P0 = ParamStore::load(base), P1 = ParamStore::load(merged);
    const LoraWeights lw = LoraWeights::load(adapter, cfg);
    const LoraModule& mod = lw.modules[0];
    const size_t i = P0.find(mod.name + ".weight");
    float worst = 0;
    for (int64_t o = 0; o < mod.out; ++o)
      for (int64_t c = 0; c < mod.in; ++c) {
        double s = 0;
        for (int64_t k = 0; k < lw.config.rank; ++k)
          s += double(lw.B[0][size_t(o * lw.config.rank + k)]) * lw.A[0][size_t(k * mod.in + c)];
        const double want = P0.data[i][size_t(o * mod.in + c)] + lw.config.scale() * s;
        worst = std::max(worst, float(std::fabs(P1.data[i][size_t(o * mod.in + c)] - want)));
      }
    EXPECT_LE(worst, 1e-6f) << mod.name;
  }
  ASSERT_OK(run("generate --model " + q(merged) + " -p Hello -n 4 --greedy"));
  ASSERT_OK(run("merge-lora --model " + q(base) + " --lora " + q(adapter) + " --out " +
                q(tmp + "/merged16") + " --dtype bf16"));
  const auto f16 = SafetensorsFile::open(tmp + "/merged16/model.safetensors");
  for (const auto& [name, t] : f16->tensors()) EXPECT_EQ(t.dtype, DType::BF16) << name;

  // --lora on chat and serve too.
  for (const char* cmd : {"chat", "serve"}) {
    const RunResult h = run(std::string(cmd) + " --help");
    EXPECT_OK(h);
    EXPECT_TRUE(contains(h.out, "--lora")) << cmd << "\n" << h.out;
  }

  // Errors: no such adapter, a damaged one, one made for another config, a quantized base.
  expect_clean_error(
      run("generate --model " + q(base) + " --lora " + q(tmp + "/none") + " -p Hello -n 2"),
      {tmp + "/none"});
  const std::string bad = tmp + "/bad";
  random_adapter(cfg, {"q_proj"}, 2, 4, 6).save(bad);
  {
    json j = read_json(bad + "/adapter_config.json");
    j["use_dora"] = true;
    write_json(bad + "/adapter_config.json", j);
  }
  expect_clean_error(run("generate --model " + q(base) + " --lora " + q(bad) + " -p Hello -n 2"),
                     {bad + "/adapter_config.json", "use_dora"});
  expect_clean_error(
      run("merge-lora --model " + q(base) + " --lora " + q(bad) + " --out " + q(tmp + "/m2")),
      {bad + "/adapter_config.json", "use_dora"});
  EXPECT_FALSE(fs::exists(tmp + "/m2/model.safetensors"));
  const std::string other = tmp + "/other";
  random_adapter(golden_config("gqa-moe"), {"in_proj"}, 2, 4, 6).save(other);
  expect_clean_error(
      run("merge-lora --model " + q(base) + " --lora " + q(other) + " --out " + q(tmp + "/m3")),
      {other + "/adapter_model.safetensors", "in_proj"});
  expect_clean_error(run("merge-lora --model " + q(tmp + "/nobase") + " --lora " + q(adapter) +
                         " --out " + q(tmp + "/m4")),
                     {tmp + "/nobase"});
  ASSERT_OK(run("quantize --model " + q(base) + " --out " + q(tmp + "/q4") + " --type q4"));
  expect_clean_error(run("merge-lora --model " + q(tmp + "/q4") + " --lora " + q(adapter) +
                         " --out " + q(tmp + "/m5")),
                     {tmp + "/q4/config.json", "quantized"});
  // ... while the adapter loads over that quantized checkpoint on the fly.
  EXPECT_OK(run("generate --model " + q(tmp + "/q4") + " --lora " + q(adapter) +
                " -p Hello -n 2 --greedy"));
}

}  // namespace
}  // namespace jamba
