// Long context: the memory plan (`jamba info --context`, model/memory_plan.h) against the Jamba
// paper's Table 1, the bf16 K/V cache against f32 on the golden cases, a 32K-token prompt in one
// prefill vs in chunks, and how the cache grows up to and past the model's context.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint_util.h"
#include "cli_util.h"
#include "io/safetensors.h"
#include "model/init.h"
#include "model/memory_plan.h"
#include "model/model.h"
#include "model/model_info.h"
#include "model/presets.h"
#include "runtime/forward_tool.h"
#include "runtime/session_file.h"
#include "test_util.h"
#include "tolerances.h"

namespace jamba {
namespace {

using testutil::golden_dir;
constexpr int64_t GiB = int64_t(1) << 30;
constexpr int64_t k256K = 262144;

MemoryPlan plan(const JambaConfig& c, int64_t ctx, KvDtype kv, int64_t batch = 1) {
  return plan_memory(c, {.context = ctx, .batch = batch, .kv = kv, .weights = WeightType::BF16});
}

// Jamba paper, Table 1: KV cache at 256K tokens, 16-bit: Jamba 4GB, Mixtral 32GB, Llama-2 7B
// 128GB (binary units: 4 layers x 2 x 8 heads x 128 x 2 B x 262144 = 4 GiB).
TEST(MemoryPlan, ReproducesJambaPaperTable1) {
  const JambaConfig jamba = preset_config("mini");  // Jamba-v0.1 shape: 4 of 32 layers attention
  EXPECT_EQ(plan(jamba, k256K, KvDtype::BF16).n_attention, 4);
  EXPECT_EQ(plan(jamba, k256K, KvDtype::BF16).kv_bytes, 4 * GiB);
  // Mixtral-8x7B shape: 32 layers, all attention, 8 KV heads of 128 = mini with every layer attention.
  const JambaConfig mixtral = all_attention_variant(jamba);
  EXPECT_EQ(mixtral.n_attention_layers(), 32);
  EXPECT_EQ(plan(mixtral, k256K, KvDtype::BF16).kv_bytes, 32 * GiB);
  // Llama-2-7B shape: 32 layers of attention, 32 KV heads (MHA) of 128.
  JambaConfig llama = mixtral;
  llama.num_key_value_heads = 32;
  llama.num_experts = 1, llama.num_experts_per_tok = 1, llama.intermediate_size = 11008;
  llama.validate("llama-2-7b shape");
  llama.derive();
  EXPECT_EQ(plan(llama, k256K, KvDtype::BF16).kv_bytes, 128 * GiB);
}

TEST(MemoryPlan, PerLayerBreakdownAndScaling) {
  for (const char* p : {"r3b", "moe1b", "mini", "tiny"}) {
    SCOPED_TRACE(p);
    const JambaConfig c = preset_config(p);
    const MemoryPlan a = plan(c, 4096, KvDtype::BF16), b = plan(c, 4096, KvDtype::BF16, 3);
    const MemoryPlan f = plan(c, 4096, KvDtype::F32), d = plan(c, 8192, KvDtype::BF16);
    EXPECT_EQ(a.n_attention + a.n_mamba, c.num_hidden_layers);
    EXPECT_EQ(a.n_attention, c.n_attention_layers());
    EXPECT_EQ(a.kv_bytes, a.kv_bytes_per_layer * a.n_attention);
    EXPECT_EQ(a.kv_bytes_per_layer, 4096 * 2 * c.num_key_value_heads * c.head_dim() * 2);
    EXPECT_EQ(a.state_bytes, a.state_bytes_per_layer * a.n_mamba);
    EXPECT_EQ(a.state_bytes_per_layer, c.d_inner() * (c.mamba_d_conv + c.mamba_d_state) * 4);
    EXPECT_EQ(b.kv_bytes, 3 * a.kv_bytes);        // batch scales the cache and the state
    EXPECT_EQ(b.state_bytes, 3 * a.state_bytes);
    EXPECT_EQ(b.weight_bytes, a.weight_bytes);    // not the weights
    EXPECT_EQ(f.kv_bytes, 2 * a.kv_bytes);        // f32 = twice bf16
    EXPECT_EQ(d.kv_bytes, 2 * a.kv_bytes);        // linear in context
    EXPECT_EQ(d.state_bytes, a.state_bytes);      // the recurrent state does not grow
    EXPECT_EQ(a.total_bytes, a.weight_bytes + a.kv_bytes + a.state_bytes + a.scratch_bytes);
    // The per-token KV of model_stats (f32) agrees.
    EXPECT_EQ(f.kv_bytes, model_stats(c).kv_bytes_per_token * 4096);
  }
}

// The planned weight bytes are what Weights::load holds, for each weight type.
TEST(MemoryPlan, WeightBytesMatchTheLoader) {
  for (const char* name : {"dense-tiny", "gqa-moe", "tied-embeddings", "jamba-layout"})
    for (WeightType t : {WeightType::F32, WeightType::BF16, WeightType::Int8, WeightType::Int8Experts,
                         WeightType::Q4}) {
      SCOPED_TRACE(std::string(name) + " " + weight_type_name(t));
      const Model m = Model::load(golden_dir(name), {.weights = t});
      const JambaConfig& c = m.config();
      int64_t matrix_params = 0, matrix_bytes = 0;  // every matrix, routers included
      for_each_matrix(m.weights(), c, [&](const std::string& n, const Linear& l) {
        // A tied head listed is a quantized copy held besides the embedding: no parameters.
        if (!(c.tie_word_embeddings && n == "lm_head.weight")) matrix_params += l.out * l.in;
        matrix_bytes += int64_t(l.bytes());
      });
      if (c.tie_word_embeddings && (t == WeightType::Int8 || t == WeightType::Q4)) {
        EXPECT_NE(m.weights().lm_head.quant, QuantKind::None);
      }
      const int64_t vectors = (model_stats(c).params_total - matrix_params) * 4;  // held f32
      const MemoryPlan p = plan_memory(c, {.context = 16, .kv = KvDtype::F32, .weights = t});
      EXPECT_EQ(p.weight_bytes, matrix_bytes + vectors);
    }
}

TEST(MemoryPlan, InfoCommandPrintsTable1) {
  const auto r = testutil::run("info --preset mini --context 262144 --kv-dtype bf16");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("KV cache, all   4 layers (bf16):      4294967296 B  4.00 GiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("KV cache, all  32 layers (bf16):     34359738368 B  32.00 GiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(8.0x smaller)"), std::string::npos) << r.out;
  const std::string dir = testutil::make_temp_dir("llama-shape");
  JambaConfig llama = preset_config("mini");
  llama.attn_layer_period = 1, llama.attn_layer_offset = 0, llama.num_key_value_heads = 32;
  testutil::write_bytes(dir + "/config.json", llama.to_json_text());
  const auto l = testutil::run("info --config " + dir + "/config.json --context 262144 --kv-dtype bf16");
  ASSERT_EQ(l.rc, 0) << l.err;
  EXPECT_NE(l.out.find("KV cache, all  32 layers (bf16):    137438953472 B  128.00 GiB"), std::string::npos) << l.out;
  const auto bad = testutil::run("info --preset mini --context 100 --kv-dtype f16");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("[--kv-dtype] expected auto, f32 or bf16, got 'f16'"), std::string::npos) << bad.err;
}

// ------------------------------------------------------------------------------ bf16 K/V cache

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, int64_t w,
                   const std::vector<uint8_t>& mask) {
  return testing_util::max_row_diff(a, b, w, mask);
}

TEST(KvCacheBf16, GoldenCasesWithinTolerance) {
  for (const char* name : {"dense-tiny", "gqa-moe", "long-seq", "padded-batch", "jamba-layout",
                           "tied-embeddings"}) {
    SCOPED_TRACE(name);
    const std::string dir = golden_dir(name);
    const Model f32 = Model::load(dir), b16 = Model::load(dir, {.kv = KvDtype::BF16});
    ASSERT_EQ(f32.kv_dtype(), KvDtype::F32);  // auto on an f32 checkpoint
    ASSERT_EQ(b16.kv_dtype(), KvDtype::BF16);
    const TokenBatch in = read_token_batch(dir + "/golden.safetensors");
    const auto golden = tensor_to_f32(SafetensorsFile::open(dir + "/golden.safetensors")->get("logits"));
    const int64_t V = f32.config().vocab_size;
    const FullForwardResult a = full_forward(f32, in, false), b = full_forward(b16, in, false);
    const float d = max_abs_diff(b.logits, golden, V, in.mask);
    EXPECT_LE(d, std::string(name) == "jamba-layout" ? tol::kBf16KvCacheLogitsMoeFlips
                                                      : tol::kBf16KvCacheLogits);
    EXPECT_GT(max_abs_diff(b.logits, a.logits, V, in.mask), 0.0f) << "the bf16 cache changed nothing";
    // top-1 agreement with f32 at every real position
    int64_t same = 0, total = 0;
    for (size_t r = 0; r * size_t(V) < a.logits.size(); ++r) {
      if (!in.mask.empty() && !in.mask[r]) continue;
      ++total;
      same += argmax(a.logits.data() + r * V, V) == argmax(b.logits.data() + r * V, V);
    }
    EXPECT_GE(double(same), tol::kBf16KvCacheTop1 * double(total)) << same << "/" << total;
    std::printf("[bf16 KV] %-16s max |dlogits| vs golden %.3g (f32 cache %.3g), top-1 %lld/%lld\n", name, d,
                max_abs_diff(a.logits, golden, V, in.mask), (long long)same, (long long)total);
  }
}

TEST(KvCacheBf16, HalvesTheStateAndRoundTripsThroughASession) {
  const std::string dir = golden_dir("gqa-moe");
  const Model f32 = Model::load(dir), b16 = Model::load(dir, {.kv = KvDtype::BF16});
  const TokenBatch in = read_token_batch(dir + "/golden.safetensors");
  const std::vector<int32_t> toks(in.ids.begin(), in.ids.begin() + in.T);
  Session s;
  s.state = b16.new_state();
  SequenceState sf = f32.new_state();
  ForwardOutput out;
  std::vector<BatchItem> it{{&s.state, toks, {}, LogitsMode::Last}}, itf{{&sf, toks, {}, LogitsMode::Last}};
  b16.forward(it, &out);
  f32.forward(itf, &out);
  s.tokens = toks;
  int64_t kv16 = 0, kv32 = 0;
  for (size_t il = 0; il < s.state.attn.size(); ++il) {
    kv16 += int64_t(s.state.attn[il].bytes()), kv32 += int64_t(sf.attn[il].bytes());
    EXPECT_EQ(s.state.attn[il].cap, sf.attn[il].cap);
  }
  EXPECT_GT(kv32, 0);
  EXPECT_EQ(2 * kv16, kv32);
  const std::string path = testutil::make_temp_dir("kv16") + "/s.safetensors";
  save_session(path, b16, s);
  const Session t = load_session(path, b16);
  const int64_t nkv = b16.config().num_key_value_heads, hd = b16.config().head_dim();
  for (size_t il = 0; il < s.state.attn.size(); ++il) {
    const AttnLayerState &a = s.state.attn[il], &b = t.state.attn[il];
    if (a.cap == 0) continue;
    ASSERT_TRUE(b.bf16);
    for (int64_t g = 0; g < nkv; ++g)
      for (int which = 0; which < 2; ++which) {
        const auto& x = which ? a.v16 : a.k16;
        const auto& y = which ? b.v16 : b.k16;
        EXPECT_EQ(0, std::memcmp(x.data() + g * a.cap * hd, y.data() + g * b.cap * hd,
                                 size_t(in.T * hd) * 2)) << "layer " << il << " head " << g;
      }
  }
}

// SequenceState::reserve_tokens: the cache at exactly the asked size up front (what `jamba bench`
// does before a long fill), the same logits as a cache grown on demand, never shrunk.
TEST(KvCacheReserve, ExactCapacityUpFrontSameLogits) {
  const std::string dir = golden_dir("gqa-moe");
  const Model m = Model::load(dir);
  const TokenBatch in = read_token_batch(dir + "/golden.safetensors");
  const std::vector<int32_t> toks(in.ids.begin(), in.ids.begin() + in.T);
  SequenceState grown = m.new_state(), reserved = m.new_state();
  const int64_t n = in.T + 1000 + 3;
  reserved.reserve_tokens(m.config(), n);
  int attn_layers = 0;
  for (size_t il = 0; il < m.config().layers.size(); ++il)
    if (m.config().layers[il].mixer == MixerKind::Attention) {
      ++attn_layers;
      EXPECT_EQ(reserved.attn[il].cap, n);
    }
  ASSERT_GT(attn_layers, 0);
  ForwardOutput a, b;
  std::vector<BatchItem> ia{{&grown, toks, {}, LogitsMode::All}}, ib{{&reserved, toks, {}, LogitsMode::All}};
  m.forward(ia, &a);
  m.forward(ib, &b);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  EXPECT_EQ(0, std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)));
  reserved.reserve_tokens(m.config(), 10);  // smaller: nothing changes
  for (size_t il = 0; il < m.config().layers.size(); ++il)
    if (m.config().layers[il].mixer == MixerKind::Attention) {
      EXPECT_EQ(reserved.attn[il].cap, n);
      EXPECT_LT(grown.attn[il].cap, n);
    }
}

// --------------------------------------------------------------------------- long prompts

// A 32K-token prompt in one forward = the same prompt in chunks of 1000 (attention across many
// key tiles, the cache grown by doubling up to its limit, the recurrent state carried).
// The tiny preset with one head of 64 (head dim 16 makes attention GEMMs slow, not the test
// stronger); f32 cache at 32K (exact up to summation order), bf16 cache at 8K.
TEST(LongContext, ChunkedPrefillEqualsOnePrefillAt32K) {
  JambaConfig c = preset_config("tiny");
  c.num_attention_heads = c.num_key_value_heads = 1;
  c.max_position_embeddings = 32768;
  c.validate("test");
  c.derive();
  const std::string dir = testutil::make_temp_dir("long32k");
  init_checkpoint(c, dir, 7, DType::F32);
  for (KvDtype kv : {KvDtype::F32, KvDtype::BF16}) {
    SCOPED_TRACE(kv_dtype_name(kv));
    const int64_t n_tok = kv == KvDtype::F32 ? 32768 : 8192;
    c.max_position_embeddings = n_tok;
    testutil::write_bytes(dir + "/config.json", c.to_json_text());
    const Model m = Model::load(dir, {.kv = kv});
    std::vector<int32_t> toks(static_cast<size_t>(n_tok));
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(3 + (i * 7919) % size_t(c.vocab_size - 3));
    SequenceState one = m.new_state(), ch = m.new_state();
    ForwardOutput a, b;
    std::vector<BatchItem> all{{&one, toks, {}, LogitsMode::Last}};
    m.forward(all, &a);
    for (size_t i = 0; i < toks.size(); i += 1000) {
      const size_t n = std::min<size_t>(1000, toks.size() - i);
      std::vector<BatchItem> part{{&ch, {toks.data() + i, n}, {}, LogitsMode::Last}};
      m.forward(part, &b);
    }
    ASSERT_EQ(a.logits.size(), b.logits.size());
    const float d = max_abs_diff(a.logits, b.logits, c.vocab_size, {});
    EXPECT_LE(d, tol::kChunkedPrefill32K);
    std::printf("[long prompt] %lld tokens, %s cache: one prefill vs chunks of 1000: max |dlogits| %.3g\n",
                (long long)n_tok, kv_dtype_name(kv), d);
    for (size_t il = 0; il < c.layers.size(); ++il)
      if (c.layers[il].mixer == MixerKind::Attention) {
        EXPECT_EQ(one.attn[il].cap, n_tok);  // exactly the context: never doubled past it
        EXPECT_EQ(ch.attn[il].cap, n_tok);
      }
    // Past the context the cache grows by an eighth, not by doubling.
    int32_t next = 5;
    std::vector<BatchItem> step{{&ch, {&next, 1}, {}, LogitsMode::Last}};
    m.forward(step, &b);
    for (size_t il = 0; il < c.layers.size(); ++il)
      if (c.layers[il].mixer == MixerKind::Attention) {
        EXPECT_EQ(ch.attn[il].cap, n_tok + n_tok / 8);
      }
  }
}

}  // namespace
}  // namespace jamba
