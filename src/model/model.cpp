#include "model/model.h"

#include <algorithm>
#include <filesystem>

#include "core/alloc.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "model/blocks.h"
#include "model/lora.h"

namespace jamba {

namespace kx = jamba::cpu;

WeightType weight_type_from_name(const std::string& name) {
  if (name == "auto") return WeightType::Auto;
  if (name == "f32") return WeightType::F32;
  if (name == "bf16") return WeightType::BF16;
  if (name == "int8") return WeightType::Int8;
  if (name == "int8-experts") return WeightType::Int8Experts;
  if (name == "q4") return WeightType::Q4;
  fail("unknown weight type '", name, "' (expected auto, f32, bf16, int8, int8-experts or q4)");
}

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::Auto: return "auto";
    case WeightType::F32: return "f32";
    case WeightType::BF16: return "bf16";
    case WeightType::Int8: return "int8";
    case WeightType::Int8Experts: return "int8-experts";
    case WeightType::Q4: return "q4";
  }
  return "?";
}

Model Model::load(const std::string& dir, LoadOptions opts) {
  const std::string cfg_path = (std::filesystem::path(dir) / "config.json").string();
  JambaConfig cfg = JambaConfig::from_file(cfg_path);
  Weights w = Weights::load(cfg, dir, opts.weights);
  if (!opts.lora.empty()) {
    // The adapter's float32 values move into w (w.owned) so that they live as long as w.
    LoraWeights lw = LoraWeights::load(opts.lora, cfg);
    std::vector<const float*> A, B;
    auto keep = [&](std::vector<float>& v) -> const float* {
      w.owned.push_back(std::make_unique<AlignedVector<float>>(v.begin(), v.end()));
      v = {};
      return w.owned.back()->data();
    };
    for (size_t i = 0; i < lw.modules.size(); ++i) {
      A.push_back(keep(lw.A[i]));
      B.push_back(keep(lw.B[i]));
    }
    attach_lora(w, cfg, lw.config, lw.modules, A, B);
  }
  set_matmul_activations(w, cfg, opts.activations);
  const KvDtype kv = resolve_kv_dtype(opts.kv, w.matrices_bf16);
  return Model(std::move(cfg), std::move(w), kv);
}

void set_matmul_activations(Weights& w, const JambaConfig& cfg, MatmulActivations a) {
  const bool bf16_act =
      a == MatmulActivations::Bf16 || (a == MatmulActivations::Auto && w.matrices_bf16);
  w.bf16_activations = false;
  auto set = [&](const Linear& l, bool gemm) {
    const_cast<Linear&>(l).bf16_activations = bf16_act && l.w16;
    if (gemm && l.bf16_activations) w.bf16_activations = true;
  };
  for_each_matrix(w, cfg, [&](const std::string&, const Linear& l) { set(l, &l != &w.embed); });
  set(w.lm_head, true);  // a tied head is its own Linear viewing the embedding
  // Choose the prefill GEMMs' route now, on all threads, rather than inside a first forward
  // that may run its experts side by side (kernels.h).
  if (w.bf16_activations) (void)kx::bf16_route();
}

MatmulActivations matmul_activations_from_name(const std::string& name) {
  if (name == "auto") return MatmulActivations::Auto;
  if (name == "f32") return MatmulActivations::F32;
  if (name == "bf16") return MatmulActivations::Bf16;
  fail("[--activations] expected auto, f32 or bf16, got '", name, "'");
}

void Model::forward(std::span<BatchItem> batch, ForwardOutput* out) const {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size;
  const float eps = float(cfg_.rms_norm_eps);
  // Validate everything before touching any state.
  int64_t M = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const BatchItem& it = batch[b];
    JAMBA_CHECK(it.state != nullptr, "[forward] batch item ", b, " has no state");
    JAMBA_CHECK(it.state->mamba.size() == cfg_.layers.size(), "[forward] batch item ", b,
                ": state was made for a model with ", it.state->mamba.size(),
                " layers, this model has ", cfg_.layers.size());
    JAMBA_CHECK(it.mask.empty() || it.mask.size() == it.tokens.size(), "[forward] batch item ", b,
                ": mask has ", it.mask.size(), " entries for ", it.tokens.size(), " tokens");
    for (size_t t = 0; t < it.tokens.size(); ++t)
      JAMBA_CHECK(it.tokens[t] >= 0 && it.tokens[t] < V, "[forward] batch item ", b,
                  ": token id ", it.tokens[t], " at position ", t, " is outside the vocabulary [0, ",
                  V, ")");
    for (size_t c = b + 1; c < batch.size(); ++c)
      JAMBA_CHECK(batch[c].state != it.state, "[forward] batch items ", b, " and ", c,
                  " share one state");
    M += int64_t(it.tokens.size());
  }
  // Plan rows.
  std::vector<Segment> segs;
  int64_t row = 0;
  for (BatchItem& it : batch) {
    const int64_t len = int64_t(it.tokens.size());
    bool any_pad = false;
    for (uint8_t m : it.mask) any_pad |= (m == 0);
    SequenceState& st = *it.state;
    segs.push_back({&st, row, len, st.pos, any_pad ? it.mask.data() : nullptr});
    for (int64_t t = 0; t < len; ++t) st.key_valid.push_back(it.mask.empty() ? 1 : it.mask[t] != 0);
    row += len;
  }
  // Embedding gather: [M] -> [M, D]
  Scratch h(static_cast<size_t>(M * D)), xn(static_cast<size_t>(M * D));
  for (size_t b = 0; b < batch.size(); ++b)
    embed_rows(w_.embed, batch[b].tokens.data(), segs[b].len, h.data() + segs[b].row0 * D);
  if (out->capture_hidden) {
    out->hidden.clear();
    out->hidden.push_back(h.to_vector());
  }
  forward_layers(cfg_, w_, segs, h.data(), M, 0, cfg_.layers.size(), nullptr,
                 out->capture_hidden ? &out->hidden : nullptr);
  for (Segment& s : segs) s.state->pos += s.len;

  // Final norm only on the rows we need (all of them when capturing hidden states).
  std::vector<int64_t> want;
  out->logit_row_offset.assign(1, 0);
  for (size_t b = 0; b < batch.size(); ++b) {
    const Segment& s = segs[b];
    if (batch[b].logits == LogitsMode::All)
      for (int64_t t = 0; t < s.len; ++t) want.push_back(s.row0 + t);
    else if (batch[b].logits == LogitsMode::Last && s.len > 0)
      want.push_back(s.row0 + s.len - 1);
    out->logit_row_offset.push_back(int64_t(want.size()));
  }
  RmsNormArgs n{.M = M, .D = D, .x = h.data(), .ldx = D, .w = w_.final_norm, .eps = eps,
                .y = xn.data(), .ldy = D};
  if (out->capture_hidden) {
    kx::rmsnorm(n);
    out->hidden.push_back(xn.to_vector());
  }
  const int64_t R = int64_t(want.size());
  std::vector<float> sel(static_cast<size_t>(R * D));
  for (int64_t r = 0; r < R; ++r) {
    n.M = 1;
    n.x = h.data() + want[size_t(r)] * D;
    n.y = sel.data() + r * D;
    if (out->capture_hidden)
      std::copy_n(xn.data() + want[size_t(r)] * D, D, sel.data() + r * D);
    else
      kx::rmsnorm(n);
  }
  // [R, D] @ [V, D]^T -> [R, V]
  out->logits.resize(static_cast<size_t>(R * V));
  linear_forward(w_.lm_head, sel.data(), R, out->logits.data());
}

}  // namespace jamba
