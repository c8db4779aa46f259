#include "model/weights.h"

#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "model/model.h"

namespace jamba {

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
}

// Resolves canonical names to tensors, checks dtype/shape, records what was consumed.
class Loader {
 public:
  Loader(const JambaConfig& cfg, Weights& w) : cfg_(cfg), w_(w) {
    for (const auto& [name, t] : w.checkpoint.tensors()) {
      std::string c = canonical_tensor_name(name, cfg);
      if (by_canon_.count(c))
        fail(t.file, ": tensors '", by_canon_[c]->name, "' and '", name,
             "' both map to the same parameter '", c, "'");
      by_canon_[c] = &t;
      w.file_bytes += t.nbytes;
    }
  }

  bool has(const std::string& name) const { return by_canon_.count(name) != 0; }

  const TensorInfo& info(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = by_canon_.find(name);
    if (it == by_canon_.end())
      fail(w_.checkpoint.dir(), ": missing tensor '", name, "' (expected shape ",
           shape_str(shape), ")");
    const TensorInfo& t = *it->second;
    if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
      fail(t.file, ": tensor '", t.name, "': dtype ", dtype_name(t.dtype),
           " not supported (expected F32, BF16 or F16)");
    if (t.shape != shape)
      fail(t.file, ": tensor '", t.name, "': expected shape ", shape_str(shape), ", got ",
           shape_str(t.shape));
    used_.insert(name);
    return t;
  }

  const float* get(const std::string& name, const std::vector<int64_t>& shape) {
    return to_f32(info(name, shape));
  }

  const float* get_opt(const std::string& name, const std::vector<int64_t>& shape) {
    return has(name) ? get(name, shape) : nullptr;
  }

  const float* to_f32(const TensorInfo& t) {
    if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0)
      return reinterpret_cast<const float*>(t.data);
    w_.owned.push_back(std::make_unique<std::vector<float>>(tensor_to_f32(t)));
    return w_.owned.back()->data();
  }

  // A big matrix in the requested in-memory type: bf16 tensors are used in place when bf16 is
  // wanted; anything else is converted once.
  void fill_matrix(const TensorInfo& t, const uint8_t* data, int64_t rows, int64_t cols,
                   Linear* l) {
    l->out = rows;
    l->in = cols;
    const size_t n = size_t(rows * cols);
    if (!bf16_) {
      if (data == t.data) {
        l->w = to_f32(t);
      } else {
        w_.owned.push_back(std::make_unique<std::vector<float>>(n));
        convert_to_f32(t.dtype, data, w_.owned.back()->data(), n);
        l->w = w_.owned.back()->data();
      }
      return;
    }
    if (t.dtype == DType::BF16) {
      l->w16 = reinterpret_cast<const uint16_t*>(data);
      return;
    }
    std::vector<float> f(n);
    convert_to_f32(t.dtype, data, f.data(), n);
    w_.owned16.push_back(std::make_unique<std::vector<uint16_t>>(n));
    for (size_t i = 0; i < n; ++i) (*w_.owned16.back())[i] = f32_to_bf16(f[i]);
    l->w16 = w_.owned16.back()->data();
  }
  void set_bf16(bool b) { bf16_ = want_bf16_ = b; }
  void set_bf16_scoped(bool on) { bf16_ = on && want_bf16_; }

  void finish() {
    for (const auto& [c, t] : by_canon_)
      if (!used_.count(c))
        fail(t->file, ": unexpected tensor '", t->name, "' ", dtype_name(t->dtype),
             shape_str(t->shape), " (not a parameter of this config)");
  }

 private:
  const JambaConfig& cfg_;
  Weights& w_;
  std::map<std::string, const TensorInfo*> by_canon_;
  std::set<std::string> used_;
  bool bf16_ = false, want_bf16_ = false;
};

Linear linear(Loader& L, const std::string& prefix, int64_t out, int64_t in, bool bias) {
  Linear l;
  l.out = out;
  l.in = in;
  const TensorInfo& t = L.info(prefix + ".weight", {out, in});
  L.fill_matrix(t, t.data, out, in, &l);
  if (bias) l.b = L.get(prefix + ".bias", {out});
  return l;
}

// Small matrices whose f32 values matter (router decisions, dt) stay f32.
Linear linear_f32(Loader& L, const std::string& prefix, int64_t out, int64_t in, bool bias) {
  L.set_bf16_scoped(false);
  Linear l = linear(L, prefix, out, in, bias);
  L.set_bf16_scoped(true);
  return l;
}

MlpWeights mlp(Loader& L, const std::string& p, int64_t D, int64_t I) {
  return {linear(L, p + ".gate_proj", I, D, false), linear(L, p + ".up_proj", I, D, false),
          linear(L, p + ".down_proj", D, I, false)};
}

}  // namespace

std::string canonical_tensor_name(const std::string& name, const JambaConfig& cfg) {
  std::string s = name;
  replace_all(s, ".moe.", ".feed_forward.");
  replace_all(s, ".pre_moe_layernorm.", ".pre_ff_layernorm.");
  replace_all(s, ".mamba.B_layernorm.", ".mamba.b_layernorm.");
  replace_all(s, ".mamba.C_layernorm.", ".mamba.c_layernorm.");
  // Dense layers stored as a 1-expert MoE: model.layers.{i}.feed_forward.experts.0.X ->
  // model.layers.{i}.feed_forward.X
  const std::string head = "model.layers.", mid = ".feed_forward.experts.0.";
  if (s.rfind(head, 0) == 0) {
    const size_t dot = s.find('.', head.size());
    const std::string num = s.substr(head.size(), dot == std::string::npos ? 0 : dot - head.size());
    if (!num.empty() && num.size() < 10 &&
        num.find_first_not_of("0123456789") == std::string::npos &&
        s.compare(dot, mid.size(), mid) == 0) {
      const int64_t il = std::stoll(num);
      if (il < int64_t(cfg.layers.size()) && cfg.layers[size_t(il)].ffn == FfnKind::Dense)
        s = head + num + ".feed_forward." + s.substr(dot + mid.size());
    }
  }
  return s;
}

size_t Weights::matrix_bytes() const {
  size_t b = embed.bytes() + (lm_head.w == embed.w && lm_head.w16 == embed.w16 ? 0 : lm_head.bytes());
  auto mlp_bytes = [](const MlpWeights& m) { return m.gate.bytes() + m.up.bytes() + m.down.bytes(); };
  for (const LayerWeights& l : layers) {
    b += l.mamba.in_proj.bytes() + l.mamba.x_proj.bytes() + l.mamba.dt_proj.bytes() +
         l.mamba.out_proj.bytes();
    b += l.attn.q.bytes() + l.attn.k.bytes() + l.attn.v.bytes() + l.attn.o.bytes();
    b += mlp_bytes(l.mlp);
    for (const MlpWeights& e : l.moe.experts) b += mlp_bytes(e);
  }
  return b;
}

Weights Weights::load(const JambaConfig& cfg, const std::string& dir, WeightType type) {
  Weights w;
  w.checkpoint = Checkpoint::open(dir);
  Loader L(cfg, w);
  if (type == WeightType::Auto) {
    const TensorInfo* e = w.checkpoint.find("model.embed_tokens.weight");
    type = e && e->dtype == DType::BF16 ? WeightType::BF16 : WeightType::F32;
  }
  w.matrices_bf16 = type == WeightType::BF16;
  L.set_bf16(w.matrices_bf16);
  const int64_t D = cfg.hidden_size, V = cfg.vocab_size, I = cfg.intermediate_size;
  const int64_t Din = cfg.d_inner(), N = cfg.mamba_d_state, R = cfg.mamba_dt_rank,
                K = cfg.mamba_d_conv;
  const int64_t nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads, hd = cfg.head_dim();
  const int64_t E = cfg.num_experts;

  w.embed = linear(L, "model.embed_tokens", V, D, false);
  w.final_norm = L.get("model.final_layernorm.weight", {D});
  if (cfg.tie_word_embeddings) {
    w.lm_head = w.embed;
    if (L.has("lm_head.weight")) L.info("lm_head.weight", {V, D});  // present but ignored (HF)
  } else {
    w.lm_head = linear(L, "lm_head", V, D, false);
  }

  for (int64_t il = 0; il < cfg.num_hidden_layers; ++il) {
    const std::string p = "model.layers." + std::to_string(il);
    const LayerSpec& spec = cfg.layers[size_t(il)];
    LayerWeights lw;
    lw.input_norm = L.get(p + ".input_layernorm.weight", {D});
    lw.pre_ff_norm = L.get(p + ".pre_ff_layernorm.weight", {D});
    if (spec.mixer == MixerKind::Mamba) {
      const std::string m = p + ".mamba";
      MambaWeights& mw = lw.mamba;
      mw.in_proj = linear(L, m + ".in_proj", 2 * Din, D, cfg.mamba_proj_bias);
      // conv1d.weight is [Din, 1, K]; some exporters squeeze it to [Din, K].
      if (L.has(m + ".conv1d.weight") &&
          w.checkpoint.find(m + ".conv1d.weight") &&
          w.checkpoint.find(m + ".conv1d.weight")->shape.size() == 2)
        mw.conv_w = L.get(m + ".conv1d.weight", {Din, K});
      else
        mw.conv_w = L.get(m + ".conv1d.weight", {Din, 1, K});
      if (cfg.mamba_conv_bias) mw.conv_b = L.get(m + ".conv1d.bias", {Din});
      mw.x_proj = linear(L, m + ".x_proj", R + 2 * N, Din, false);
      mw.dt_proj = linear_f32(L, m + ".dt_proj", Din, R, true);
      mw.out_proj = linear(L, m + ".out_proj", D, Din, cfg.mamba_proj_bias);
      const auto a_log = tensor_to_f32(L.info(m + ".A_log", {Din, N}));
      mw.A.resize(a_log.size());
      for (size_t i = 0; i < a_log.size(); ++i) mw.A[i] = -std::exp(a_log[i]);
      mw.D = L.get(m + ".D", {Din});
      mw.dt_norm = L.get(m + ".dt_layernorm.weight", {R});
      mw.b_norm = L.get(m + ".b_layernorm.weight", {N});
      mw.c_norm = L.get(m + ".c_layernorm.weight", {N});
    } else {
      const std::string a = p + ".self_attn";
      lw.attn.q = linear(L, a + ".q_proj", nh * hd, D, false);
      lw.attn.k = linear(L, a + ".k_proj", nkv * hd, D, false);
      lw.attn.v = linear(L, a + ".v_proj", nkv * hd, D, false);
      lw.attn.o = linear(L, a + ".o_proj", D, nh * hd, false);
    }
    const std::string f = p + ".feed_forward";
    if (spec.ffn == FfnKind::Dense) {
      lw.mlp = mlp(L, f, D, I);
    } else {
      lw.moe.router = linear_f32(L, f + ".router", E, D, false);
      if (L.has(f + ".experts.gate_up_proj")) {
        // transformers v5 fused layout (spec §5.2): gate_up [E, 2I, D], down [E, D, I].
        const TensorInfo& gu = L.info(f + ".experts.gate_up_proj", {E, 2 * I, D});
        const TensorInfo& dn = L.info(f + ".experts.down_proj", {E, D, I});
        const size_t es = dtype_size(gu.dtype);
        for (int64_t e = 0; e < E; ++e) {
          MlpWeights x;
          L.fill_matrix(gu, gu.data + size_t(e * 2 * I * D) * es, I, D, &x.gate);
          L.fill_matrix(gu, gu.data + size_t((e * 2 + 1) * I * D) * es, I, D, &x.up);
          L.fill_matrix(dn, dn.data + size_t(e * D * I) * es, D, I, &x.down);
          lw.moe.experts.push_back(x);
        }
      } else {
        for (int64_t e = 0; e < E; ++e)
          lw.moe.experts.push_back(mlp(L, f + ".experts." + std::to_string(e), D, I));
      }
    }
    w.layers.push_back(std::move(lw));
  }
  L.finish();
  return w;
}

}  // namespace jamba
