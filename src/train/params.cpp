#include "train/params.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/init.h"
#include "model/weights.h"

namespace jamba {

size_t ParamStore::find(const std::string& name) const {
  auto it = index.find(name);
  if (it == index.end()) fail("[train] no parameter named '", name, "' in this config");
  return it->second;
}

ParamStore ParamStore::zeros(const JambaConfig& cfg) {
  ParamStore p;
  p.cfg = cfg;
  p.specs = param_list(cfg);
  for (size_t i = 0; i < p.specs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : p.specs[i].shape) n *= d;
    p.data.emplace_back(static_cast<size_t>(n), 0.0f);  // [numel]
    p.index[p.specs[i].name] = i;
  }
  return p;
}

ParamStore ParamStore::random(const JambaConfig& cfg, uint64_t seed, double std) {
  ParamStore p = zeros(cfg);
  for (size_t i = 0; i < p.size(); ++i) {
    const ParamSpec& s = p.specs[i];
    init_values(p.data[i].data(), p.data[i].size(), int(s.init), s.shape.back(), std,
                cfg.pad_token_id, seed, uint64_t(i));
  }
  return p;
}

ParamStore ParamStore::load(const std::string& dir) {
  const JambaConfig cfg =
      JambaConfig::from_file((std::filesystem::path(dir) / "config.json").string());
  ParamStore p = zeros(cfg);
  Checkpoint ck = Checkpoint::open(dir);
  std::vector<uint8_t> seen(p.size(), 0);
  for (const auto& [name, t] : ck.tensors()) {
    const std::string c = canonical_tensor_name(name, cfg);
    if (cfg.tie_word_embeddings && c == "lm_head.weight") continue;  // HF ties it to embed
    auto it = p.index.find(c);
    if (it == p.index.end())
      fail(t.file, ": unexpected tensor '", name, "' ", dtype_name(t.dtype), shape_str(t.shape),
           " (not a parameter of this config)");
    const size_t i = it->second;
    if (t.shape != p.specs[i].shape)
      fail(t.file, ": tensor '", name, "': expected shape ", shape_str(p.specs[i].shape),
           ", got ", shape_str(t.shape));
    if (seen[i]) fail(t.file, ": tensor '", name, "' appears twice (after name mapping)");
    p.data[i] = tensor_to_f32(t);
    seen[i] = 1;
  }
  for (size_t i = 0; i < p.size(); ++i)
    if (!seen[i]) fail(dir, ": checkpoint has no tensor '", p.specs[i].name, "'");
  return p;
}

Weights ParamStore::view() const {
  std::map<std::string, TensorInfo> t;
  for (size_t i = 0; i < size(); ++i) {
    TensorInfo& ti = t[specs[i].name];
    ti.name = specs[i].name;
    ti.dtype = DType::F32;
    ti.shape = specs[i].shape;
    ti.data = reinterpret_cast<const uint8_t*>(data[i].data());
    ti.nbytes = data[i].size() * sizeof(float);
    ti.file = "[train] parameters";
  }
  return Weights::view_f32(cfg, Checkpoint::in_memory("[train] parameters", std::move(t)));
}

Grads::Grads(const ParamStore& p)
    : g_(p.size()), numel_(p.size()), present_(p.size(), 0) {
  for (size_t i = 0; i < p.size(); ++i) {
    numel_[i] = p.data[i].size();
    by_ptr_[p.data[i].data()] = i;
  }
}

float* Grads::slot(const float* param) {
  const auto it = by_ptr_.find(param);
  return it == by_ptr_.end() ? nullptr : acc(it->second);
}

bool Grads::made_for(const ParamStore& p) const {
  if (p.size() != g_.size()) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    const auto it = by_ptr_.find(p.data[i].data());
    if (it == by_ptr_.end() || it->second != i) return false;
  }
  return true;
}

float* Grads::acc(size_t i) {
  if (!present_[i]) {
    g_[i].assign(numel_[i], 0.0f);  // [numel]
    present_[i] = 1;
  }
  return g_[i].data();
}

void Grads::clear() {
  for (size_t i = 0; i < g_.size(); ++i) {
    g_[i].clear();  // capacity kept: the next step refills it without new pages
    present_[i] = 0;
  }
}

std::vector<std::string> hf_parameter_order(const JambaConfig& c) {
  std::vector<std::string> n{"model.embed_tokens.weight"};
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) {
    const std::string l = "model.layers." + std::to_string(il);
    const LayerSpec& s = c.layers[static_cast<size_t>(il)];
    if (s.mixer == MixerKind::Mamba) {
      const std::string m = l + ".mamba.";
      for (const char* x : {"A_log", "D", "conv1d.weight"}) n.push_back(m + x);
      if (c.mamba_conv_bias) n.push_back(m + "conv1d.bias");
      n.push_back(m + "in_proj.weight");
      if (c.mamba_proj_bias) n.push_back(m + "in_proj.bias");
      for (const char* x : {"x_proj.weight", "dt_proj.weight", "dt_proj.bias", "out_proj.weight"})
        n.push_back(m + x);
      if (c.mamba_proj_bias) n.push_back(m + "out_proj.bias");
      for (const char* x : {"dt_layernorm.weight", "b_layernorm.weight", "c_layernorm.weight"})
        n.push_back(m + x);
    } else {
      for (const char* x : {"q_proj", "k_proj", "v_proj", "o_proj"})
        n.push_back(l + ".self_attn." + x + ".weight");
    }
    const std::string f = l + ".feed_forward.";
    auto mlp = [&](const std::string& pre) {
      for (const char* x : {"gate_proj", "up_proj", "down_proj"}) n.push_back(pre + x + ".weight");
    };
    if (s.ffn == FfnKind::Moe) {
      n.push_back(f + "router.weight");
      for (int64_t e = 0; e < c.num_experts; ++e) mlp(f + "experts." + std::to_string(e) + ".");
    } else {
      mlp(f);
    }
    n.push_back(l + ".input_layernorm.weight");
    n.push_back(l + ".pre_ff_layernorm.weight");
  }
  n.push_back("model.final_layernorm.weight");
  if (!c.tie_word_embeddings) n.push_back("lm_head.weight");
  return n;
}

bool is_norm_bias_or_embedding(const std::string& name) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends("layernorm.weight") || ends(".bias") || name == "model.embed_tokens.weight";
}

}  // namespace jamba
