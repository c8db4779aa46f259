// Trainable parameters and their gradients, by HF name. Parameters are owned float32 copies
// (the inference Weights are read-only views of a mapped file); gradients keep torch's
// "grad is None" state explicitly: a parameter whose gradient was never touched in a backward
// (an MoE expert that received no token) has no gradient, and clipping and AdamW skip it.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/param_list.h"
#include "model/weights.h"

namespace jamba {

struct ParamStore {
  JambaConfig cfg;
  std::vector<ParamSpec> specs;          // param_list(cfg) order
  std::vector<std::vector<float>> data;  // one float32 tensor per spec
  std::map<std::string, size_t> index;   // HF name -> position in specs

  size_t size() const { return specs.size(); }
  int64_t numel(size_t i) const { return int64_t(data[i].size()); }
  size_t find(const std::string& name) const;  // throws naming the parameter
  bool has(const std::string& name) const { return index.count(name) != 0; }

  // Every parameter of cfg, all zeros.
  static ParamStore zeros(const JambaConfig& cfg);
  // Every parameter drawn from its default init (spec §6) with `std` for the normal ones.
  static ParamStore random(const JambaConfig& cfg, uint64_t seed, double std);
  // config.json + safetensors of a checkpoint directory; every parameter must be present
  // (historical names are accepted), every tensor must be a parameter (a tied checkpoint's
  // lm_head.weight is ignored, as HF does).
  static ParamStore load(const std::string& dir);

  // The model's weights viewing these parameters in place (model/weights.h, Weights::view_f32):
  // what the forward runs on and the backward reads. Valid while the store lives and is not
  // resized; it sees later updates of the values (rebuild it for MambaWeights::A after a step).
  Weights view() const;
};

// Gradients with torch's None semantics.
class Grads {
 public:
  Grads() = default;
  explicit Grads(const ParamStore& p);

  size_t size() const { return g_.size(); }
  bool has(size_t i) const { return present_[i] != 0; }
  // The gradient buffer of parameter i, created as zeros (no longer None) on first use.
  float* acc(size_t i);
  const std::vector<float>& get(size_t i) const { return g_[i]; }  // empty when None
  // The gradient buffer (as acc) of the parameter whose values start at `param` (a weight's data
  // pointer in a view of the store), or null when it is not one of the store's parameters (a
  // frozen weight).
  float* slot(const float* param);
  // Whether this was made for the store p (its parameters at the same addresses).
  bool made_for(const ParamStore& p) const;
  std::vector<float>& mut(size_t i) { return g_[i]; }
  void clear();  // zero_grad(set_to_none=True): every gradient back to None

 private:
  std::vector<std::vector<float>> g_;
  std::vector<size_t> numel_;
  std::vector<uint8_t> present_;
  std::map<const float*, size_t> by_ptr_;  // parameter data -> index
};

// The parameter names in the order HF's named_parameters() lists them (a tied matrix once):
// per layer the mixer (Mamba: A_log, D, conv1d, in_proj, x_proj, dt_proj, out_proj, the three
// inner norms; attention: q, k, v, o), then feed_forward (router, experts), then
// input_layernorm, pre_ff_layernorm. param_list orders a layer differently (norms first);
// only the summation order of the clipping norm depends on it (float rounding, ~1e-7).
std::vector<std::string> hf_parameter_order(const JambaConfig& cfg);

// Weight-decay exclusion rule of the --exclude-from-decay option: RMSNorm weights
// (*layernorm.weight), biases (*.bias) and the embedding (model.embed_tokens.weight, which is
// also the tied lm_head).
bool is_norm_bias_or_embedding(const std::string& name);

}  // namespace jamba
