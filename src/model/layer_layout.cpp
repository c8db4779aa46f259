#include "model/layer_layout.h"

#include <cctype>
#include <numeric>

#include "core/error.h"

namespace jamba {

namespace {

// A non-negative decimal integer of at most 9 digits (the counts of a layout), else -1.
int64_t parse_count(const std::string& s) {
  if (s.empty() || s.size() > 9) return -1;
  int64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

LayerLayout parse_layer_layout(const std::string& text) {
  LayerLayout l;
  l.name = text;
  if (text == "all-mamba") {
    l.attn = 0, l.mamba = 1;
    return l;
  }
  if (text == "all-attention") {
    l.attn = 1, l.mamba = 0;
    return l;
  }
  const size_t colon = text.find(':');
  const int64_t a = colon == std::string::npos ? -1 : parse_count(text.substr(0, colon));
  const int64_t m = colon == std::string::npos ? -1 : parse_count(text.substr(colon + 1));
  if (a < 0 || m < 0)
    fail("[layout] '", text,
         "': expected all-mamba, all-attention or a:m (attention:Mamba layers "
         "per period, non-negative integers, e.g. 1:7)");
  if (a == 0 && m == 0) fail("[layout] '", text, "': a period needs at least one layer (got 0:0)");
  const int64_t g = std::gcd(a, m);  // gcd(a, 0) = a: a:0 -> 1:0, 0:m -> 0:1
  l.attn = a / g;
  l.mamba = m / g;
  if (l.attn > 1)
    fail("[layout] '", text, "' is ", l.attn, ":", l.mamba, " after dividing by gcd ", g,
         ": expected one attention layer per period (1:m, or a multiple such as 2:14), since HF's "
         "config states the layout as attn_layer_period / attn_layer_offset; or all-mamba / "
         "all-attention");
  return l;
}

AttnSchedule attn_schedule(const LayerLayout& l, int64_t n_layers) {
  if (l.all_mamba()) return {n_layers + 1, n_layers};
  if (l.all_attention()) return {1, 0};
  const int64_t period = l.mamba + 1;
  return {period, period / 2};
}

JambaConfig with_layer_layout(const JambaConfig& base, const LayerLayout& l) {
  JambaConfig c = base;
  const AttnSchedule s = attn_schedule(l, base.num_hidden_layers);
  c.attn_layer_period = s.period;
  c.attn_layer_offset = s.offset;
  // all-mamba's period num_hidden_layers + 1 with offset num_hidden_layers passes validate():
  // the offset is in [0, period), and the period is at most kMaxLayers + 1 < kMaxLayerPeriod.
  // derive() then gives no attention layer (tests/test_explore.cpp checks both).
  c.validate("layout " + l.name);
  c.derive();
  return c;
}

}  // namespace jamba
