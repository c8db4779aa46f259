// Attention:Mamba layouts ("1:7", "all-mamba", "all-attention") and the config of a base shape
// re-laid-out to one of them, for `jamba explore`. HF's config states the layout as one attention
// layer per period: layer il is attention iff il % attn_layer_period == attn_layer_offset
// (JambaConfig::derive), so a layout a:m is reduced by gcd(a, m) and must then be 1:m.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"

namespace jamba {

struct LayerLayout {
  std::string name;   // as written: "1:7", "2:6", "all-mamba", "all-attention"
  int64_t attn = 0;   // attention layers per period after reduction: 0 (all-mamba) or 1
  int64_t mamba = 0;  // Mamba layers per period after reduction: 0 for all-attention
  bool all_mamba() const { return attn == 0; }
  bool all_attention() const { return mamba == 0; }
};

// "all-mamba", "all-attention" or "a:m" (a, m >= 0, not both 0; a:0 is all-attention, 0:m
// all-mamba). Throws naming the layout for anything else, and for a ratio that still has more
// than one attention layer per period after dividing by gcd(a, m) (e.g. 3:5).
LayerLayout parse_layer_layout(const std::string& text);

// attn_layer_period / attn_layer_offset of the layout on a model of n_layers layers:
//   1:m            period m + 1, offset (m + 1) / 2   (Jamba's 1:7 = period 8, offset 4)
//   all-attention  period 1, offset 0
//   all-mamba      period n_layers + 1, offset n_layers: no il in [0, n_layers) matches
struct AttnSchedule {
  int64_t period = 1, offset = 0;
};
AttnSchedule attn_schedule(const LayerLayout& l, int64_t n_layers);

// `base` (same width, depth, heads, FFN/MoE schedule) with the layout's attention schedule,
// validated and derived. Layers that do not fill a whole period follow HF's rule too, so the
// counts of a ratio that does not divide the depth are those of the rule
// (config.n_attention_layers()).
JambaConfig with_layer_layout(const JambaConfig& base, const LayerLayout& l);

}  // namespace jamba
