// Quantized weights on the golden checkpoints: int8 / int8-experts / q4 logits against float32
// (top-1 agreement and max error), which matrices each type quantizes, the quantized checkpoint
// written by `jamba quantize` (save -> load equals quantizing at load, bit for bit), damaged
// quantized checkpoints, and the CLI end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "checkpoint_util.h"
#include "kernels/quant.h"
#include "model/quantize.h"
#include "runtime/forward_tool.h"
#include "test_util.h"
#include "tolerances.h"

namespace jamba {
namespace {

using namespace testutil;
using testing_util::error_of;

const std::vector<std::string> kCases = {"dense-tiny",   "gqa-moe",      "long-seq",
                                         "padded-batch", "jamba-layout", "tied-embeddings"};

TokenBatch golden_input(const std::string& c) {
  return read_token_batch(golden_dir(c) + "/golden.safetensors");
}

std::vector<float> logits(const Model& m, const std::string& c) {
  return full_forward(m, golden_input(c), false).logits;
}

int64_t argmax(const float* x, int64_t n) {
  int64_t b = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[b]) b = i;
  return b;
}

struct Agreement {
  int64_t agree = 0, rows = 0;
  float max_abs = 0;
};

// Over the non-padding positions: top-1 agreement and max |a - b|.
Agreement compare(const std::vector<float>& a, const std::vector<float>& b, int64_t V,
                  const std::vector<uint8_t>& mask) {
  Agreement r;
  EXPECT_EQ(a.size(), b.size());
  for (size_t row = 0; row * size_t(V) < a.size(); ++row) {
    if (!mask.empty() && !mask[row]) continue;
    ++r.rows;
    r.agree += argmax(a.data() + row * V, V) == argmax(b.data() + row * V, V);
    for (int64_t i = 0; i < V; ++i) {
      const float d = std::fabs(a[row * V + size_t(i)] - b[row * V + size_t(i)]);
      if (!(d <= r.max_abs)) r.max_abs = std::isnan(d) ? INFINITY : d;
    }
  }
  return r;
}

struct TypeCase {
  const char* name;
  WeightType type;
  float max_abs;
  double top1;
};

class QuantLogits : public ::testing::TestWithParam<TypeCase> {};

TEST_P(QuantLogits, CloseToF32) {
  const TypeCase tc = GetParam();
  int64_t agree = 0, rows = 0;
  for (const std::string& c : kCases) {
    const Model f32 = Model::load(golden_dir(c), {.weights = WeightType::F32});
    const Model q = Model::load(golden_dir(c), {.weights = tc.type});
    const int64_t V = f32.config().vocab_size;
    const Agreement a = compare(logits(q, c), logits(f32, c), V, golden_input(c).mask);
    std::printf("[quant] %s %s: max |logits - f32| = %.3g, top-1 agreement %lld/%lld\n", tc.name,
                c.c_str(), a.max_abs, static_cast<long long>(a.agree),
                static_cast<long long>(a.rows));
    EXPECT_LE(a.max_abs, tc.max_abs) << tc.name << " " << c;
    const bool has_experts = f32.config().n_moe_layers() > 0;
    if (tc.type != WeightType::Int8Experts || has_experts) {
      EXPECT_GT(a.max_abs, 0.0f) << tc.name << " " << c << ": nothing was quantized";
    }
    agree += a.agree;
    rows += a.rows;
  }
  // Agreement pooled over all cases: a case has 16..128 positions, too few for a per-case rate.
  EXPECT_GE(double(agree), tc.top1 * double(rows)) << tc.name;
}

INSTANTIATE_TEST_SUITE_P(
    Types, QuantLogits,
    ::testing::Values(TypeCase{"int8", WeightType::Int8, tol::kInt8Logits, tol::kInt8Top1},
                      TypeCase{"int8-experts", WeightType::Int8Experts, tol::kInt8Logits,
                               tol::kInt8Top1},
                      TypeCase{"q4", WeightType::Q4, tol::kQ4Logits, tol::kQ4Top1}),
    [](const auto& info) {
      return std::string(info.param.type == WeightType::Int8 ? "Int8"
                         : info.param.type == WeightType::Q4 ? "Q4"
                                                             : "Int8Experts");
    });

// max |a - b| / max |b| (the residual stream's scale).
float relative_max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0, mag = 0;
  for (size_t j = 0; j < b.size(); ++j) {
    d = std::max(d, std::fabs(a[j] - b[j]));
    mag = std::max(mag, std::fabs(b[j]));
  }
  return d / mag;
}

// The wiring: a quantized model against a float32 checkpoint holding its dequantized weights
// (same weight values, f32 kernels): any layout, scale or dispatch mistake (which the noise
// bounds above might absorb) shows up as O(1). Both types also round the activations (kernels.h:
// int8 per row to int16, q4 per group to int8), a perturbation the random golden models amplify
// through the layers (and that flips top-k routing from the first MoE layer on); it is checked
// on the residual stream after the first layer (Mamba in/x/out_proj and a dense MLP), relative
// to its magnitude, before that.
TEST(QuantWeights, EqualsDequantizedF32Model) {
  for (const char* c : {"gqa-moe", "jamba-layout"})
    for (WeightType t : {WeightType::Int8, WeightType::Q4}) {
      const Model q = Model::load(golden_dir(c), {.weights = t});
      const std::string dir = copy_case(c);
      edit_tensors(dir, [&](std::vector<RawTensor>& ts) {
        for_each_matrix(q.weights(), q.config(), [&](const std::string& name, const Linear& l) {
          if (l.quant == QuantKind::None) return;
          RawTensor* r = find_tensor(ts, name);
          ASSERT_NE(r, nullptr) << name;
          std::vector<float> v(static_cast<size_t>(l.out * l.in));
          for (int64_t o = 0; o < l.out; ++o) {
            if (l.quant == QuantKind::Int8)
              dequantize_row_int8(reinterpret_cast<const int8_t*>(l.wq) + o * l.in, l.scale[o],
                                  l.in, v.data() + o * l.in);
            else
              dequantize_row_q4(l.wq + o * q4_row_bytes(l.in), l.q4_scale + o * q4_groups(l.in), l.in,
                                v.data() + o * l.in);
          }
          *r = RawTensor::from_f32(name, {l.out, l.in}, v);
        });
      });
      const Model f = Model::load(dir, {.weights = WeightType::F32});
      const FullForwardResult rf = full_forward(f, golden_input(c), true);
      const bool q8 = t == WeightType::Int8;
      // One forward (the prefill regime, M > 32) and chunks of 8 tokens (the decode regime):
      // q4 rounds them differently (kernels.h), so each is held to the bound.
      for (const int64_t chunk : {int64_t(0), int64_t(8)}) {
        const FullForwardResult rq = full_forward(q, golden_input(c), true, chunk);
        const float r = relative_max_diff(rq.hidden[1], rf.hidden[1]);
        std::printf("[quant] %s %s (%s) vs dequantized f32: hidden_states.1 max |diff| / max |h| = %.3g\n",
                    q8 ? "int8" : "q4", c, chunk ? "chunks of 8" : "one forward", r);
        EXPECT_LE(r, q8 ? tol::kInt8ActRoundingHidden : tol::kQ4ActRoundingHidden)
            << c << " chunk " << chunk;
      }
    }
}

// int8's two kernel regimes compute the same products (kernels.h): a prompt in one forward
// (M > 32: oneDNN on the split activations, cached weight panels, or dequantized panels + sgemm)
// and in chunks of 8 tokens (M <= 32: streaming) agree to float32 summation order (measured: 0).
// q4's regimes round differently by design (prefill: weights again to int8 per row, activations
// to int8 per row; decode: activations to int8 per group), each bounded in EqualsDequantizedF32Model. Both round activations (int8 to int16 per row, q4 to int8 per
// group): an input that differs by float noise can land on the other side of a rounding
// boundary (one step), which the random golden models then amplify like any perturbation, so
// both are compared on the residual stream after layer 1, relative to its magnitude.
TEST(QuantWeights, PrefillAndDecodePathsAgree) {
  const Model m = Model::load(golden_dir("gqa-moe"), {.weights = WeightType::Int8});
  const TokenBatch in = golden_input("gqa-moe");
  ASSERT_GT(in.B * in.T, 32);
  ASSERT_LE(in.B * 8, 32);
  const FullForwardResult one = full_forward(m, in, true);
  const FullForwardResult chunked = full_forward(m, in, true, 8);
  const float r = relative_max_diff(one.hidden[1], chunked.hidden[1]);
  std::printf("[quant] int8 one forward vs chunks of 8: hidden_states.1 max |diff| / max |h| = %.3g\n", r);
  EXPECT_LE(r, tol::kInt8PathsHidden);
}

// Which matrices each type quantizes (model.h, WeightType).
TEST(QuantWeights, RolesPerType) {
  const std::string c = "jamba-layout";
  for (WeightType t : {WeightType::Int8, WeightType::Int8Experts, WeightType::Q4}) {
    const Model m = Model::load(golden_dir(c), {.weights = t});
    const QuantKind want = t == WeightType::Q4 ? QuantKind::Q4 : QuantKind::Int8;
    int64_t n_quant = 0;
    for_each_matrix(m.weights(), m.config(), [&](const std::string& name, const Linear& l) {
      const bool keep_f32 =
          name.find(".dt_proj.") != std::string::npos || name.find(".router.") != std::string::npos;
      const bool embedding = name == "model.embed_tokens.weight";  // jamba-layout is untied
      const bool expert = name.find(".experts.") != std::string::npos;
      QuantKind expect = QuantKind::None;
      if (!keep_f32 && !embedding && (expert || t != WeightType::Int8Experts)) expect = want;
      EXPECT_EQ(int(l.quant), int(expect)) << weight_type_name(t) << " " << name;
      if (keep_f32) {
        EXPECT_NE(l.w, nullptr) << name << " must stay f32";
      }
      n_quant += l.quant != QuantKind::None;
    });
    EXPECT_GT(n_quant, 0);
    EXPECT_EQ(m.weights().type, t);
  }
}

// A BF16 checkpoint quantized at load: the unquantized matrices (embedding, LM head) stay bf16.
TEST(QuantWeights, Bf16SourceKeepsEmbeddingBf16) {
  const std::string dir = copy_case("gqa-moe");
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) { convert_all(ts, DType::BF16); });
  const Model m = Model::load(dir, {.weights = WeightType::Int8Experts});
  EXPECT_NE(m.weights().embed.w16, nullptr);
  EXPECT_NE(m.weights().layers[0].mamba.in_proj.w16, nullptr);
  const Model f = Model::load(dir, {.weights = WeightType::BF16});
  const Agreement a =
      compare(logits(m, "gqa-moe"), logits(f, "gqa-moe"), m.config().vocab_size, {});
  EXPECT_LE(a.max_abs, tol::kInt8Logits);
  EXPECT_GT(a.max_abs, 0.0f);
}

// The bytes the bench's roofline counts: quantized data plus scales (int8: f32 per row; q4: bf16
// per group of 32, 4.5 bits per weight).
TEST(QuantWeights, BytesCountScales) {
  const Model m = Model::load(golden_dir("gqa-moe"), {.weights = WeightType::Q4});
  const Linear& l = m.weights().layers[0].mamba.in_proj;  // [512, 128]
  ASSERT_EQ(l.quant, QuantKind::Q4);
  EXPECT_EQ(l.bytes(), size_t(l.out * (l.in / 2) + l.out * (l.in / 32) * 2));
  EXPECT_EQ(l.bytes() * 8, size_t(l.out * l.in) * 9 / 2);
  const Model i8 = Model::load(golden_dir("gqa-moe"), {.weights = WeightType::Int8});
  const Linear& k = i8.weights().layers[0].mamba.in_proj;
  EXPECT_EQ(k.bytes(), size_t(k.out * k.in + k.out * 4));
}

// ---------------------------------------------------------------------------------------------
// Quantized checkpoints.

std::string quantized_copy(const std::string& src, WeightType t) {
  const std::string out = make_temp_dir(std::string("q_") + weight_type_name(t));
  write_quantized_checkpoint(src, out, t);
  return out;
}

TEST(QuantCheckpoint, SaveLoadEqualsQuantizeAtLoad) {
  for (const char* c : {"gqa-moe", "jamba-layout", "tied-embeddings", "dense-tiny"})
    for (WeightType t : {WeightType::Int8, WeightType::Int8Experts, WeightType::Q4}) {
      const std::string out = quantized_copy(golden_dir(c), t);
      const Model saved = Model::load(out);
      EXPECT_TRUE(saved.weights().prequantized);
      EXPECT_EQ(saved.weights().type, t);
      const Model at_load = Model::load(golden_dir(c), {.weights = t});
      EXPECT_EQ(saved.weights().matrix_bytes(), at_load.weights().matrix_bytes());
      EXPECT_EQ(logits(saved, c), logits(at_load, c)) << c << " " << weight_type_name(t);
      // Asking for the stored type explicitly is the same; another type is refused.
      EXPECT_NO_THROW(Model::load(out, {.weights = t}));
      const std::string e = error_of([&] { Model::load(out, {.weights = WeightType::F32}); });
      EXPECT_NE(e.find("quantized"), std::string::npos) << e;
      EXPECT_NE(e.find(weight_type_name(t)), std::string::npos) << e;
    }
}

TEST(QuantCheckpoint, FromBf16AndFusedExperts) {
  // A BF16 checkpoint in the transformers v5 fused-experts layout: the experts are written per
  // expert, the rest stays BF16.
  const std::string dir = copy_case("gqa-moe");
  const JambaConfig cfg = JambaConfig::from_file(dir + "/config.json");
  edit_tensors(dir, [&](std::vector<RawTensor>& ts) {
    convert_all(ts, DType::BF16);
    for (int64_t il = 0; il < cfg.num_hidden_layers; ++il) {
      if (cfg.layers[size_t(il)].ffn != FfnKind::Moe) continue;
      const std::string f = "model.layers." + std::to_string(il) + ".feed_forward.experts.";
      const int64_t E = cfg.num_experts, I = cfg.intermediate_size, H = cfg.hidden_size;
      std::vector<uint8_t> gu, dn;
      for (int64_t e = 0; e < E; ++e) {
        for (const char* p : {"gate_proj", "up_proj"}) {
          const RawTensor* t = find_tensor(ts, f + std::to_string(e) + "." + p + ".weight");
          gu.insert(gu.end(), t->bytes.begin(), t->bytes.end());
        }
        const RawTensor* d = find_tensor(ts, f + std::to_string(e) + ".down_proj.weight");
        dn.insert(dn.end(), d->bytes.begin(), d->bytes.end());
        for (const char* p : {"gate_proj", "up_proj", "down_proj"})
          drop_tensor(ts, f + std::to_string(e) + "." + p + ".weight");
      }
      ts.push_back({f + "gate_up_proj", DType::BF16, {E, 2 * I, H}, gu});
      ts.push_back({f + "down_proj", DType::BF16, {E, H, I}, dn});
    }
  });
  const std::string out = quantized_copy(dir, WeightType::Int8Experts);
  const Model saved = Model::load(out);
  const Model at_load = Model::load(dir, {.weights = WeightType::Int8Experts});
  EXPECT_NE(saved.weights().embed.w16, nullptr);
  EXPECT_EQ(logits(saved, "gqa-moe"), logits(at_load, "gqa-moe"));
  auto f = SafetensorsFile::open(out + "/model.safetensors");
  EXPECT_EQ(f->get("model.layers.1.feed_forward.experts.3.down_proj.weight").dtype, DType::I8);
  EXPECT_EQ(f->get("model.layers.0.mamba.in_proj.weight").dtype, DType::BF16);
  EXPECT_EQ(f->find("model.layers.1.feed_forward.experts.gate_up_proj"), nullptr);
}

TEST(QuantCheckpoint, RefusesQuantizedInputAndBadType) {
  const std::string out = quantized_copy(golden_dir("dense-tiny"), WeightType::Q4);
  std::string e =
      error_of([&] { write_quantized_checkpoint(out, make_temp_dir("qq"), WeightType::Int8); });
  EXPECT_NE(e.find("already quantized"), std::string::npos) << e;
  e = error_of([&] {
    write_quantized_checkpoint(golden_dir("dense-tiny"), make_temp_dir("qb"), WeightType::BF16);
  });
  EXPECT_NE(e.find("int8, int8-experts or q4"), std::string::npos) << e;
}

// Damaged quantized checkpoints: errors name the tensor, the expected and the actual value.
TEST(QuantCheckpoint, DamagedRejected) {
  const std::string good = quantized_copy(golden_dir("gqa-moe"), WeightType::Q4);
  auto copy = [&](const char* tag) {
    const std::string d = make_temp_dir(tag);
    for (const char* f : {"config.json", "model.safetensors"})
      fs::copy_file(fs::path(good) / f, fs::path(d) / f);
    return d;
  };
  const std::string w = "model.layers.0.mamba.in_proj.weight";  // q4 [512, 128] -> U8 [512, 64]
  {
    const std::string d = copy("q_noscale");
    edit_tensors(d, [&](std::vector<RawTensor>& ts) { drop_tensor(ts, w + ".scale"); });
    expect_load_error(d, {"missing tensor", w + ".scale", "BF16", "[512,4]"});
  }
  {
    const std::string d = copy("q_scaleshape");
    edit_tensors(d, [&](std::vector<RawTensor>& ts) {
      RawTensor* t = find_tensor(ts, w + ".scale");
      t->shape = {512 * 4};
    });
    expect_load_error(d, {w + ".scale", "expected shape [512,4]", "got [2048]"});
  }
  {
    const std::string d = copy("q_wshape");
    edit_tensors(d, [&](std::vector<RawTensor>& ts) {
      RawTensor* t = find_tensor(ts, w);
      t->shape = {256, 128};
    });
    expect_load_error(d, {w, "expected shape [512,64]", "got [256,128]"});
  }
  {
    const std::string d = copy("q_wdtype");
    edit_tensors(d, [&](std::vector<RawTensor>& ts) { find_tensor(ts, w)->dtype = DType::I8; });
    expect_load_error(d, {w, "expected dtype U8", "got I8"});
  }
  {
    const std::string d = copy("q_float");  // a float tensor where a quantized one belongs
    edit_tensors(d, [&](std::vector<RawTensor>& ts) {
      drop_tensor(ts, w);
      drop_tensor(ts, w + ".scale");
      ts.push_back(RawTensor::from_f32(w, {512, 128}, std::vector<float>(512 * 128, 0.5f)));
    });
    expect_load_error(d, {w, "expected dtype U8", "got F32"});
  }
  {
    const std::string d = copy("q_method");
    edit_config(d, [](json& j) { j["quantization_config"]["quant_method"] = "gptq"; });
    expect_load_error(d, {"config.json", "quant_method 'gptq'", "jamba.cpp"});
  }
  {
    const std::string d = copy("q_group");
    edit_config(d, [](json& j) { j["quantization_config"]["group_size"] = 64; });
    expect_load_error(d, {"config.json", "group_size 64", "expected 32"});
  }
  {
    const std::string d = copy("q_scaledtype");  // version 2 q4 says its scales are f32
    edit_config(d, [](json& j) { j["quantization_config"]["scale_dtype"] = "F32"; });
    expect_load_error(d, {"config.json", "scale_dtype 'F32'", "expected BF16"});
  }
  {
    const std::string d = copy("q_version");
    edit_config(d, [](json& j) { j["quantization_config"]["format_version"] = 3; });
    expect_load_error(d, {"config.json", "format_version 3", "expected 1 or 2"});
  }
  {
    const std::string d = copy("q_noconfig");  // quantized tensors, config without the entry
    edit_config(d, [](json& j) { j.erase("quantization_config"); });
    expect_load_error(d, {"dtype U8 not supported", "F32, BF16 or F16"});
  }
}

// Format version 1 (q4 scales in f32) still loads: its scales rounded to bf16 at load. Written
// here from a version 2 checkpoint (bf16 -> f32 is exact), so both must give the same logits.
TEST(QuantCheckpoint, Q4FormatVersion1Loads) {
  const std::string v2 = quantized_copy(golden_dir("gqa-moe"), WeightType::Q4);
  const std::string v1 = make_temp_dir("q_v1");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(fs::path(v2) / f, fs::path(v1) / f);
  int scales = 0;
  edit_tensors(v1, [&](std::vector<RawTensor>& ts) {
    for (RawTensor& t : ts)
      if (t.name.size() > 6 && t.name.compare(t.name.size() - 6, 6, ".scale") == 0 &&
          t.dtype == DType::BF16) {
        t = RawTensor::from_f32(t.name, t.shape, t.f32());
        ++scales;
      }
  });
  ASSERT_GT(scales, 0);
  edit_config(v1, [](json& j) {
    j["quantization_config"]["format_version"] = 1;
    j["quantization_config"]["scale_dtype"] = "F32";
  });
  const Model a = Model::load(v1), b = Model::load(v2);
  EXPECT_EQ(a.weights().matrix_bytes(), b.weights().matrix_bytes());
  EXPECT_EQ(logits(a, "gqa-moe"), logits(b, "gqa-moe"));
}

// A tied LM head under int8 / q4 is a quantized copy of the embedding (the row gather keeps the
// embedding as loaded); `jamba quantize` stores it as lm_head.weight, and a quantized checkpoint
// without it (written before) quantizes it at load to the same values.
TEST(QuantCheckpoint, TiedHeadQuantizedCopy) {
  for (WeightType t : {WeightType::Int8, WeightType::Q4}) {
    const std::string out = quantized_copy(golden_dir("tied-embeddings"), t);
    {
      auto f = SafetensorsFile::open(out + "/model.safetensors");
      EXPECT_EQ(f->get("lm_head.weight").dtype, t == WeightType::Q4 ? DType::U8 : DType::I8);
      EXPECT_EQ(f->get("model.embed_tokens.weight").dtype, DType::F32);
    }
    const Model saved = Model::load(out);
    EXPECT_NE(saved.weights().lm_head.quant, QuantKind::None);
    EXPECT_EQ(saved.weights().embed.quant, QuantKind::None);
    const std::string old = make_temp_dir("q_tied_old");
    for (const char* f : {"config.json", "model.safetensors"})
      fs::copy_file(fs::path(out) / f, fs::path(old) / f);
    edit_tensors(old, [&](std::vector<RawTensor>& ts) {
      drop_tensor(ts, "lm_head.weight");
      drop_tensor(ts, "lm_head.weight.scale");
    });
    const Model o = Model::load(old);
    EXPECT_EQ(logits(o, "tied-embeddings"), logits(saved, "tied-embeddings")) << weight_type_name(t);
  }
}

// `jamba quantize` end to end, then `jamba forward` on the result.
std::string sh(const std::string& cmd, int* rc) {
  std::string out;
  std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *rc = ::pclose(p);
  return out;
}

TEST(QuantCli, QuantizeThenInfo) {
  const std::string out = make_temp_dir("q_cli");
  int rc = 0;
  const std::string bin = JAMBA_BINARY;
  std::string text = sh("'" + bin + "' quantize --model '" + golden_dir("jamba-layout") +
                            "' --out '" + out + "/q' --type q4",
                        &rc);
  ASSERT_EQ(rc, 0) << text;
  EXPECT_NE(text.find("q4"), std::string::npos) << text;
  const json cfg = read_json(out + "/q/config.json");
  EXPECT_EQ(cfg["quantization_config"]["weight_type"], "q4");
  EXPECT_EQ(cfg["quantization_config"]["group_size"], 32);
  const Model saved = Model::load(out + "/q");
  const Model at_load = Model::load(golden_dir("jamba-layout"), {.weights = WeightType::Q4});
  EXPECT_EQ(logits(saved, "jamba-layout"), logits(at_load, "jamba-layout"));
  text = sh("'" + bin + "' info --model '" + out + "/q'", &rc);
  EXPECT_EQ(rc, 0) << text;
  text = sh("'" + bin + "' quantize --model '" + golden_dir("dense-tiny") + "' --out '" + out +
                "/bad' --type q3",
            &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(text.find("q3"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(out + "/bad/model.safetensors"));
}

}  // namespace
}  // namespace jamba
