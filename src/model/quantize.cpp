#include "model/quantize.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/quant.h"

namespace jamba {

namespace {

namespace fs = std::filesystem;


bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

void write_quantized_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                WeightType type) {
  if (type != WeightType::Int8 && type != WeightType::Int8Experts && type != WeightType::Q4)
    fail("quantize: type must be int8, int8-experts or q4, got ", weight_type_name(type));
  const std::string cfg_path = (fs::path(in_dir) / "config.json").string();
  const WeightType stored = stored_weight_type(cfg_path);
  if (stored != WeightType::Auto)
    fail(in_dir, ": already quantized (config.json quantization_config: ", weight_type_name(stored),
         "); quantize the original checkpoint instead");
  std::error_code ec;
  if (fs::exists(out_dir) && fs::equivalent(in_dir, out_dir, ec))
    fail("quantize: the output directory ", out_dir, " is the input directory");
  const JambaConfig cfg = JambaConfig::from_file(cfg_path);
  const Weights w = Weights::load(cfg, in_dir, type);

  std::map<std::string, const Linear*> quantized;
  for_each_matrix(w, cfg, [&](const std::string& name, const Linear& l) {
    if (l.quant != QuantKind::None) quantized[name] = &l;
  });
  std::vector<TensorSpec> specs;
  std::vector<std::pair<const void*, size_t>> src;  // bytes of each spec
  for (const auto& [name, l] : quantized) {
    const bool i8 = l->quant == QuantKind::Int8;
    const int64_t rb = i8 ? l->in : q4_row_bytes(l->in), ns = i8 ? 1 : q4_groups(l->in);
    specs.push_back({name, i8 ? DType::I8 : DType::U8, {l->out, rb}});
    src.push_back({l->wq, size_t(l->out * rb)});
    specs.push_back({name + ".scale", i8 ? DType::F32 : DType::BF16,
                     i8 ? std::vector<int64_t>{l->out} : std::vector<int64_t>{l->out, ns}});
    if (i8)
      src.push_back({l->scale, size_t(l->out) * 4});
    else
      src.push_back({l->q4_scale, size_t(l->out * ns) * 2});
  }
  for (const auto& [name, t] : w.checkpoint.tensors()) {
    const std::string c = canonical_tensor_name(name, cfg);
    if (quantized.count(c)) continue;
    // transformers v5 fused experts: every quant type quantizes the experts, written per expert.
    if (ends_with(c, ".experts.gate_up_proj") || ends_with(c, ".experts.down_proj")) continue;
    specs.push_back({c, t.dtype, t.shape});
    src.push_back({t.data, t.nbytes});
  }
  fs::create_directories(out_dir);
  write_safetensors_streaming((fs::path(out_dir) / "model.safetensors").string(), specs,
                              [&](size_t i, uint8_t* dst) {
                                if (src[i].second) std::memcpy(dst, src[i].first, src[i].second);
                              },
                              {{"format", "pt"}, {"jamba.quantization", weight_type_name(type)}});

  nlohmann::json j = nlohmann::json::parse(read_file_text(cfg_path));
  j["quantization_config"] = nlohmann::json::parse(quantization_config_json(type));
  write_file_atomic((fs::path(out_dir) / "config.json").string(), j.dump(2) + "\n");
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    const fs::path p = fs::path(in_dir) / f;
    if (fs::exists(p)) write_file_atomic((fs::path(out_dir) / f).string(), read_file_text(p.string()));
  }
}

}  // namespace jamba
