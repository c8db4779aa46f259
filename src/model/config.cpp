#include "model/config.h"

#include <cmath>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/checked.h"
#include "core/error.h"
#include "io/json_limits.h"

namespace jamba {

using json = nlohmann::json;

namespace {

template <typename T>
const char* type_word() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else return "a string";
}

template <typename T>
void read_field(const json& j, const char* key, T* out, const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) return;
  const json& v = j[key];
  try {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) throw std::invalid_argument("");
      *out = v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      constexpr uint64_t kMax = uint64_t(std::numeric_limits<int64_t>::max());
      if (v.is_number_unsigned() && v.get<uint64_t>() > kMax) throw std::invalid_argument("");
      if (!v.is_number_integer()) {
        // Accept integral floats like 4.0 (within the int64 range: 2^63 is exact in double).
        const double d = v.is_number_float() ? v.get<double>() : 0.5;
        if (std::floor(d) == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
          *out = T(d);
          return;
        }
        throw std::invalid_argument("");
      }
      *out = v.get<T>();
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) throw std::invalid_argument("");
      *out = v.get<T>();
    } else {
      if (!v.is_string()) throw std::invalid_argument("");
      *out = v.get<T>();
    }
  } catch (const std::exception&) {
    fail(src, ": field '", key, "' must be ", type_word<T>(), ", got ", brief(v));
  }
}

}  // namespace

int64_t JambaConfig::n_attention_layers() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.mixer == MixerKind::Attention;
  return n;
}
int64_t JambaConfig::n_moe_layers() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.ffn == FfnKind::Moe;
  return n;
}

JambaConfig JambaConfig::from_json_text(const std::string& text, const std::string& src) {
  const json j = parse_json_limited(text, src);
  if (!j.is_object()) fail(src, ": expected a JSON object, got ", j.type_name());
  JambaConfig c;
  if (j.contains("model_type") && !j["model_type"].is_null() && j["model_type"] != "jamba")
    fail(src, ": field 'model_type' is ", brief(j["model_type"]), ", expected \"jamba\"");
  read_field(j, "vocab_size", &c.vocab_size, src);
  read_field(j, "tie_word_embeddings", &c.tie_word_embeddings, src);
  read_field(j, "hidden_size", &c.hidden_size, src);
  read_field(j, "intermediate_size", &c.intermediate_size, src);
  read_field(j, "num_hidden_layers", &c.num_hidden_layers, src);
  read_field(j, "num_attention_heads", &c.num_attention_heads, src);
  c.num_key_value_heads = c.num_attention_heads;  // None -> nh
  if (j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null())
    read_field(j, "num_key_value_heads", &c.num_key_value_heads, src);
  else if (!j.contains("num_key_value_heads"))
    c.num_key_value_heads = 8;  // reference default when the key is absent
  read_field(j, "hidden_act", &c.hidden_act, src);
  read_field(j, "initializer_range", &c.initializer_range, src);
  read_field(j, "rms_norm_eps", &c.rms_norm_eps, src);
  read_field(j, "use_cache", &c.use_cache, src);
  read_field(j, "num_logits_to_keep", &c.num_logits_to_keep, src);
  read_field(j, "output_router_logits", &c.output_router_logits, src);
  read_field(j, "router_aux_loss_coef", &c.router_aux_loss_coef, src);
  if (j.contains("pad_token_id") && j["pad_token_id"].is_null())
    c.pad_token_id = -1;
  else
    read_field(j, "pad_token_id", &c.pad_token_id, src);
  read_field(j, "bos_token_id", &c.bos_token_id, src);
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const json& e = j["eos_token_id"];
    c.eos_token_id.clear();
    if (e.is_number_integer()) {
      c.eos_token_id.push_back(e.get<int64_t>());
    } else if (e.is_array()) {
      for (const auto& x : e) {
        if (!x.is_number_integer())
          fail(src, ": field 'eos_token_id' must be an int or a list of ints, got ", brief(e));
        c.eos_token_id.push_back(x.get<int64_t>());
      }
    } else {
      fail(src, ": field 'eos_token_id' must be an int or a list of ints, got ", brief(e));
    }
  }
  read_field(j, "max_position_embeddings", &c.max_position_embeddings, src);
  read_field(j, "attention_dropout", &c.attention_dropout, src);
  read_field(j, "num_experts_per_tok", &c.num_experts_per_tok, src);
  read_field(j, "num_experts", &c.num_experts, src);
  if (!j.contains("num_experts")) read_field(j, "num_local_experts", &c.num_experts, src);
  read_field(j, "expert_layer_period", &c.expert_layer_period, src);
  read_field(j, "expert_layer_offset", &c.expert_layer_offset, src);
  read_field(j, "attn_layer_period", &c.attn_layer_period, src);
  read_field(j, "attn_layer_offset", &c.attn_layer_offset, src);
  read_field(j, "use_mamba_kernels", &c.use_mamba_kernels, src);
  read_field(j, "mamba_d_state", &c.mamba_d_state, src);
  read_field(j, "mamba_d_conv", &c.mamba_d_conv, src);
  read_field(j, "mamba_expand", &c.mamba_expand, src);
  read_field(j, "mamba_conv_bias", &c.mamba_conv_bias, src);
  read_field(j, "mamba_proj_bias", &c.mamba_proj_bias, src);
  read_field(j, "torch_dtype", &c.torch_dtype, src);
  if (j.contains("mamba_dt_rank") && !j["mamba_dt_rank"].is_null()) {
    const json& r = j["mamba_dt_rank"];
    if (r.is_string()) {
      if (r.get<std::string>() != "auto")
        fail(src, ": field 'mamba_dt_rank' must be an integer or \"auto\", got ", brief(r));
      c.mamba_dt_rank = 0;
    } else {
      read_field(j, "mamba_dt_rank", &c.mamba_dt_rank, src);
      if (c.mamba_dt_rank <= 0)
        fail(src, ": field 'mamba_dt_rank' must be positive or \"auto\", got ", c.mamba_dt_rank);
    }
  }
  // "auto" = ceil(D / 16), without the overflow of (D + 15) / 16 (D is bounded by validate()).
  if (c.mamba_dt_rank == 0) c.mamba_dt_rank = c.hidden_size > 0 ? ceil_div(c.hidden_size, 16) : 0;
  c.validate(src);
  c.derive();
  return c;
}

JambaConfig JambaConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json_text(ss.str(), path);
}

void JambaConfig::validate(const std::string& src) const {
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) fail(src, ": field '", name, "' must be positive, got ", v);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("num_experts", num_experts);
  positive("expert_layer_period", expert_layer_period);
  positive("attn_layer_period", attn_layer_period);
  positive("mamba_d_state", mamba_d_state);
  positive("mamba_d_conv", mamba_d_conv);
  positive("mamba_expand", mamba_expand);
  positive("mamba_dt_rank", mamba_dt_rank);
  positive("max_position_embeddings", max_position_embeddings);
  if (num_experts > 1) positive("num_experts_per_tok", num_experts_per_tok);
  // Upper bounds (config.h: the reason for each) before anything is sized from a field.
  auto at_most = [&](const char* name, int64_t v, int64_t max) {
    if (v > max)
      fail(src, ": field '", name, "' is ", v, ", more than the supported maximum ", max);
  };
  at_most("vocab_size", vocab_size, kMaxVocabSize);
  at_most("hidden_size", hidden_size, kMaxHiddenSize);
  at_most("intermediate_size", intermediate_size, kMaxIntermediate);
  at_most("num_hidden_layers", num_hidden_layers, kMaxLayers);
  at_most("num_attention_heads", num_attention_heads, kMaxHeads);
  at_most("num_key_value_heads", num_key_value_heads, kMaxHeads);
  at_most("num_experts", num_experts, kMaxExperts);
  at_most("num_experts_per_tok", num_experts_per_tok, kMaxExperts);
  at_most("expert_layer_period", expert_layer_period, kMaxLayerPeriod);
  at_most("attn_layer_period", attn_layer_period, kMaxLayerPeriod);
  at_most("mamba_d_state", mamba_d_state, kMaxDState);
  at_most("mamba_d_conv", mamba_d_conv, kMaxDConv);
  at_most("mamba_expand", mamba_expand, kMaxExpand);
  at_most("mamba_dt_rank", mamba_dt_rank, kMaxDtRank);
  at_most("max_position_embeddings", max_position_embeddings, kMaxPositionEmbeddings);
  if (hidden_size % num_attention_heads != 0)
    fail(src, ": field 'hidden_size' (", hidden_size, ") is not divisible by "
         "'num_attention_heads' (", num_attention_heads, ")");
  if (num_attention_heads % num_key_value_heads != 0)
    fail(src, ": field 'num_attention_heads' (", num_attention_heads, ") is not divisible by "
         "'num_key_value_heads' (", num_key_value_heads, ")");
  if (attn_layer_offset < 0 || attn_layer_offset >= attn_layer_period)
    fail(src, ": field 'attn_layer_offset' (", attn_layer_offset, ") must be in [0, "
         "attn_layer_period=", attn_layer_period, ")");
  if (expert_layer_offset < 0 || expert_layer_offset >= expert_layer_period)
    fail(src, ": field 'expert_layer_offset' (", expert_layer_offset, ") must be in [0, "
         "expert_layer_period=", expert_layer_period, ")");
  if (num_experts > 1 && num_experts_per_tok > num_experts)
    fail(src, ": field 'num_experts_per_tok' (", num_experts_per_tok, ") exceeds 'num_experts' (",
         num_experts, ")");
  if (hidden_act != "silu" && hidden_act != "swish")
    fail(src, ": field 'hidden_act' is '", hidden_act, "'; only 'silu' is supported");
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps))
    fail(src, ": field 'rms_norm_eps' must be positive, got ", rms_norm_eps);
  for (int64_t e : eos_token_id)
    if (e < 0 || e >= vocab_size)
      fail(src, ": field 'eos_token_id' value ", e, " is outside the vocabulary [0, ", vocab_size,
           ")");
  const int64_t n_params = checked_param_count(src);
  if (n_params > kMaxParams)
    fail(src, ": the config describes ", n_params, " parameters, more than the supported maximum ",
         kMaxParams, " (2^44)");
  // MoE layers: il in [0, L) with il % period == offset (derive()); each holds num_experts MLPs.
  // Both factors are bounded above (2^12 each): the product cannot overflow.
  int64_t n_moe = 0;
  if (num_experts > 1 && expert_layer_offset < num_hidden_layers)
    n_moe = (num_hidden_layers - 1 - expert_layer_offset) / expert_layer_period + 1;
  if (n_moe * num_experts > kMaxExpertMlps)
    fail(src, ": the config describes ", n_moe, " MoE layers of ", num_experts, " experts = ",
         n_moe * num_experts, " expert MLPs, more than the supported maximum ", kMaxExpertMlps);
}

int64_t JambaConfig::checked_param_count(const std::string& src) const {
  // The formulas of model_info.cpp / param_list.cpp (spec §5.1), every step checked.
  const std::string what = src + ": parameter count";
  auto mul = [&](std::initializer_list<int64_t> xs) {
    int64_t r = 1;
    for (int64_t x : xs) r = checked_mul(r, x, what);
    return r;
  };
  auto add = [&](std::initializer_list<int64_t> xs) {
    int64_t r = 0;
    for (int64_t x : xs) r = checked_add(r, x, what);
    return r;
  };
  const int64_t D = hidden_size, V = vocab_size, I = intermediate_size, E = num_experts;
  const int64_t Din = mul({mamba_expand, D}), N = mamba_d_state, R = mamba_dt_rank,
                K = mamba_d_conv;
  const int64_t hd = num_attention_heads > 0 ? D / num_attention_heads : 0;
  const int64_t q = mul({num_attention_heads, hd}), kv = mul({num_key_value_heads, hd});
  const int64_t mamba = add({mul({2, Din, D}), mamba_proj_bias ? add({mul({2, Din}), D}) : 0,
                             mul({Din, K}), mamba_conv_bias ? Din : 0,
                             mul({add({R, mul({2, N})}), Din}), mul({Din, R}), Din,
                             mul({D, Din}), mul({Din, N}), Din, R, mul({2, N})});
  const int64_t attn = add({mul({add({q, mul({2, kv})}), D}), mul({D, q})});
  const int64_t mlp = mul({3, I, D});
  const int64_t moe = add({mul({E, mlp}), mul({E, D})});
  // Layers il in [0, L) with il % period == offset (the schedule of derive()).
  const int64_t L = num_hidden_layers;
  auto count = [&](int64_t period, int64_t offset) -> int64_t {
    if (period <= 0 || offset < 0 || offset >= L) return 0;
    return (L - 1 - offset) / period + 1;
  };
  const int64_t n_attn = count(attn_layer_period, attn_layer_offset);
  const int64_t n_moe = num_experts > 1 ? count(expert_layer_period, expert_layer_offset) : 0;
  return add({mul({V, D}), tie_word_embeddings ? 0 : mul({V, D}), D,  // embed, lm_head, norm
              mul({L, 2, D}),                                         // two norms per layer
              mul({n_attn, attn}), mul({L - n_attn, mamba}),          // mixers
              mul({n_moe, moe}), mul({L - n_moe, mlp})});             // feed-forwards
}

void JambaConfig::derive() {
  JAMBA_CHECK(num_hidden_layers >= 0 && num_hidden_layers <= kMaxLayers,
              "config: num_hidden_layers ", num_hidden_layers, " is not in [0, ", kMaxLayers,
              "] (validate() first)");
  layers.clear();
  layers.reserve(size_t(num_hidden_layers));
  for (int64_t i = 0; i < num_hidden_layers; ++i) {
    LayerSpec s;
    s.mixer = (i % attn_layer_period == attn_layer_offset) ? MixerKind::Attention : MixerKind::Mamba;
    s.ffn = (num_experts > 1 && i % expert_layer_period == expert_layer_offset) ? FfnKind::Moe
                                                                                 : FfnKind::Dense;
    layers.push_back(s);
  }
}

std::string JambaConfig::to_json_text() const {
  json j;
  j["architectures"] = {"JambaForCausalLM"};
  j["model_type"] = "jamba";
  j["attention_dropout"] = attention_dropout;
  j["attn_layer_offset"] = attn_layer_offset;
  j["attn_layer_period"] = attn_layer_period;
  j["bos_token_id"] = bos_token_id;
  if (eos_token_id.size() == 1)
    j["eos_token_id"] = eos_token_id[0];
  else
    j["eos_token_id"] = eos_token_id;
  j["expert_layer_offset"] = expert_layer_offset;
  j["expert_layer_period"] = expert_layer_period;
  j["hidden_act"] = hidden_act;
  j["hidden_size"] = hidden_size;
  j["initializer_range"] = initializer_range;
  j["intermediate_size"] = intermediate_size;
  j["mamba_conv_bias"] = mamba_conv_bias;
  j["mamba_d_conv"] = mamba_d_conv;
  j["mamba_d_state"] = mamba_d_state;
  j["mamba_dt_rank"] = mamba_dt_rank;
  j["mamba_expand"] = mamba_expand;
  j["mamba_proj_bias"] = mamba_proj_bias;
  j["max_position_embeddings"] = max_position_embeddings;
  j["num_attention_heads"] = num_attention_heads;
  j["num_experts"] = num_experts;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_key_value_heads"] = num_key_value_heads;
  j["num_logits_to_keep"] = num_logits_to_keep;
  j["output_router_logits"] = output_router_logits;
  if (pad_token_id >= 0)
    j["pad_token_id"] = pad_token_id;
  else
    j["pad_token_id"] = nullptr;
  j["rms_norm_eps"] = rms_norm_eps;
  j["router_aux_loss_coef"] = router_aux_loss_coef;
  j["sliding_window"] = nullptr;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["use_cache"] = use_cache;
  j["use_mamba_kernels"] = use_mamba_kernels;
  j["vocab_size"] = vocab_size;
  return j.dump(2) + "\n";
}

}  // namespace jamba
