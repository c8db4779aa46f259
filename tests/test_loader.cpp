// Checkpoint loading: safetensors validation, sharded checkpoints, tensor-name layouts (v5 fused
// experts, historical Jamba-v0.1 names, squeezed conv, tied embeddings), BF16/F16 weights, and
// the atomic writer. Every damaged checkpoint is a copy of a golden case in a temp dir.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "checkpoint_util.h"
#include "runtime/forward_tool.h"
#include "tolerances.h"

namespace jamba {
namespace {

using namespace testutil;

// Logits [B, T, V] of the model in `dir` on the golden input of `golden_case`.
std::vector<float> logits_of(const std::string& dir, const std::string& golden_case) {
  const Model m = Model::load(dir);
  return full_forward(m, read_token_batch(golden_dir(golden_case) + "/golden.safetensors"), false)
      .logits;
}

// Logits of the unmodified golden checkpoint (computed once per case).
const std::vector<float>& reference_logits(const std::string& golden_case) {
  static std::map<std::string, std::vector<float>> cache;
  auto it = cache.find(golden_case);
  if (it == cache.end())
    it = cache.emplace(golden_case, logits_of(golden_dir(golden_case), golden_case)).first;
  return it->second;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  return m;
}

std::string model_file(const std::string& dir) { return dir + "/model.safetensors"; }

// ---------------------------------------------------------------------------------------------
// File-level damage (SafetensorsFile::open through Model::load).

TEST(LoaderFormat, FileShorterThan8Bytes) {
  const std::string dir = copy_case("dense-tiny");
  write_bytes(model_file(dir), "abcde");
  expect_load_error(dir, {model_file(dir), ": 5 bytes", "at least 8"});
  write_bytes(model_file(dir), "");
  expect_load_error(dir, {model_file(dir), ": 0 bytes", "at least 8"});
}

TEST(LoaderFormat, HeaderLengthLargerThanFile) {
  const std::string dir = copy_case("dense-tiny");
  std::string b = read_bytes(model_file(dir));
  const uint64_t n = b.size() + 100;
  std::memcpy(b.data(), &n, 8);
  write_bytes(model_file(dir), b);
  expect_load_error(dir, {model_file(dir), "length " + std::to_string(n),
                          "file size " + std::to_string(b.size())});
  const uint64_t huge = uint64_t(1) << 40;
  std::memcpy(b.data(), &huge, 8);
  write_bytes(model_file(dir), b);
  expect_load_error(dir, {model_file(dir), "length " + std::to_string(huge), "limit"});
}

TEST(LoaderFormat, HeaderNotJson) {
  const std::string dir = copy_case("dense-tiny");
  write_raw_text(model_file(dir), "{\"a\": [1, 2", std::string(64, '\0'));
  expect_load_error(dir, {model_file(dir), "not valid JSON"});
}

TEST(LoaderFormat, HeaderNotAnObject) {
  const std::string dir = copy_case("dense-tiny");
  write_raw_text(model_file(dir), "[1, 2, 3]", std::string(64, '\0'));
  expect_load_error(dir, {model_file(dir), "JSON object", "array"});
}

TEST(LoaderFormat, TruncatedFile) {
  const std::string dir = copy_case("dense-tiny");
  const RawFile r = read_raw(model_file(dir));
  // The tensor whose data ends last.
  std::string last;
  uint64_t end = 0;
  for (auto it = r.header.begin(); it != r.header.end(); ++it)
    if (it.key() != "__metadata__" && it.value()["data_offsets"][1].get<uint64_t>() > end) {
      end = it.value()["data_offsets"][1].get<uint64_t>();
      last = it.key();
    }
  ASSERT_EQ(end, r.data.size());
  write_raw_text(model_file(dir), r.header.dump(), r.data.substr(0, r.data.size() - 10));
  expect_load_error(dir, {model_file(dir), "'" + last + "'", "," + std::to_string(end) + "]",
                          "(" + std::to_string(r.data.size() - 10) + " bytes", "past the end"});
}

TEST(LoaderFormat, OverlappingOffsets) {
  const std::string dir = copy_case("dense-tiny");
  const std::string a = "model.layers.0.mamba.D", b = "model.layers.0.mamba.conv1d.bias";
  edit_header(model_file(dir), [&](json& h) {
    ASSERT_EQ(h[a]["shape"], h[b]["shape"]);
    const uint64_t b0 = h[b]["data_offsets"][0].get<uint64_t>() + 4;  // same size, shifted
    h[a]["data_offsets"] = {b0, b0 + (h[b]["data_offsets"][1].get<uint64_t>() -
                                      h[b]["data_offsets"][0].get<uint64_t>())};
  });
  expect_load_error(dir, {model_file(dir), a, b, "overlap"});
}

TEST(LoaderFormat, OffsetsDoNotMatchDtypeTimesShape) {
  const std::string dir = copy_case("dense-tiny");
  const std::string t = "model.final_layernorm.weight";  // F32 [64] = 256 bytes
  edit_header(model_file(dir), [&](json& h) { h[t]["shape"] = {63}; });
  expect_load_error(dir, {model_file(dir), t, "F32[63]", "needs 252", "give 256"});
  const std::string dir2 = copy_case("dense-tiny");
  edit_header(model_file(dir2), [&](json& h) { h[t]["dtype"] = "BF16"; });
  expect_load_error(dir2, {model_file(dir2), t, "BF16[64]", "needs 128", "give 256"});
}

TEST(LoaderFormat, UnknownDtype) {
  const std::string dir = copy_case("dense-tiny");
  const std::string t = "model.final_layernorm.weight";
  edit_header(model_file(dir), [&](json& h) { h[t]["dtype"] = "F31"; });
  expect_load_error(dir, {model_file(dir), t, "F31"});
}

TEST(LoaderFormat, MalformedEntries) {
  const std::string t = "model.final_layernorm.weight";
  const std::vector<std::pair<std::function<void(json&)>, std::vector<std::string>>> cases = {
      {[&](json& h) { h[t].erase("data_offsets"); }, {t, "data_offsets"}},
      {[&](json& h) { h[t]["shape"] = {-64}; }, {t, "shape [-64]"}},
      {[&](json& h) { h[t]["shape"] = "64"; }, {t, "shape", "\"64\""}},
      {[&](json& h) { h[t]["data_offsets"] = {8, 4}; }, {t, "[8,4]", "reversed"}},
      {[&](json& h) { h[t]["data_offsets"] = {-4, 252}; }, {t, "got [-4,252]"}},
      {[&](json& h) { h[t] = 5; }, {t, "dtype, shape and data_offsets, got 5"}},
      {[&](json& h) { h["__metadata__"]["format"] = 1; }, {"__metadata__", "'format'", "got 1"}},
      {[&](json& h) { h["__metadata__"] = "pt"; }, {"__metadata__", "got \"pt\""}},
  };
  for (const auto& [edit, parts] : cases) {
    const std::string dir = copy_case("dense-tiny");
    edit_header(model_file(dir), edit);
    auto p = parts;
    p.push_back(model_file(dir));
    expect_load_error(dir, p);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-level checks (Weights::load).

TEST(LoaderTensors, WrongShape) {
  const std::string dir = copy_case("dense-tiny");
  const std::string t = "model.layers.0.mamba.A_log";  // [Din=128, N]
  std::vector<int64_t> shape;
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) {
    RawTensor* a = find_tensor(ts, t);
    ASSERT_NE(a, nullptr);
    shape = a->shape;
    std::swap(a->shape[0], a->shape[1]);
  });
  ASSERT_EQ(shape.size(), 2u);
  expect_load_error(dir, {model_file(dir), t, "expected shape " + shape_str(shape),
                          "got " + shape_str(std::vector<int64_t>{shape[1], shape[0]})});
}

TEST(LoaderTensors, RequiredTensorMissing) {
  const std::string dir = copy_case("dense-tiny");
  const std::string t = "model.layers.2.mamba.A_log";
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) { drop_tensor(ts, t); });
  expect_load_error(dir, {dir, "missing tensor", t, "expected shape [128,"});
}

TEST(LoaderTensors, UnexpectedExtraTensor) {
  const std::string dir = copy_case("dense-tiny");
  edit_tensors(dir, [](std::vector<RawTensor>& ts) {
    ts.push_back(RawTensor::from_f32("model.layers.0.mamba.extra_bias", {3}, {1, 2, 3}));
  });
  expect_load_error(dir, {model_file(dir), "unexpected tensor", "model.layers.0.mamba.extra_bias",
                          "F32[3]"});
  // A layer beyond num_hidden_layers is unexpected too.
  const std::string dir2 = copy_case("dense-tiny");
  edit_tensors(dir2, [](std::vector<RawTensor>& ts) {
    ts.push_back(RawTensor::from_f32("model.layers.4.input_layernorm.weight", {1}, {1}));
  });
  expect_load_error(dir2, {"unexpected tensor", "model.layers.4.input_layernorm.weight"});
}

TEST(LoaderTensors, LmHeadMissingWhenUntied) {
  const std::string dir = copy_case("dense-tiny");
  edit_tensors(dir, [](std::vector<RawTensor>& ts) { drop_tensor(ts, "lm_head.weight"); });
  expect_load_error(dir, {"missing tensor", "lm_head.weight", "[512,64]"});
}

TEST(LoaderTensors, IntegerTensorWhereFloatExpected) {
  const std::string dir = copy_case("dense-tiny");
  const std::string t = "model.layers.0.mamba.D";
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) {
    RawTensor* d = find_tensor(ts, t);
    ASSERT_NE(d, nullptr);
    std::vector<int64_t> v(size_t(d->shape[0]), 1);
    d->dtype = DType::I64;
    d->bytes.assign(reinterpret_cast<const uint8_t*>(v.data()),
                    reinterpret_cast<const uint8_t*>(v.data() + v.size()));
  });
  expect_load_error(dir, {model_file(dir), t, "I64", "F32, BF16 or F16"});
}

TEST(LoaderTensors, TiedEmbeddingsWithExtraLmHeadLoads) {
  const std::string dir = copy_case("tied-embeddings");
  edit_tensors(dir, [](std::vector<RawTensor>& ts) {
    ASSERT_EQ(find_tensor(ts, "lm_head.weight"), nullptr);
    RawTensor lm = *find_tensor(ts, "model.embed_tokens.weight");
    lm.name = "lm_head.weight";
    ts.push_back(lm);
  });
  EXPECT_EQ(logits_of(dir, "tied-embeddings"), reference_logits("tied-embeddings"));
  // A present-but-ignored lm_head must still have the right shape.
  edit_tensors(dir, [](std::vector<RawTensor>& ts) {
    find_tensor(ts, "lm_head.weight")->shape = {64, 512};
  });
  expect_load_error(dir, {"lm_head.weight", "expected shape [512,64]", "got [64,512]"});
}

TEST(LoaderTensors, SqueezedConv1dLoads) {
  const std::string dir = copy_case("dense-tiny");
  edit_tensors(dir, [](std::vector<RawTensor>& ts) {
    for (auto& t : ts)
      if (t.name.ends_with(".conv1d.weight")) {
        ASSERT_EQ(t.shape.size(), 3u);
        ASSERT_EQ(t.shape[1], 1);
        t.shape = {t.shape[0], t.shape[2]};
      }
  });
  EXPECT_EQ(logits_of(dir, "dense-tiny"), reference_logits("dense-tiny"));
  // Squeezed but with the wrong K.
  edit_tensors(dir, [](std::vector<RawTensor>& ts) {
    RawTensor* t = find_tensor(ts, "model.layers.0.mamba.conv1d.weight");
    t->shape = {t->shape[0] * 2, t->shape[1] / 2};
  });
  expect_load_error(dir, {"model.layers.0.mamba.conv1d.weight", "[128,4]", "[256,2]"});
}

TEST(LoaderTensors, MisalignedF32DataLoads) {
  // Two bytes of slack before every tensor: F32 data is no longer 4-byte aligned in the map
  // and must be copied, not cast.
  const std::string dir = copy_case("dense-tiny");
  RawFile r = read_raw(model_file(dir));
  for (auto it = r.header.begin(); it != r.header.end(); ++it)
    if (it.key() != "__metadata__")
      for (auto& o : it.value()["data_offsets"]) o = o.get<uint64_t>() + 2;
  write_raw_text(model_file(dir), r.header.dump(), std::string(2, '\0') + r.data);
  EXPECT_EQ(logits_of(dir, "dense-tiny"), reference_logits("dense-tiny"));
}

// Weights read into memory: the data section lands on a 64-byte boundary whatever the header
// length (vector loads of whole cache lines), and the bytes are the file's. Our writer pads the
// header so the data section is aligned in the file (and in a mapping) too.
TEST(LoaderFormat, DataSectionAlignedWhenReadIntoMemory) {
  const std::string dir = copy_case("dense-tiny");
  RawFile r = read_raw(model_file(dir));
  std::string h = r.header.dump();
  while ((8 + h.size()) % 64 != 24) h.push_back(' ');  // misaligned on purpose
  write_raw_text(model_file(dir), h, r.data);
  const auto mapped = SafetensorsFile::open(model_file(dir), false);
  const auto read = SafetensorsFile::open(model_file(dir), true);
  ASSERT_EQ(mapped->tensors().size(), read->tensors().size());
  for (const auto& [name, t] : read->tensors()) {
    const TensorInfo& m = mapped->get(name);
    const uint64_t off = r.header[name]["data_offsets"][0].get<uint64_t>();
    EXPECT_EQ(uintptr_t(m.data) % 64, (24 + off) % 64) << name;  // the map is page-aligned
    EXPECT_EQ(uintptr_t(t.data) % 64, off % 64) << name;
    ASSERT_EQ(t.nbytes, m.nbytes) << name;
    EXPECT_EQ(std::memcmp(t.data, m.data, t.nbytes), 0) << name;
  }

  const std::string out = make_temp_dir("aligned-write") + "/w.safetensors";
  const float x[3] = {1, 2, 3};
  SafetensorsWriter wr;
  wr.add_f32("x", {3}, x);
  wr.write(out);
  const std::string bytes = read_bytes(out);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 64, 0u);
}

// BF16 / F16 checkpoints: the weights are rounded once at conversion, so logits move by the
// weight rounding error propagated through the layers (tolerances.h, kHalfWeights*). With
// bf16 activations every GEMM input is rounded too (kBf16Activations*).
void check_half(DType dt, MatmulActivations act, float max_abs, double top1, const char* what,
                std::initializer_list<const char*> cases = {"dense-tiny", "gqa-moe"}) {
  for (const char* c : cases) {
    const std::string dir = copy_case(c);
    edit_tensors(dir, [&](std::vector<RawTensor>& ts) { convert_all(ts, dt); });
    const Model m = Model::load(dir, {.activations = act});
    const auto& ref = reference_logits(c);
    const auto got =
        full_forward(m, read_token_batch(golden_dir(c) + "/golden.safetensors"), false).logits;
    const int64_t V = m.config().vocab_size;
    ASSERT_EQ(got.size(), ref.size());
    int64_t agree = 0, rows = int64_t(ref.size()) / V;
    for (int64_t r = 0; r < rows; ++r)
      agree += argmax(got.data() + r * V, V) == argmax(ref.data() + r * V, V);
    const float d = max_abs_diff(got, ref);
    std::printf("[loader] %s %s: max |logits - f32| = %.3g, top-1 agreement %lld/%lld\n", what, c,
                d, static_cast<long long>(agree), static_cast<long long>(rows));
    EXPECT_LE(d, max_abs) << what << " " << c;
    EXPECT_GT(d, 0.f) << what << " " << c << ": weights were not actually converted";
    EXPECT_GE(double(agree), top1 * double(rows)) << what << " " << c;
  }
}

TEST(LoaderDtypes, Bf16CheckpointCloseToF32) {
  check_half(DType::BF16, MatmulActivations::F32, tol::kBf16WeightsLogits, tol::kHalfWeightsTop1,
             "BF16");
}
TEST(LoaderDtypes, F16CheckpointCloseToF32) {
  check_half(DType::F16, MatmulActivations::Auto, tol::kF16WeightsLogits, tol::kHalfWeightsTop1,
             "F16");
}
// The default for a bf16 checkpoint (MatmulActivations::Auto = bf16 activations).
TEST(LoaderDtypes, Bf16ActivationsCloseToF32) {
  check_half(DType::BF16, MatmulActivations::Auto, tol::kBf16ActivationsLogits,
             tol::kBf16ActivationsTop1, "BF16 + bf16 activations");
}

// With bf16 activations a prompt (M >= 9 rows: oneDNN's bf16 matmul) and the same tokens fed one
// at a time (M = 1: the vdpbf16ps kernel) round the same inputs and sum the same exact products
// in another order: logits agree to float32 reassociation plus the rare input that summation
// noise moves across a bf16 rounding boundary (kBf16ActivationsPrefillVsDecode).
TEST(LoaderDtypes, Bf16ActivationsPrefillMatchesDecode) {
  for (const char* c : {"dense-tiny", "gqa-moe"}) {
    const std::string dir = copy_case(c);
    edit_tensors(dir, [&](std::vector<RawTensor>& ts) { convert_all(ts, DType::BF16); });
    const Model m = Model::load(dir, {.activations = MatmulActivations::Bf16});
    const TokenBatch tb = read_token_batch(golden_dir(c) + "/golden.safetensors");
    const std::span<const int32_t> toks(tb.ids.data(), size_t(tb.T));  // sequence 0
    SequenceState s1 = m.new_state(), s2 = m.new_state();
    ForwardOutput all, one;
    std::vector<BatchItem> items{{&s1, toks, {}, LogitsMode::All}};
    m.forward(items, &all);
    std::vector<float> steps;
    for (size_t t = 0; t < toks.size(); ++t) {
      std::vector<BatchItem> it{{&s2, toks.subspan(t, 1), {}, LogitsMode::Last}};
      m.forward(it, &one);
      steps.insert(steps.end(), one.logits.begin(), one.logits.end());
    }
    const float d = max_abs_diff(all.logits, steps);
    std::printf("[loader] %s bf16 activations, prompt vs one token at a time: max |diff| = %.3g\n", c, d);
    EXPECT_LE(d, tol::kBf16ActivationsPrefillVsDecode) << c;
  }
}

// MoE prefill runs experts side by side on the threads, each calling oneDNN: repeated forwards
// must give finite, identical logits (a shared oneDNN scratchpad once gave inf at random).
TEST(LoaderDtypes, Bf16ActivationsMoePrefillIsDeterministic) {
  const std::string dir = copy_case("gqa-moe");
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) { convert_all(ts, DType::BF16); });
  const Model m = Model::load(dir, {.activations = MatmulActivations::Bf16});
  const TokenBatch tb = read_token_batch(golden_dir("gqa-moe") + "/golden.safetensors");
  const std::span<const int32_t> toks(tb.ids.data(), size_t(tb.T));
  std::vector<float> first;
  for (int rep = 0; rep < 20; ++rep) {
    SequenceState st = m.new_state();
    ForwardOutput out;
    std::vector<BatchItem> items{{&st, toks, {}, LogitsMode::All}};
    m.forward(items, &out);
    for (float v : out.logits) ASSERT_TRUE(std::isfinite(v)) << "rep " << rep;
    if (rep == 0) first = out.logits;
    else ASSERT_EQ(out.logits, first) << "rep " << rep;
  }
}

// ---------------------------------------------------------------------------------------------
// Alternative name layouts.

// transformers v5 fused experts (spec §5.2): gate_up_proj [E, 2I, H] = per expert cat(gate, up)
// along rows, down_proj [E, H, I].
void fuse_experts(std::vector<RawTensor>& ts, const JambaConfig& cfg) {
  for (int64_t il = 0; il < cfg.num_hidden_layers; ++il) {
    if (cfg.layers[size_t(il)].ffn != FfnKind::Moe) continue;
    const std::string f = "model.layers." + std::to_string(il) + ".feed_forward.experts.";
    const int64_t E = cfg.num_experts, I = cfg.intermediate_size, H = cfg.hidden_size;
    std::vector<float> gu, dn;
    for (int64_t e = 0; e < E; ++e) {
      const std::string p = f + std::to_string(e) + ".";
      for (const char* w : {"gate_proj", "up_proj"}) {
        const auto v = find_tensor(ts, p + w + ".weight")->f32();
        gu.insert(gu.end(), v.begin(), v.end());
      }
      const auto d = find_tensor(ts, p + "down_proj.weight")->f32();
      dn.insert(dn.end(), d.begin(), d.end());
      for (const char* w : {"gate_proj", "up_proj", "down_proj"})
        drop_tensor(ts, p + w + ".weight");
    }
    ts.push_back(RawTensor::from_f32(f + "gate_up_proj", {E, 2 * I, H}, gu));
    ts.push_back(RawTensor::from_f32(f + "down_proj", {E, H, I}, dn));
  }
}

TEST(LoaderLayouts, TransformersV5FusedExperts) {
  const std::string dir = copy_case("gqa-moe");
  const JambaConfig cfg = JambaConfig::from_file(dir + "/config.json");
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) { fuse_experts(ts, cfg); });
  EXPECT_EQ(logits_of(dir, "gqa-moe"), reference_logits("gqa-moe"));

  // Fused gate_up with the wrong shape, and a fused layer missing its down_proj.
  const std::string gu = "model.layers.1.feed_forward.experts.gate_up_proj";
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) {
    RawTensor* t = find_tensor(ts, gu);
    t->shape = {t->shape[0] * 2, t->shape[1] / 2, t->shape[2]};
  });
  expect_load_error(dir, {gu, "expected shape [4,128,128]", "got [8,64,128]"});
  const std::string dir2 = copy_case("gqa-moe");
  edit_tensors(dir2, [&](std::vector<RawTensor>& ts) {
    fuse_experts(ts, cfg);
    drop_tensor(ts, "model.layers.3.feed_forward.experts.down_proj");
  });
  expect_load_error(dir2, {"missing tensor", "model.layers.3.feed_forward.experts.down_proj"});
}

TEST(LoaderLayouts, FusedAndPerExpertMixedIsRejected) {
  const std::string dir = copy_case("gqa-moe");
  const JambaConfig cfg = JambaConfig::from_file(dir + "/config.json");
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) {
    const RawTensor keep = *find_tensor(ts, "model.layers.1.feed_forward.experts.2.up_proj.weight");
    fuse_experts(ts, cfg);
    ts.push_back(keep);
  });
  expect_load_error(dir, {"unexpected tensor",
                          "model.layers.1.feed_forward.experts.2.up_proj.weight"});
}

// Spec §5.3: `.moe.` for `.feed_forward.`, dense FFNs as a 1-expert MoE (`experts.0.`),
// `pre_moe_layernorm`, `B_layernorm` / `C_layernorm`.
std::string historical_name(const std::string& n, const JambaConfig& cfg, bool* changed) {
  static const std::string pre = "model.layers.";
  std::string s = n;
  if (!s.starts_with(pre)) return s;
  const int64_t il = std::stoll(s.substr(pre.size()));
  auto rep = [&](const std::string& from, const std::string& to) {
    const size_t p = s.find(from);
    if (p != std::string::npos) s.replace(p, from.size(), to);
  };
  if (cfg.layers[size_t(il)].ffn == FfnKind::Dense) {
    // Alternate the two historical dense forms: feed_forward.experts.0.* and moe.experts.0.*.
    rep(".feed_forward.", il % 4 == 0 ? ".feed_forward.experts.0." : ".moe.experts.0.");
  } else {
    rep(".feed_forward.", ".moe.");
  }
  rep(".pre_ff_layernorm.", ".pre_moe_layernorm.");
  rep(".mamba.b_layernorm.", ".mamba.B_layernorm.");
  rep(".mamba.c_layernorm.", ".mamba.C_layernorm.");
  *changed |= s != n;
  return s;
}

TEST(LoaderLayouts, HistoricalJambaV01Names) {
  const std::string dir = copy_case("jamba-layout");
  const JambaConfig cfg = JambaConfig::from_file(dir + "/config.json");
  int64_t renamed = 0;
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) {
    for (auto& t : ts) {
      bool changed = false;
      t.name = historical_name(t.name, cfg, &changed);
      renamed += changed;
    }
    ASSERT_NE(find_tensor(ts, "model.layers.0.feed_forward.experts.0.gate_proj.weight"), nullptr);
    ASSERT_NE(find_tensor(ts, "model.layers.2.moe.experts.0.down_proj.weight"), nullptr);
    ASSERT_NE(find_tensor(ts, "model.layers.1.moe.experts.15.up_proj.weight"), nullptr);
    ASSERT_NE(find_tensor(ts, "model.layers.1.moe.router.weight"), nullptr);
    ASSERT_NE(find_tensor(ts, "model.layers.5.pre_moe_layernorm.weight"), nullptr);
    ASSERT_NE(find_tensor(ts, "model.layers.3.mamba.C_layernorm.weight"), nullptr);
  });
  EXPECT_GT(renamed, 900);  // every FFN, pre-FF norm and b/c norm tensor
  EXPECT_EQ(logits_of(dir, "jamba-layout"), reference_logits("jamba-layout"));
}

TEST(LoaderLayouts, HistoricalAndCurrentNameForSameParameterIsRejected) {
  const std::string dir = copy_case("jamba-layout");
  edit_tensors(dir, [](std::vector<RawTensor>& ts) {
    RawTensor t = *find_tensor(ts, "model.layers.3.pre_ff_layernorm.weight");
    t.name = "model.layers.3.pre_moe_layernorm.weight";
    ts.push_back(t);
  });
  expect_load_error(dir, {"model.layers.3.pre_moe_layernorm.weight",
                          "model.layers.3.pre_ff_layernorm.weight", "same parameter"});
}

TEST(LoaderLayouts, ExpertZeroOfMoeLayerIsNotDense) {
  // In a MoE layer, experts.0 is expert 0, not a dense FFN: dropping the other experts is an
  // error naming the first missing one.
  const std::string dir = copy_case("gqa-moe");
  edit_tensors(dir, [](std::vector<RawTensor>& ts) {
    for (const char* w : {"gate_proj", "up_proj", "down_proj"})
      drop_tensor(ts, std::string("model.layers.1.feed_forward.experts.1.") + w + ".weight");
  });
  expect_load_error(dir, {"missing tensor", "model.layers.1.feed_forward.experts.1.gate_proj"});
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints.

// Splits dir/model.safetensors into `n` shards (round robin by name) + index; returns the index.
json shard_checkpoint(const std::string& dir, int n) {
  auto ts = read_tensors(model_file(dir));
  std::vector<std::vector<RawTensor>> shards(static_cast<size_t>(n));
  json wm = json::object();
  uint64_t total = 0;
  auto shard_name = [&](int k) {
    char b[64];
    std::snprintf(b, sizeof b, "model-%05d-of-%05d.safetensors", k + 1, n);
    return std::string(b);
  };
  for (size_t i = 0; i < ts.size(); ++i) {
    const int k = int(i % size_t(n));
    wm[ts[i].name] = shard_name(k);
    total += ts[i].bytes.size();
    shards[size_t(k)].push_back(std::move(ts[i]));
  }
  for (int k = 0; k < n; ++k) write_tensors(dir + "/" + shard_name(k), shards[size_t(k)]);
  std::filesystem::remove(model_file(dir));
  json index = {{"metadata", {{"total_size", total}, {"extra", "ignored"}}}, {"weight_map", wm}};
  write_json(dir + "/model.safetensors.index.json", index);
  return index;
}

const std::string kIndex = "model.safetensors.index.json";

TEST(LoaderShards, ValidSplitGivesSameLogits) {
  for (int n : {2, 3}) {
    const std::string dir = copy_case("gqa-moe");
    shard_checkpoint(dir, n);
    EXPECT_EQ(logits_of(dir, "gqa-moe"), reference_logits("gqa-moe")) << n << " shards";
  }
}

TEST(LoaderShards, IndexNamesMissingShardFile) {
  const std::string dir = copy_case("dense-tiny");
  json idx = shard_checkpoint(dir, 2);
  idx["weight_map"]["lm_head.weight"] = "model-00003-of-00002.safetensors";
  write_json(dir + "/" + kIndex, idx);
  expect_load_error(dir, {"model-00003-of-00002.safetensors", "lm_head.weight"});
}

TEST(LoaderShards, IndexListsTensorAbsentFromShard) {
  const std::string dir = copy_case("dense-tiny");
  json idx = shard_checkpoint(dir, 2);
  idx["weight_map"]["model.layers.9.mamba.D"] = "model-00001-of-00002.safetensors";
  write_json(dir + "/" + kIndex, idx);
  expect_load_error(dir, {kIndex, "model.layers.9.mamba.D", "model-00001-of-00002.safetensors",
                          "missing"});
}

TEST(LoaderShards, ShardHoldsTensorNotInIndex) {
  const std::string dir = copy_case("dense-tiny");
  json idx = shard_checkpoint(dir, 2);
  const std::string victim = idx["weight_map"].begin().key();
  const std::string shard = idx["weight_map"].begin().value();
  idx["weight_map"].erase(victim);
  write_json(dir + "/" + kIndex, idx);
  expect_load_error(dir, {shard, victim, "not listed", kIndex});
}

TEST(LoaderShards, IndexPointsToWrongShard) {
  const std::string dir = copy_case("dense-tiny");
  json idx = shard_checkpoint(dir, 2);
  const std::string t = "lm_head.weight";
  const std::string actual = idx["weight_map"][t];
  const std::string other = actual == "model-00001-of-00002.safetensors"
                                ? "model-00002-of-00002.safetensors"
                                : "model-00001-of-00002.safetensors";
  idx["weight_map"][t] = other;
  write_json(dir + "/" + kIndex, idx);
  expect_load_error(dir, {t, actual, other});
}

TEST(LoaderShards, MalformedIndex) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"{\"weight_map\": ", {kIndex, "not valid JSON"}},
      {"{\"metadata\": {}}", {kIndex, "weight_map"}},
      {"{\"weight_map\": {\"lm_head.weight\": 3}}", {kIndex, "lm_head.weight", "got 3"}},
      {"{\"weight_map\": {\"lm_head.weight\": \"../model.safetensors\"}}",
       {kIndex, "lm_head.weight", "../model.safetensors"}},
  };
  for (const auto& [text, parts] : cases) {
    const std::string dir = copy_case("dense-tiny");
    write_bytes(dir + "/" + kIndex, text);
    expect_load_error(dir, parts);
  }
}

TEST(LoaderShards, UnindexedShardsAreAllRead) {
  // No index and no model.safetensors: every *.safetensors in the directory is a shard.
  const std::string dir = copy_case("dense-tiny");
  shard_checkpoint(dir, 3);
  std::filesystem::remove(dir + "/" + kIndex);
  EXPECT_EQ(logits_of(dir, "dense-tiny"), reference_logits("dense-tiny"));
  // The same tensor in two files is an error naming both.
  auto ts = read_tensors(dir + "/model-00001-of-00003.safetensors");
  write_tensors(dir + "/model-00004-of-00003.safetensors", {ts[0]});
  expect_load_error(dir, {ts[0].name, "model-00001-of-00003.safetensors",
                          "model-00004-of-00003.safetensors"});
}

TEST(LoaderShards, MissingFilesNamePaths) {
  const std::string dir = make_temp_dir("empty");
  expect_load_error(dir, {dir + "/config.json"});
  std::filesystem::copy_file(golden_dir("dense-tiny") + "/config.json", dir + "/config.json");
  expect_load_error(dir, {dir, "model.safetensors"});
  expect_load_error(dir + "/nope", {dir + "/nope"});
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter.

TEST(LoaderWriter, RoundTrip) {
  const std::string dir = make_temp_dir("writer");
  const std::string path = dir + "/t.safetensors";
  const std::vector<float> f = {1.5f, -2.f, 3.25f, 0.f, 1e-3f, 7.f};
  const std::vector<uint16_t> h = {f32_to_bf16(1.5f), f32_to_bf16(-2.f), f32_to_bf16(3.f)};
  const std::vector<uint16_t> g = {f32_to_f16(0.5f)};
  const std::vector<int64_t> i64 = {1, -2, 1ll << 40};
  const std::vector<int32_t> i32 = {7, -7};
  const std::vector<uint8_t> u8 = {0, 1, 255};
  SafetensorsWriter w;
  w.add_f32("zz.empty_first", {0}, nullptr);  // empty span [0,0) at the start of "b.f32"
  w.add_f32("b.f32", {2, 3}, f.data());
  w.add("a.bf16", DType::BF16, {3}, h.data());  // odd byte count: misaligns what follows
  w.add("c.f16", DType::F16, {}, g.data());     // scalar
  w.add_i64("d.i64", {3}, i64.data());
  w.add("e.i32", DType::I32, {1, 2}, i32.data());
  w.add("f.u8", DType::U8, {3}, u8.data());
  w.add_f32("g.empty", {0, 4}, nullptr);
  w.add_f32("h.after_empty", {1}, f.data());
  w.set_metadata("who", "test");
  w.write(path);

  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header length is padded to 8";

  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->tensors().size(), 9u);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("who"), "test");
  EXPECT_EQ(tensor_to_f32(file->get("b.f32")), f);
  EXPECT_EQ(file->get("b.f32").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tensor_to_f32(file->get("a.bf16")), (std::vector<float>{1.5f, -2.f, 3.f}));
  EXPECT_EQ(tensor_to_f32(file->get("c.f16")), std::vector<float>{0.5f});
  EXPECT_TRUE(file->get("c.f16").shape.empty());
  EXPECT_EQ(tensor_to_i64(file->get("d.i64")), i64);
  EXPECT_EQ(tensor_to_i64(file->get("e.i32")), (std::vector<int64_t>{7, -7}));
  EXPECT_EQ(file->get("f.u8").dtype, DType::U8);
  EXPECT_EQ(std::vector<uint8_t>(file->get("f.u8").data, file->get("f.u8").data + 3), u8);
  EXPECT_EQ(file->get("g.empty").nbytes, 0u);
  EXPECT_EQ(file->get("zz.empty_first").nbytes, 0u);
  EXPECT_EQ(tensor_to_f32(file->get("h.after_empty")), std::vector<float>{1.5f});
  try {
    file->get("zzz");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("zzz"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
  try {
    tensor_to_f32(file->get("d.i64"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d.i64"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("I64"), std::string::npos) << e.what();
  }
}

TEST(LoaderWriter, AtomicReplaceLeavesNoTempFile) {
  const std::string dir = make_temp_dir("atomic");
  const std::string path = dir + "/m.safetensors";
  write_bytes(path, "old contents");
  const float one = 1.f;
  SafetensorsWriter w;
  w.add_f32("x", {1}, &one);
  w.write(path);
  EXPECT_EQ(tensor_to_f32(SafetensorsFile::open(path)->get("x")), std::vector<float>{1.f});
  // Replace again while the old file is still mapped: the mapping stays valid.
  auto old = SafetensorsFile::open(path);
  const float two = 2.f;
  SafetensorsWriter w2;
  w2.add_f32("x", {1}, &two);
  w2.write(path);
  EXPECT_EQ(tensor_to_f32(old->get("x")), std::vector<float>{1.f});
  EXPECT_EQ(tensor_to_f32(SafetensorsFile::open(path)->get("x")), std::vector<float>{2.f});
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"m.safetensors"});
  // Unwritable destination: error names the path, nothing is created.
  const std::string bad = dir + "/no_such_dir/m.safetensors";
  try {
    w.write(bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/no_such_dir/m.safetensors"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/no_such_dir"));
  // A duplicate name would orphan the first tensor's bytes: refused, the old file is kept.
  SafetensorsWriter dup;
  dup.add_f32("x", {1}, &one);
  dup.add_f32("x", {1}, &two);
  try {
    dup.write(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_EQ(tensor_to_f32(SafetensorsFile::open(path)->get("x")), std::vector<float>{2.f});
}

}  // namespace
}  // namespace jamba
