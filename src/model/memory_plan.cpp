#include "model/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "kernels/quant.h"
#include "model/param_list.h"

namespace jamba {

KvDtype kv_dtype_from_name(const std::string& name) {
  if (name == "auto") return KvDtype::Auto;
  if (name == "f32") return KvDtype::F32;
  if (name == "bf16") return KvDtype::BF16;
  fail("[--kv-dtype] expected auto, f32 or bf16, got '", name, "'");
}

const char* kv_dtype_name(KvDtype t) {
  switch (t) {
    case KvDtype::Auto: return "auto";
    case KvDtype::F32: return "f32";
    case KvDtype::BF16: return "bf16";
  }
  return "?";
}

KvDtype resolve_kv_dtype(KvDtype requested, bool matrices_bf16) {
  if (requested != KvDtype::Auto) return requested;
  return matrices_bf16 ? KvDtype::BF16 : KvDtype::F32;
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Bytes of one parameter as Weights::load holds it (weights.cpp: Role / quant_for).
int64_t held_bytes(const ParamSpec& p, const MemoryPlanOptions& o) {
  int64_t n = 1;
  for (int64_t d : p.shape) n *= d;
  const bool matrix = p.shape.size() == 2 && ends_with(p.name, ".weight") && !contains(p.name, "A_log");
  if (!matrix) return n * 4;  // norms, conv, biases, A, D: f32
  const int64_t out = p.shape[0], in = p.shape[1];
  const bool quant = o.weights == WeightType::Int8 || o.weights == WeightType::Int8Experts ||
                     o.weights == WeightType::Q4;
  const int64_t base = o.weights == WeightType::BF16 || (quant && o.base_bf16) ? 2 : 4;
  if (contains(p.name, "embed_tokens")) return n * base;
  if (contains(p.name, "dt_proj") || contains(p.name, "router")) return n * 4;
  const bool expert = contains(p.name, ".experts.");
  const bool lm_head = contains(p.name, "lm_head");
  const bool q8 = o.weights == WeightType::Int8 || (expert && o.weights == WeightType::Int8Experts);
  if (q8) return out * in + out * 4;
  if (o.weights == WeightType::Q4) return out * q4_row_bytes(in) + out * q4_groups(in) * 2;
  (void)lm_head;
  return n * base;
}

}  // namespace

MemoryPlan plan_memory(const JambaConfig& c, const MemoryPlanOptions& o) {
  JAMBA_CHECK(o.context >= 0 && o.batch >= 1 && o.chunk >= 1, "[memory plan] context ", o.context,
              ", batch ", o.batch, ", chunk ", o.chunk, ": expected context >= 0, batch >= 1, chunk >= 1");
  JAMBA_CHECK(o.kv != KvDtype::Auto, "[memory plan] the K/V dtype must be resolved");
  MemoryPlan p;
  for (const ParamSpec& s : param_list(c)) p.weight_bytes += held_bytes(s, o);
  // A tied LM head under int8 / q4 is a quantized copy of the embedding (weights.cpp).
  if (c.tie_word_embeddings && (o.weights == WeightType::Int8 || o.weights == WeightType::Q4))
    p.weight_bytes += held_bytes({"lm_head.weight", {c.vocab_size, c.hidden_size}, InitKind::Normal}, o);
  const int64_t D = c.hidden_size, Din = c.d_inner(), N = c.mamba_d_state, K = c.mamba_d_conv;
  const int64_t R = c.mamba_dt_rank, S = R + 2 * N, I = c.intermediate_size;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim();
  const int64_t E = c.num_experts, k = c.num_experts_per_tok;
  const int64_t ctx = checked_mul(o.context, o.batch, "memory plan: context * batch");
  p.kv_bytes_per_layer = checked_mul(ctx, 2 * nkv * hd * kv_elem_bytes(o.kv), "memory plan: KV bytes");
  p.state_bytes_per_layer = o.batch * Din * (K + N) * 4;
  // Activation scratch of one forward of C rows, floats (blocks.cpp / model.cpp): the residual,
  // normed input and block output [C, D] live throughout; inside, the largest block adds its own.
  const int64_t C = std::min<int64_t>(o.chunk, std::max<int64_t>(ctx, 1));
  int64_t block = 0;
  bool any_moe = false, any_dense = false;
  for (const LayerSpec& l : c.layers) {
    if (l.mixer == MixerKind::Mamba) {
      ++p.n_mamba;
      block = std::max(block, C * (5 * Din + S));           // xz, xc, sbc, dt, y
    } else {
      ++p.n_attention;
      block = std::max(block, C * (2 * nh * hd + 2 * nkv * hd));  // q, k, v, o
    }
    (l.ffn == FfnKind::Moe ? any_moe : any_dense) = true;
  }
  if (any_dense) block = std::max(block, 2 * C * I);  // gate, up
  // router probabilities, every routed row's output, one expert's rows in flight (gate, up, x)
  if (any_moe) block = std::max(block, C * E + C * k * D + C * (D + 2 * I));
  p.scratch_bytes = (3 * C * D + block + c.vocab_size) * 4;
  p.kv_bytes = p.kv_bytes_per_layer * p.n_attention;
  p.state_bytes = p.state_bytes_per_layer * p.n_mamba;
  p.total_bytes = p.weight_bytes + p.kv_bytes + p.state_bytes + p.scratch_bytes;
  return p;
}

JambaConfig all_attention_variant(const JambaConfig& cfg) {
  JambaConfig c = cfg;
  c.attn_layer_period = 1;
  c.attn_layer_offset = 0;
  c.derive();
  return c;
}

std::string human_bytes(double bytes) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (bytes >= 1024 && i < 4) bytes /= 1024, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", bytes, u[i]);
  return buf;
}

}  // namespace jamba
