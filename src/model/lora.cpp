#include "model/lora.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/checked.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "io/json_limits.h"
#include "io/safetensors.h"

namespace jamba {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kTensorFile = "adapter_model.safetensors";
constexpr const char* kPrefix = "base_model.model.";
// Far above any real adapter (PEFT's ranks are 4..256); keeps r * in products small.
constexpr int64_t kMaxRank = int64_t(1) << 16;
constexpr double kPeftDefaultAlpha = 8;  // PEFT LoraConfig's lora_alpha default

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

bool is_target_name(const std::string& s) {
  const auto& n = lora_target_names();
  return std::find(n.begin(), n.end(), s) != n.end();
}


// The fields of adapter_config.json this library reads; PEFT options that change what the
// adapter computes (DoRA, rsLoRA, per-layer ranks...) are refused, not ignored.
LoraWeights read_adapter_config(const std::string& path) {
  const json j = parse_json_limited(read_file_text(path), path);
  if (!j.is_object()) fail(path, ": expected a JSON object, got ", brief(j));
  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto must_be_false = [&](const char* key) {
    if (has(key) && j[key] != json(false))
      fail(path, ": field '", key, "' is ", brief(j[key]),
           " (only plain LoRA is supported: expected false)");
  };
  auto must_be_empty = [&](const char* key) {
    if (!has(key)) return;
    if (!((j[key].is_object() || j[key].is_array()) && j[key].empty()))
      fail(path, ": field '", key, "' is ", brief(j[key]),
           " (not supported: expected null or empty)");
  };
  if (has("peft_type") && j["peft_type"] != json("LORA"))
    fail(path, ": field 'peft_type' is ", brief(j["peft_type"]), ", expected \"LORA\"");
  LoraWeights lw;
  if (!has("r")) fail(path, ": missing field 'r' (the LoRA rank)");
  const json& r = j["r"];
  if (!r.is_number_integer() || r.get<double>() < 1 || r.get<double>() > double(kMaxRank))
    fail(path, ": field 'r' is ", brief(r), ", expected an integer in [1, ", kMaxRank, "]");
  lw.config.rank = r.get<int64_t>();
  lw.config.alpha = kPeftDefaultAlpha;
  if (has("lora_alpha")) {
    const json& a = j["lora_alpha"];
    if (!a.is_number() || !std::isfinite(a.get<double>()))
      fail(path, ": field 'lora_alpha' is ", brief(a), ", expected a number");
    lw.config.alpha = a.get<double>();
  }
  if (!has("target_modules")) fail(path, ": missing field 'target_modules'");
  const json& t = j["target_modules"];
  std::vector<std::string> names;
  if (t.is_string()) {
    if (!is_target_name(t.get<std::string>()))
      fail(path, ": field 'target_modules' is the string ", brief(t),
           ": only a list of module names (or one name) is supported, not a regex or "
           "'all-linear'; valid names: ",
           join(lora_target_names()));
    names.push_back(t.get<std::string>());
  } else if (t.is_array()) {
    for (const json& e : t) {
      if (!e.is_string() || !is_target_name(e.get<std::string>()))
        fail(path, ": field 'target_modules': unknown module ", brief(e),
             " (valid: ", join(lora_target_names()), ")");
      if (std::find(names.begin(), names.end(), e.get<std::string>()) == names.end())
        names.push_back(e.get<std::string>());
    }
  } else {
    fail(path, ": field 'target_modules' is ", brief(t),
         ", expected a list of module names (valid: ", join(lora_target_names()), ")");
  }
  if (names.empty()) fail(path, ": field 'target_modules' is empty");
  lw.config.targets = names;
  must_be_false("fan_in_fan_out");
  must_be_false("use_rslora");
  must_be_false("use_dora");
  if (has("bias") && j["bias"] != json("none"))
    fail(path, ": field 'bias' is ", brief(j["bias"]), " (only \"none\" is supported)");
  for (const char* key : {"rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform",
                          "layer_replication"})
    must_be_empty(key);
  if (has("base_model_name_or_path")) {
    if (!j["base_model_name_or_path"].is_string())
      fail(path, ": field 'base_model_name_or_path' is ", brief(j["base_model_name_or_path"]),
           ", expected a string");
    lw.base_model = j["base_model_name_or_path"].get<std::string>();
  }
  return lw;
}

}  // namespace

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"in_proj", "x_proj",    "out_proj", "q_proj",
                                                 "k_proj",  "v_proj",    "o_proj",   "gate_proj",
                                                 "up_proj", "down_proj", "router",   "dt_proj"};
  return names;
}

std::vector<std::string> default_lora_targets() {
  std::vector<std::string> t = lora_target_names();
  std::erase(t, std::string("dt_proj"));
  return t;
}

std::vector<std::string> parse_lora_targets(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    item = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    if (item == "all") {
      if (list.find(',') != std::string::npos)
        fail("[lora targets] 'all' cannot be combined with other names in '", list, "'");
      return lora_target_names();
    }
    if (!is_target_name(item))
      fail("[lora targets] unknown module '", item, "' in '", list,
           "' (valid: ", join(lora_target_names()), ", or all)");
    if (std::find(out.begin(), out.end(), item) != out.end())
      fail("[lora targets] module '", item, "' is repeated in '", list, "'");
    out.push_back(item);
  }
  if (out.empty())
    fail("[lora targets] empty list (valid: ", join(lora_target_names()), ", or all)");
  return out;
}

std::vector<LoraModule> lora_modules(const JambaConfig& cfg,
                                     const std::vector<std::string>& targets) {
  for (const std::string& t : targets)
    if (!is_target_name(t))
      fail("[lora targets] unknown module '", t, "' (valid: ", join(lora_target_names()), ")");
  const char* what = "[lora] module shape from the config";
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, E = cfg.num_experts;
  const int64_t Din = cfg.d_inner(), N = cfg.mamba_d_state, R = cfg.mamba_dt_rank;
  const int64_t nq = checked_mul(cfg.num_attention_heads, cfg.head_dim(), what);
  const int64_t nk = checked_mul(cfg.num_key_value_heads, cfg.head_dim(), what);
  std::vector<LoraModule> out;
  auto add = [&](const std::string& prefix, const char* name, int64_t rows, int64_t cols) {
    if (std::find(targets.begin(), targets.end(), name) != targets.end())
      out.push_back({prefix + "." + name, rows, cols});
  };
  auto mlp = [&](const std::string& p) {
    add(p, "gate_proj", I, D);  // [I, D]
    add(p, "up_proj", I, D);    // [I, D]
    add(p, "down_proj", D, I);  // [D, I]
  };
  for (size_t il = 0; il < cfg.layers.size(); ++il) {
    const std::string p = "model.layers." + std::to_string(il);
    if (cfg.layers[il].mixer == MixerKind::Mamba) {
      const std::string m = p + ".mamba";
      add(m, "in_proj", checked_mul(2, Din, what), D);                       // [2Din, D]
      add(m, "x_proj", checked_add(R, checked_mul(2, N, what), what), Din);  // [R+2N, Din]
      add(m, "dt_proj", Din, R);                                             // [Din, R]
      add(m, "out_proj", D, Din);                                            // [D, Din]
    } else {
      const std::string a = p + ".self_attn";
      add(a, "q_proj", nq, D);  // [H*Dh, D]
      add(a, "k_proj", nk, D);  // [Hkv*Dh, D]
      add(a, "v_proj", nk, D);  // [Hkv*Dh, D]
      add(a, "o_proj", D, nq);  // [D, H*Dh]
    }
    const std::string f = p + ".feed_forward";
    if (cfg.layers[il].ffn == FfnKind::Dense) {
      mlp(f);
    } else {
      add(f, "router", E, D);  // [E, D]
      for (int64_t e = 0; e < E; ++e) mlp(f + ".experts." + std::to_string(e));
    }
  }
  return out;
}

std::string lora_a_name(const std::string& module) {
  return kPrefix + module + ".lora_A.weight";
}
std::string lora_b_name(const std::string& module) {
  return kPrefix + module + ".lora_B.weight";
}

LoraWeights LoraWeights::load(const std::string& dir, const JambaConfig& cfg) {
  if (!fs::is_directory(dir))
    fail(dir, ": LoRA adapter directory does not exist (expected ", kConfigFile, " and ",
         kTensorFile, ")");
  const std::string cpath = (fs::path(dir) / kConfigFile).string();
  if (!fs::is_regular_file(cpath)) fail(cpath, ": missing (not a PEFT LoRA adapter directory)");
  LoraWeights lw = read_adapter_config(cpath);
  const int64_t r = lw.config.rank;
  const std::string tpath = (fs::path(dir) / kTensorFile).string();
  if (!fs::is_regular_file(tpath)) {
    const bool bin = fs::exists(fs::path(dir) / "adapter_model.bin");
    fail(tpath, ": missing",
         bin ? " (adapter_model.bin, a pickle, is not read: save the adapter "
               "with safe_serialization=True)"
             : "");
  }
  const auto file = SafetensorsFile::open(tpath);
  lw.modules = lora_modules(cfg, lw.config.targets);
  // Expected tensor name -> (module, is B).
  std::map<std::string, std::pair<size_t, bool>> want;
  for (size_t i = 0; i < lw.modules.size(); ++i) {
    want[lora_a_name(lw.modules[i].name)] = {i, false};
    want[lora_b_name(lw.modules[i].name)] = {i, true};
  }
  lw.A.resize(lw.modules.size());
  lw.B.resize(lw.modules.size());
  std::vector<uint8_t> seen(2 * lw.modules.size(), 0);
  for (const auto& [name, t] : file->tensors()) {
    const auto it = want.find(name);
    if (it == want.end())
      fail(tpath, ": unexpected tensor '", name, "' ", dtype_name(t.dtype), shape_str(t.shape),
           " (not a LoRA tensor of target_modules [", join(lw.config.targets),
           "] of this model's config)");
    const auto [i, is_b] = it->second;
    const LoraModule& m = lw.modules[i];
    const std::vector<int64_t> shape = is_b ? std::vector<int64_t>{m.out, r}  // [out, r]
                                            : std::vector<int64_t>{r, m.in};  // [r, in]
    if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
      fail(tpath, ": tensor '", name, "': dtype ", dtype_name(t.dtype),
           " not supported (expected F32, BF16 or F16)");
    if (t.shape != shape)
      fail(tpath, ": tensor '", name, "': expected shape ", shape_str(shape), " (r = ", r, " from ",
           kConfigFile, "), got ", shape_str(t.shape));
    (is_b ? lw.B : lw.A)[i] = tensor_to_f32(t);
    seen[2 * i + is_b] = 1;
  }
  for (size_t i = 0; i < lw.modules.size(); ++i)
    for (const bool is_b : {false, true})
      if (!seen[2 * i + is_b]) {
        const LoraModule& m = lw.modules[i];
        fail(tpath, ": missing tensor '", is_b ? lora_b_name(m.name) : lora_a_name(m.name),
             "' (expected shape ",
             shape_str(is_b ? std::vector<int64_t>{m.out, r} : std::vector<int64_t>{r, m.in}), ")");
      }
  return lw;
}

void LoraWeights::save(const std::string& dir) const {
  const int64_t r = config.rank;
  JAMBA_CHECK(r > 0, "[lora save] rank must be positive, got ", r);
  JAMBA_CHECK(A.size() == modules.size() && B.size() == modules.size(), "[lora save] ",
              modules.size(), " modules but ", A.size(), " A and ", B.size(), " B tensors");
  SafetensorsWriter w;
  for (size_t i = 0; i < modules.size(); ++i) {
    const LoraModule& m = modules[i];
    JAMBA_CHECK(A[i].size() == size_t(r * m.in) && B[i].size() == size_t(m.out * r), "[lora save] ",
                m.name, ": A has ", A[i].size(), " values (expected ", r * m.in, "), B ",
                B[i].size(), " (expected ", m.out * r, ")");
    w.add_f32(lora_a_name(m.name), {r, m.in}, A[i].data());   // [r, in]
    w.add_f32(lora_b_name(m.name), {m.out, r}, B[i].data());  // [out, r]
  }
  fs::create_directories(dir);
  w.write((fs::path(dir) / kTensorFile).string());
  json j = {{"peft_type", "LORA"},
            {"task_type", "CAUSAL_LM"},
            {"r", r},
            {"target_modules", config.targets},
            {"lora_dropout", 0.0},
            {"bias", "none"},
            {"fan_in_fan_out", false},
            {"use_rslora", false},
            {"use_dora", false},
            {"init_lora_weights", true},
            {"modules_to_save", nullptr},
            {"inference_mode", true},
            {"base_model_name_or_path", base_model}};
  // An integral alpha as an integer, as PEFT writes it.
  if (std::floor(config.alpha) == config.alpha && std::fabs(config.alpha) < 1e15)
    j["lora_alpha"] = int64_t(config.alpha);
  else
    j["lora_alpha"] = config.alpha;
  write_file_atomic((fs::path(dir) / kConfigFile).string(), j.dump(2) + "\n");
}

void attach_lora(Weights& w, const JambaConfig& cfg, const LoraConfig& lc,
                 const std::vector<LoraModule>& modules, const std::vector<const float*>& A,
                 const std::vector<const float*>& B) {
  JAMBA_CHECK(A.size() == modules.size() && B.size() == modules.size(), "[attach_lora] ",
              modules.size(), " modules but ", A.size(), " A and ", B.size(), " B tensors");
  JAMBA_CHECK(lc.rank > 0, "[attach_lora] rank must be positive, got ", lc.rank);
  // Module path -> the Linear of w (the Linears are w's own: for_each_matrix hands them out
  // const only because it also serves readers).
  std::map<std::string, Linear*> by_name;
  const std::string suffix = ".weight";
  for_each_matrix(w, cfg, [&](const std::string& n, const Linear& l) {
    by_name[n.substr(0, n.size() - suffix.size())] = const_cast<Linear*>(&l);
  });
  auto adapters = std::make_unique<std::vector<LoraAdapter>>(modules.size());
  std::vector<Linear*> target(modules.size());
  for (size_t i = 0; i < modules.size(); ++i) {
    const LoraModule& m = modules[i];
    const auto it = by_name.find(m.name);
    if (it == by_name.end() || m.name == "model.embed_tokens" || m.name == "lm_head")
      fail("[attach_lora] module '", m.name, "' is not a linear layer of this model");
    Linear* l = it->second;
    if (l->out != m.out || l->in != m.in)
      fail("[attach_lora] module '", m.name, "': adapter for [", m.out, ",", m.in,
           "], the layer is [", l->out, ",", l->in, "]");
    JAMBA_CHECK(A[i] && B[i], "[attach_lora] module '", m.name, "': no A or B data");
    (*adapters)[i] = {.A = A[i], .B = B[i], .rank = lc.rank, .scale = lc.scale()};
    target[i] = l;
  }
  for (auto& [n, l] : by_name) l->lora = nullptr;
  w.lm_head.lora = nullptr;  // a tied head is a Linear for_each_matrix may not visit
  for (size_t i = 0; i < modules.size(); ++i) target[i]->lora = &(*adapters)[i];
  w.lora_adapters = std::move(adapters);
}

}  // namespace jamba
