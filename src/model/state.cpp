#include "model/state.h"

#include <algorithm>

#include "core/dtype.h"

namespace jamba {

namespace {
template <typename T>
void regrow(std::vector<T>& buf, int64_t nkv, int64_t hd, int64_t cap, int64_t new_cap, int64_t len) {
  std::vector<T> nb(static_cast<size_t>(nkv * new_cap * hd));
  for (int64_t g = 0; g < nkv; ++g)
    std::copy_n(buf.data() + g * cap * hd, len * hd, nb.data() + g * new_cap * hd);
  buf.swap(nb);  // the old buffer is freed here, before the second one is grown
}
}  // namespace

void AttnLayerState::reserve(int64_t nkv, int64_t hd, int64_t new_cap, int64_t len, int64_t limit) {
  if (new_cap <= cap) return;
  int64_t grown = std::max(new_cap, std::max<int64_t>(2 * cap, 64));
  if (limit > 0 && new_cap <= limit) grown = std::min(grown, limit);
  // Past the context a cache grows by an eighth (a few decode tokens do not double it).
  if (limit > 0 && new_cap > limit) grown = std::max(new_cap, cap + std::max<int64_t>(cap / 8, 64));
  if (bf16) {
    regrow(k16, nkv, hd, cap, grown, len);
    regrow(v16, nkv, hd, cap, grown, len);
  } else {
    regrow(k, nkv, hd, cap, grown, len);
    regrow(v, nkv, hd, cap, grown, len);
  }
  cap = grown;
}

void AttnLayerState::write(int64_t g, int64_t pos, int64_t n, int64_t hd, const float* k_rows,
                           const float* v_rows, int64_t ld) {
  for (int64_t t = 0; t < n; ++t) {
    const int64_t dst = g * cap * hd + (pos + t) * hd;
    if (bf16) {
      for (int64_t e = 0; e < hd; ++e) {
        k16[size_t(dst + e)] = f32_to_bf16(k_rows[t * ld + e]);
        v16[size_t(dst + e)] = f32_to_bf16(v_rows[t * ld + e]);
      }
    } else {
      std::copy_n(k_rows + t * ld, hd, k.data() + dst);
      std::copy_n(v_rows + t * ld, hd, v.data() + dst);
    }
  }
}

void AttnLayerState::read(int which, int64_t g, int64_t n, int64_t hd, float* dst) const {
  const int64_t src = g * cap * hd;
  if (bf16)
    convert_to_f32(DType::BF16, (which ? v16 : k16).data() + src, dst, size_t(n * hd));
  else
    std::copy_n((which ? v : k).data() + src, n * hd, dst);
}

SequenceState SequenceState::create(const JambaConfig& cfg, bool kv_bf16) {
  SequenceState s;
  s.mamba.resize(cfg.layers.size());
  s.attn.resize(cfg.layers.size());
  for (size_t il = 0; il < cfg.layers.size(); ++il)
    if (cfg.layers[il].mixer == MixerKind::Mamba) {
      s.mamba[il].conv.assign(static_cast<size_t>(cfg.d_inner() * cfg.mamba_d_conv), 0.0f);
      s.mamba[il].ssm.assign(static_cast<size_t>(cfg.d_inner() * cfg.mamba_d_state), 0.0f);
    } else {
      s.attn[il].bf16 = kv_bf16;
    }
  return s;
}

void SequenceState::reserve_tokens(const JambaConfig& cfg, int64_t n) {
  for (size_t il = 0; il < cfg.layers.size() && il < attn.size(); ++il)
    if (cfg.layers[il].mixer == MixerKind::Attention)
      attn[il].reserve(cfg.num_key_value_heads, cfg.head_dim(), n, pos, n);  // limit n: exactly n
}

size_t SequenceState::bytes() const {
  size_t b = key_valid.size();
  for (const auto& m : mamba) b += (m.conv.size() + m.ssm.size()) * sizeof(float);
  for (const auto& a : attn) b += a.bytes();
  return b;
}

}  // namespace jamba
