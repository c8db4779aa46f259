#include "model/state.h"

#include <algorithm>

namespace jamba {

void AttnLayerState::reserve(int64_t nkv, int64_t hd, int64_t new_cap, int64_t len) {
  if (new_cap <= cap) return;
  new_cap = std::max(new_cap, std::max<int64_t>(2 * cap, 64));
  std::vector<float> nk(static_cast<size_t>(nkv * new_cap * hd)), nv(nk.size());
  for (int64_t g = 0; g < nkv; ++g) {
    std::copy_n(k.data() + g * cap * hd, len * hd, nk.data() + g * new_cap * hd);
    std::copy_n(v.data() + g * cap * hd, len * hd, nv.data() + g * new_cap * hd);
  }
  k.swap(nk);
  v.swap(nv);
  cap = new_cap;
}

SequenceState SequenceState::create(const JambaConfig& cfg) {
  SequenceState s;
  s.mamba.resize(cfg.layers.size());
  s.attn.resize(cfg.layers.size());
  for (size_t il = 0; il < cfg.layers.size(); ++il)
    if (cfg.layers[il].mixer == MixerKind::Mamba) {
      s.mamba[il].conv.assign(static_cast<size_t>(cfg.d_inner() * cfg.mamba_d_conv), 0.0f);
      s.mamba[il].ssm.assign(static_cast<size_t>(cfg.d_inner() * cfg.mamba_d_state), 0.0f);
    }
  return s;
}

size_t SequenceState::bytes() const {
  size_t b = key_valid.size();
  for (const auto& m : mamba) b += (m.conv.size() + m.ssm.size()) * sizeof(float);
  for (const auto& a : attn) b += (a.k.size() + a.v.size()) * sizeof(float);
  return b;
}

}  // namespace jamba
