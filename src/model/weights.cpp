#include "model/weights.h"

#include <algorithm>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/checked.h"
#include "core/error.h"
#include "io/json_limits.h"
#include "kernels/quant.h"
#include "model/model.h"

namespace jamba {

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
}

// What a matrix is, which decides how it is held (model.h, WeightType).
enum class Role {
  Matrix,     // a linear layer of a block
  Expert,     // a linear layer of an MoE expert
  KeepF32,    // dt_proj, router: always f32
  Embedding,  // embedding (a row gather; also the tied LM head unless quantized): as loaded (Auto)
  LmHead,     // LM head: quantized by int8 / q4 (it is read whole for every token); tied, a
              // quantized copy of the embedding
};

QuantKind quant_for(Role r, WeightType t) {
  if (r == Role::Expert && (t == WeightType::Int8 || t == WeightType::Int8Experts))
    return QuantKind::Int8;
  const bool dense = r == Role::Matrix || r == Role::LmHead;
  if (dense && t == WeightType::Int8) return QuantKind::Int8;
  if ((r == Role::Expert || dense) && t == WeightType::Q4) return QuantKind::Q4;
  return QuantKind::None;
}

const char* quant_name(QuantKind q) { return q == QuantKind::Int8 ? "int8" : "q4"; }

// Resolves canonical names to tensors, checks dtype/shape, records what was consumed.
class Loader {
 public:
  Loader(const JambaConfig& cfg, Weights& w) : cfg_(cfg), w_(w) {
    for (const auto& [name, t] : w.checkpoint.tensors()) {
      std::string c = canonical_tensor_name(name, cfg);
      if (by_canon_.count(c))
        fail(t.file, ": tensors '", by_canon_[c]->name, "' and '", name,
             "' both map to the same parameter '", c, "'");
      by_canon_[c] = &t;
      w.file_bytes += t.nbytes;
    }
  }

  bool has(const std::string& name) const { return by_canon_.count(name) != 0; }

  const TensorInfo& info(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = by_canon_.find(name);
    if (it == by_canon_.end())
      fail(w_.checkpoint.dir(), ": missing tensor '", name, "' (expected shape ",
           shape_str(shape), ")");
    const TensorInfo& t = *it->second;
    if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
      fail(t.file, ": tensor '", t.name, "': dtype ", dtype_name(t.dtype),
           " not supported (expected F32, BF16 or F16)");
    if (t.shape != shape)
      fail(t.file, ": tensor '", t.name, "': expected shape ", shape_str(shape), ", got ",
           shape_str(t.shape));
    used_.insert(name);
    return t;
  }

  const float* get(const std::string& name, const std::vector<int64_t>& shape) {
    return to_f32(info(name, shape));
  }

  const float* get_opt(const std::string& name, const std::vector<int64_t>& shape) {
    return has(name) ? get(name, shape) : nullptr;
  }

  // n values of type dt at src, converted into owned (64-byte aligned) f32 memory.
  float* owned_f32(DType dt, const void* src, size_t n) {
    w_.owned.push_back(std::make_unique<AlignedVector<float>>(n));
    convert_to_f32(dt, src, w_.owned.back()->data(), n);
    return w_.owned.back()->data();
  }

  // (The loader has checked the dtype is a float one.)
  const float* to_f32(const TensorInfo& t) {
    if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0)
      return reinterpret_cast<const float*>(t.data);
    return owned_f32(t.dtype, t.data, size_t(t.numel()));
  }

  // A big matrix in the requested in-memory type: quantized if its role asks for it, else bf16
  // tensors are used in place when bf16 is wanted; anything else is converted once.
  void fill_matrix(const TensorInfo& t, const uint8_t* data, int64_t rows, int64_t cols, Role role,
                   Linear* l) {
    l->out = rows;
    l->in = cols;
    const size_t n = size_t(rows * cols);
    const QuantKind q = quant_for(role, type_);
    if (q != QuantKind::None) {
      if (stored_ != WeightType::Auto)
        fail(t.file, ": tensor '", t.name, "': expected a ", quant_name(q),
             " quantized weight (the checkpoint's quantization_config says ",
             weight_type_name(stored_), "), got ", dtype_name(t.dtype), shape_str(t.shape));
      quantize(t, data, rows, cols, q, l);
      return;
    }
    const bool bf16 = bf16_ && role != Role::KeepF32;
    if (!bf16) {
      l->w = data == t.data ? to_f32(t) : owned_f32(t.dtype, data, n);
      return;
    }
    if (t.dtype == DType::BF16) {
      if (reinterpret_cast<uintptr_t>(data) % alignof(uint16_t) == 0) {
        l->w16 = reinterpret_cast<const uint16_t*>(data);  // used in place
      } else {
        // An odd data offset (the format allows it): kernels read w16 as uint16_t, so copy.
        w_.owned16.push_back(std::make_unique<AlignedVector<uint16_t>>(n));
        if (n) std::memcpy(w_.owned16.back()->data(), data, n * sizeof(uint16_t));
        l->w16 = w_.owned16.back()->data();
      }
      return;
    }
    std::vector<float> f(n);
    convert_to_f32(t.dtype, data, f.data(), n);
    w_.owned16.push_back(std::make_unique<AlignedVector<uint16_t>>(n));
    for (size_t i = 0; i < n; ++i) (*w_.owned16.back())[i] = f32_to_bf16(f[i]);
    l->w16 = w_.owned16.back()->data();
  }

  // A quantized copy of a float matrix whose source stays in use (the tied LM head of the
  // embedding): its pages are kept.
  void quantize_copy(const std::string& name, int64_t rows, int64_t cols, QuantKind q, Linear* l) {
    const TensorInfo& t = info(name, {rows, cols});
    l->out = rows;
    l->in = cols;
    quantize(t, t.data, rows, cols, q, l, false);
  }

  // Quantizes rows of any float dtype with the row quantizers of kernels/quant.h.
  void quantize(const TensorInfo& t, const uint8_t* data, int64_t rows, int64_t cols, QuantKind q,
                Linear* l, bool release = true) {
    const bool i8 = q == QuantKind::Int8;
    const int64_t rb = i8 ? cols : q4_row_bytes(cols), ns = i8 ? 1 : q4_groups(cols);
    const size_t es = dtype_size(t.dtype);
    w_.owned8.push_back(std::make_unique<AlignedVector<uint8_t>>(size_t(rows * rb)));
    uint8_t* qd = w_.owned8.back()->data();
    float* sd = nullptr;     // int8: f32 per row
    uint16_t* sh = nullptr;  // q4: bf16 per group
    if (i8) {
      w_.owned.push_back(std::make_unique<AlignedVector<float>>(size_t(rows)));
      sd = w_.owned.back()->data();
    } else {
      w_.owned16.push_back(std::make_unique<AlignedVector<uint16_t>>(size_t(rows * ns)));
      sh = w_.owned16.back()->data();
    }
#pragma omp parallel if (rows * cols > 65536)
    {
      std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        convert_to_f32(t.dtype, data + size_t(r * cols) * es, row.data(), size_t(cols));
        if (i8)
          quantize_row_int8(row.data(), cols, reinterpret_cast<int8_t*>(qd + r * rb), sd + r);
        else
          quantize_row_q4(row.data(), cols, qd + r * rb, sh + r * ns);
      }
    }
    l->quant = q;
    l->wq = qd;
    l->scale = sd;
    l->q4_scale = sh;
    if (release) release_pages(data, size_t(rows * cols) * es);
  }

  // The source of a matrix quantized at load is not read again: drop its pages of the (read-only,
  // file-backed) map from the resident set; a later read would fault them back in from the file.
  static void release_pages(const uint8_t* p, size_t n) {
    const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
    const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
    if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
  }

  // A matrix stored quantized (docs/QUANT.md): `name` I8 [rows, cols] or U8 [rows,
  // q4_row_bytes(cols)], and `name`.scale F32 [rows] or BF16 [rows, q4_groups(cols)] (F32 in
  // format version 1: rounded to bf16 here).
  void read_quantized(const std::string& name, int64_t rows, int64_t cols, QuantKind q,
                      Linear* l) {
    const bool i8 = q == QuantKind::Int8;
    const TensorInfo& t = raw(name, i8 ? DType::I8 : DType::U8,
                              {rows, i8 ? cols : q4_row_bytes(cols)}, quant_name(q));
    const std::vector<int64_t> sshape =
        i8 ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, q4_groups(cols)};
    l->out = rows;
    l->in = cols;
    l->quant = q;
    l->wq = t.data;
    if (i8) {
      l->scale = to_f32(raw(name + ".scale", DType::F32, sshape, quant_name(q)));
      return;
    }
    const auto it = by_canon_.find(name + ".scale");
    const bool v1 = it != by_canon_.end() && it->second->dtype == DType::F32;
    const TensorInfo& s = raw(name + ".scale", v1 ? DType::F32 : DType::BF16, sshape, quant_name(q));
    const size_t n = size_t(rows * q4_groups(cols));
    if (!v1 && reinterpret_cast<uintptr_t>(s.data) % alignof(uint16_t) == 0) {
      l->q4_scale = reinterpret_cast<const uint16_t*>(s.data);  // used in place
      return;
    }
    w_.owned16.push_back(std::make_unique<AlignedVector<uint16_t>>(n));
    uint16_t* dst = w_.owned16.back()->data();
    if (v1) {
      const float* f = to_f32(s);
      for (size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(f[i]);
    } else if (n) {  // an odd data offset: copied so the kernels read aligned uint16_t
      std::memcpy(dst, s.data, n * sizeof(uint16_t));
    }
    l->q4_scale = dst;
  }

  // A tensor of one exact dtype and shape (quantized checkpoints).
  const TensorInfo& raw(const std::string& name, DType dt, const std::vector<int64_t>& shape,
                        const char* what) {
    auto it = by_canon_.find(name);
    if (it == by_canon_.end())
      fail(w_.checkpoint.dir(), ": missing tensor '", name, "' (expected ", dtype_name(dt), " ",
           shape_str(shape), " of the ", what, " quantized checkpoint)");
    const TensorInfo& t = *it->second;
    if (t.dtype != dt)
      fail(t.file, ": tensor '", t.name, "': expected dtype ", dtype_name(dt), " (", what,
           " quantized checkpoint), got ", dtype_name(t.dtype));
    if (t.shape != shape)
      fail(t.file, ": tensor '", t.name, "': expected shape ", shape_str(shape), " (", what,
           " quantized checkpoint), got ", shape_str(t.shape));
    used_.insert(name);
    return t;
  }

  void set_types(bool bf16, WeightType type, WeightType stored) {
    bf16_ = bf16;
    type_ = type;
    stored_ = stored;
  }
  // How the checkpoint stores a matrix of this role (None = a float tensor).
  QuantKind stored_quant(Role role) const { return quant_for(role, stored_); }

  void finish() {
    for (const auto& [c, t] : by_canon_)
      if (!used_.count(c))
        fail(t->file, ": unexpected tensor '", t->name, "' ", dtype_name(t->dtype),
             shape_str(t->shape), " (not a parameter of this config)");
  }

 private:
  const JambaConfig& cfg_;
  Weights& w_;
  std::map<std::string, const TensorInfo*> by_canon_;
  std::set<std::string> used_;
  bool bf16_ = false;
  WeightType type_ = WeightType::F32, stored_ = WeightType::Auto;
};

// Small matrices whose f32 values matter (router decisions, dt) have Role::KeepF32.
Linear linear(Loader& L, const std::string& prefix, int64_t out, int64_t in, bool bias,
              Role role = Role::Matrix) {
  Linear l;
  l.out = out;
  l.in = in;
  const QuantKind stored = L.stored_quant(role);
  if (stored != QuantKind::None) {
    L.read_quantized(prefix + ".weight", out, in, stored, &l);
  } else {
    const TensorInfo& t = L.info(prefix + ".weight", {out, in});
    L.fill_matrix(t, t.data, out, in, role, &l);
  }
  if (bias) l.b = L.get(prefix + ".bias", {out});
  return l;
}

MlpWeights mlp(Loader& L, const std::string& p, int64_t D, int64_t I, Role role) {
  return {linear(L, p + ".gate_proj", I, D, false, role),
          linear(L, p + ".up_proj", I, D, false, role),
          linear(L, p + ".down_proj", D, I, false, role)};
}

}  // namespace

std::string canonical_tensor_name(const std::string& name, const JambaConfig& cfg) {
  std::string s = name;
  replace_all(s, ".moe.", ".feed_forward.");
  replace_all(s, ".pre_moe_layernorm.", ".pre_ff_layernorm.");
  replace_all(s, ".mamba.B_layernorm.", ".mamba.b_layernorm.");
  replace_all(s, ".mamba.C_layernorm.", ".mamba.c_layernorm.");
  // Dense layers stored as a 1-expert MoE: model.layers.{i}.feed_forward.experts.0.X ->
  // model.layers.{i}.feed_forward.X
  const std::string head = "model.layers.", mid = ".feed_forward.experts.0.";
  if (s.rfind(head, 0) == 0) {
    const size_t dot = s.find('.', head.size());
    const std::string num = s.substr(head.size(), dot == std::string::npos ? 0 : dot - head.size());
    if (!num.empty() && num.size() < 10 &&
        num.find_first_not_of("0123456789") == std::string::npos &&
        s.compare(dot, mid.size(), mid) == 0) {
      const int64_t il = std::stoll(num);
      if (il < int64_t(cfg.layers.size()) && cfg.layers[size_t(il)].ffn == FfnKind::Dense)
        s = head + num + ".feed_forward." + s.substr(dot + mid.size());
    }
  }
  return s;
}

size_t Linear::bytes() const {
  switch (quant) {
    case QuantKind::Int8: return size_t(out * in) + size_t(out) * 4;
    case QuantKind::Q4: return size_t(out * q4_row_bytes(in)) + size_t(out * q4_groups(in)) * 2;
    case QuantKind::None: break;
  }
  return size_t(out * in) * (w16 ? 2 : 4);
}

void for_each_matrix(const Weights& w, const JambaConfig& cfg,
                     const std::function<void(const std::string&, const Linear&)>& fn) {
  fn("model.embed_tokens.weight", w.embed);
  // A tied head is visited when it is its own (quantized) copy of the embedding.
  if (!cfg.tie_word_embeddings || w.lm_head.quant != QuantKind::None) fn("lm_head.weight", w.lm_head);
  auto mlp_each = [&](const std::string& p, const MlpWeights& m) {
    fn(p + ".gate_proj.weight", m.gate);
    fn(p + ".up_proj.weight", m.up);
    fn(p + ".down_proj.weight", m.down);
  };
  for (size_t il = 0; il < w.layers.size(); ++il) {
    const std::string p = "model.layers." + std::to_string(il);
    const LayerWeights& l = w.layers[il];
    if (cfg.layers[il].mixer == MixerKind::Mamba) {
      fn(p + ".mamba.in_proj.weight", l.mamba.in_proj);
      fn(p + ".mamba.x_proj.weight", l.mamba.x_proj);
      fn(p + ".mamba.dt_proj.weight", l.mamba.dt_proj);
      fn(p + ".mamba.out_proj.weight", l.mamba.out_proj);
    } else {
      fn(p + ".self_attn.q_proj.weight", l.attn.q);
      fn(p + ".self_attn.k_proj.weight", l.attn.k);
      fn(p + ".self_attn.v_proj.weight", l.attn.v);
      fn(p + ".self_attn.o_proj.weight", l.attn.o);
    }
    const std::string f = p + ".feed_forward";
    if (cfg.layers[il].ffn == FfnKind::Dense) {
      mlp_each(f, l.mlp);
    } else {
      fn(f + ".router.weight", l.moe.router);
      for (size_t e = 0; e < l.moe.experts.size(); ++e)
        mlp_each(f + ".experts." + std::to_string(e), l.moe.experts[e]);
    }
  }
}

namespace {
constexpr const char* kQuantMethod = "jamba.cpp";
// 2: q4 scales in bf16 (4.5 bits per weight); 1 (still read): q4 scales in f32.
constexpr int kQuantFormatVersion = 2;
// The dtype of the `.scale` tensors: f32 per row for int8, bf16 per group for q4 (f32 in v1).
const char* scale_dtype_name(WeightType t, int64_t version) {
  return t == WeightType::Q4 && version >= 2 ? "BF16" : "F32";
}
}  // namespace

WeightType stored_weight_type(const std::string& config_path) {
  std::ifstream in(config_path);
  if (!in) return WeightType::Auto;
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = parse_json_limited(ss.str(), config_path);
  if (!j.is_object() || !j.contains("quantization_config") || j["quantization_config"].is_null())
    return WeightType::Auto;
  const nlohmann::json& q = j["quantization_config"];
  const std::string src = config_path + ": quantization_config";
  if (!q.is_object()) fail(src, " must be an object, got ", brief(q));
  // Fields read without json's own type_error: a wrong type is named like a wrong value.
  auto str = [&](const char* key) -> std::string {
    if (!q.contains(key)) return "";
    if (!q[key].is_string()) fail(src, ": ", key, " must be a string, got ", brief(q[key]));
    return q[key].get<std::string>();
  };
  auto integer = [&](const char* key, int64_t want) {
    if (!q.contains(key) || !q[key].is_number_integer() || q[key].get<int64_t>() != want)
      fail(src, ": ", key, " ", q.contains(key) ? brief(q[key]) : std::string("null"),
           " (expected ", want, ")");
  };
  const std::string method = str("quant_method");
  if (method != kQuantMethod)
    fail(src, ": quant_method '", method, "' is not supported (expected '", kQuantMethod,
         "', written by `jamba quantize`)");
  const int64_t version = q.contains("format_version") && q["format_version"].is_number_integer()
                              ? q["format_version"].get<int64_t>()
                              : 0;
  if (version != 1 && version != kQuantFormatVersion)
    fail(src, ": format_version ",
         q.contains("format_version") ? brief(q["format_version"]) : std::string("null"),
         " is not supported (expected 1 or ", kQuantFormatVersion, ")");
  const std::string wt = str("weight_type");
  if (wt != "int8" && wt != "int8-experts" && wt != "q4")
    fail(src, ": weight_type '", wt, "' (expected int8, int8-experts or q4)");
  if (wt == "q4") integer("group_size", kQ4Group);
  const std::string sd = str("scale_dtype"), want = scale_dtype_name(weight_type_from_name(wt), version);
  if (sd != want) fail(src, ": scale_dtype '", sd, "' (expected ", want, ")");
  return weight_type_from_name(wt);
}

std::string quantization_config_json(WeightType t) {
  nlohmann::json q = {{"quant_method", kQuantMethod},
                      {"format_version", kQuantFormatVersion},
                      {"weight_type", weight_type_name(t)},
                      {"scale_dtype", scale_dtype_name(t, kQuantFormatVersion)}};
  if (t == WeightType::Q4) q["group_size"] = kQ4Group;
  return q.dump();
}

size_t Weights::matrix_bytes() const {
  size_t b = embed.bytes() + (lm_head.w == embed.w && lm_head.w16 == embed.w16 ? 0 : lm_head.bytes());
  auto mlp_bytes = [](const MlpWeights& m) { return m.gate.bytes() + m.up.bytes() + m.down.bytes(); };
  for (const LayerWeights& l : layers) {
    b += l.mamba.in_proj.bytes() + l.mamba.x_proj.bytes() + l.mamba.dt_proj.bytes() +
         l.mamba.out_proj.bytes();
    b += l.attn.q.bytes() + l.attn.k.bytes() + l.attn.v.bytes() + l.attn.o.bytes();
    b += mlp_bytes(l.mlp);
    for (const MlpWeights& e : l.moe.experts) b += mlp_bytes(e);
  }
  return b;
}

Weights Weights::load(const JambaConfig& cfg, const std::string& dir, WeightType type) {
  Weights w;
  const WeightType stored = stored_weight_type(dir + "/config.json");
  w.checkpoint = Checkpoint::open(dir);
  // Weights used in place as stored (a quantized checkpoint, or auto / the file's own float type)
  // are read into memory for fast streaming (MappedFile); a checkpoint converted at load
  // (quantize, f32 <-> bf16) stays mapped, so its source bytes do not stay resident.
  const DType file_dtype = [&] {
    const TensorInfo* e = w.checkpoint.find("model.embed_tokens.weight");
    return e ? e->dtype : DType::F32;
  }();
  const bool in_place_file = stored != WeightType::Auto || type == WeightType::Auto ||
                             (type == WeightType::BF16 && file_dtype == DType::BF16) ||
                             (type == WeightType::F32 && file_dtype == DType::F32);
  if (in_place_file) w.checkpoint = Checkpoint::open(dir, true);
  return build(cfg, std::move(w), type, stored, in_place_file, dir);
}

Weights Weights::view_f32(const JambaConfig& cfg, Checkpoint tensors) {
  const std::string label = tensors.dir();
  Weights w;
  w.checkpoint = std::move(tensors);
  return build(cfg, std::move(w), WeightType::F32, WeightType::Auto, true, label);
}

Weights Weights::build(const JambaConfig& cfg, Weights w, WeightType type, WeightType stored,
                       bool in_place_file, const std::string& dir) {
  Loader L(cfg, w);
  if (stored != WeightType::Auto) {
    if (type != WeightType::Auto && type != stored)
      fail(dir, ": the checkpoint is quantized (config.json quantization_config: ",
           weight_type_name(stored), "); the weight type must be auto or ",
           weight_type_name(stored), ", got ", weight_type_name(type));
    type = stored;
    w.prequantized = true;
  }
  // Matrices that stay unquantized follow Auto unless f32 / bf16 was asked for.
  const TensorInfo* e = w.checkpoint.find("model.embed_tokens.weight");
  const bool auto_bf16 = e && e->dtype == DType::BF16;
  if (type == WeightType::Auto) type = auto_bf16 ? WeightType::BF16 : WeightType::F32;
  w.type = type;
  w.matrices_bf16 = type == WeightType::BF16 || (type != WeightType::F32 && auto_bf16);
  L.set_types(w.matrices_bf16, type, stored);
  const int64_t D = cfg.hidden_size, V = cfg.vocab_size, I = cfg.intermediate_size;
  const int64_t Din = cfg.d_inner(), N = cfg.mamba_d_state, R = cfg.mamba_dt_rank,
                K = cfg.mamba_d_conv;
  const int64_t nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads, hd = cfg.head_dim();
  const int64_t E = cfg.num_experts;
  // Derived sizes, checked (validate() bounds the fields so that these fit; the checks keep a
  // config that bypassed it from wrapping into a small shape).
  const char* what = "[load] weight shape from the config";
  const int64_t Din2 = checked_mul(2, Din, what);                     // in_proj rows 2Din
  const int64_t RN2 = checked_add(R, checked_mul(2, N, what), what);  // x_proj rows R+2N
  const int64_t nq = checked_mul(nh, hd, what), nk = checked_mul(nkv, hd, what);
  const int64_t I2 = checked_mul(2, I, what);  // fused gate_up rows 2I
  const int64_t ID = checked_mul(I, D, what);  // one expert matrix
  checked_mul(checked_mul(E, I2, what), D, what);  // fused gate_up numel E*2I*D

  w.embed = linear(L, "model.embed_tokens", V, D, false, Role::Embedding);
  w.final_norm = L.get("model.final_layernorm.weight", {D});
  if (cfg.tie_word_embeddings) {
    // int8 / q4: the head every decode step streams is a quantized copy (the gather keeps the
    // embedding as loaded); `jamba quantize` stores it as lm_head.weight (older quantized
    // checkpoints without it: quantized here, the same values).
    const QuantKind hq = quant_for(Role::LmHead, type);
    if (L.stored_quant(Role::LmHead) != QuantKind::None && L.has("lm_head.weight")) {
      w.lm_head = linear(L, "lm_head", V, D, false, Role::LmHead);
    } else {
      if (hq != QuantKind::None)
        L.quantize_copy("model.embed_tokens.weight", V, D, hq, &w.lm_head);
      else
        w.lm_head = w.embed;
      if (L.has("lm_head.weight")) L.info("lm_head.weight", {V, D});  // present but ignored (HF)
    }
  } else {
    w.lm_head = linear(L, "lm_head", V, D, false, Role::LmHead);
  }

  for (int64_t il = 0; il < cfg.num_hidden_layers; ++il) {
    const std::string p = "model.layers." + std::to_string(il);
    const LayerSpec& spec = cfg.layers[size_t(il)];
    LayerWeights lw;
    lw.input_norm = L.get(p + ".input_layernorm.weight", {D});
    lw.pre_ff_norm = L.get(p + ".pre_ff_layernorm.weight", {D});
    if (spec.mixer == MixerKind::Mamba) {
      const std::string m = p + ".mamba";
      MambaWeights& mw = lw.mamba;
      mw.in_proj = linear(L, m + ".in_proj", Din2, D, cfg.mamba_proj_bias);
      // conv1d.weight is [Din, 1, K]; some exporters squeeze it to [Din, K].
      if (L.has(m + ".conv1d.weight") &&
          w.checkpoint.find(m + ".conv1d.weight") &&
          w.checkpoint.find(m + ".conv1d.weight")->shape.size() == 2)
        mw.conv_w = L.get(m + ".conv1d.weight", {Din, K});
      else
        mw.conv_w = L.get(m + ".conv1d.weight", {Din, 1, K});
      if (cfg.mamba_conv_bias) mw.conv_b = L.get(m + ".conv1d.bias", {Din});
      mw.x_proj = linear(L, m + ".x_proj", RN2, Din, false);
      mw.dt_proj = linear(L, m + ".dt_proj", Din, R, true, Role::KeepF32);
      mw.out_proj = linear(L, m + ".out_proj", D, Din, cfg.mamba_proj_bias);
      mw.A_log = L.get(m + ".A_log", {Din, N});
      mw.A.resize(size_t(Din * N));
      for (size_t i = 0; i < mw.A.size(); ++i) mw.A[i] = -std::exp(mw.A_log[i]);
      mw.D = L.get(m + ".D", {Din});
      mw.dt_norm = L.get(m + ".dt_layernorm.weight", {R});
      mw.b_norm = L.get(m + ".b_layernorm.weight", {N});
      mw.c_norm = L.get(m + ".c_layernorm.weight", {N});
    } else {
      const std::string a = p + ".self_attn";
      lw.attn.q = linear(L, a + ".q_proj", nq, D, false);
      lw.attn.k = linear(L, a + ".k_proj", nk, D, false);
      lw.attn.v = linear(L, a + ".v_proj", nk, D, false);
      lw.attn.o = linear(L, a + ".o_proj", D, nq, false);
    }
    const std::string f = p + ".feed_forward";
    if (spec.ffn == FfnKind::Dense) {
      lw.mlp = mlp(L, f, D, I, Role::Matrix);
    } else {
      lw.moe.router = linear(L, f + ".router", E, D, false, Role::KeepF32);
      if (L.has(f + ".experts.gate_up_proj")) {
        // transformers v5 fused layout (spec §5.2): gate_up [E, 2I, D], down [E, D, I].
        const TensorInfo& gu = L.info(f + ".experts.gate_up_proj", {E, I2, D});
        const TensorInfo& dn = L.info(f + ".experts.down_proj", {E, D, I});
        const size_t es = dtype_size(gu.dtype);
        for (int64_t e = 0; e < E; ++e) {
          MlpWeights x;
          // (E * 2I * D fits int64, checked above.)
          L.fill_matrix(gu, gu.data + size_t((e * 2) * ID) * es, I, D, Role::Expert, &x.gate);
          L.fill_matrix(gu, gu.data + size_t((e * 2 + 1) * ID) * es, I, D, Role::Expert, &x.up);
          L.fill_matrix(dn, dn.data + size_t(e * ID) * es, D, I, Role::Expert, &x.down);
          lw.moe.experts.push_back(x);
        }
      } else {
        for (int64_t e = 0; e < E; ++e)
          lw.moe.experts.push_back(mlp(L, f + ".experts." + std::to_string(e), D, I, Role::Expert));
      }
    }
    w.layers.push_back(std::move(lw));
  }
  L.finish();
  // Converted at load, the file stays mapped; a bf16 embedding is still used from it, and when
  // tied (and not quantized) it is the LM head every decode step streams: give it its own (fast)
  // memory.
  if (!in_place_file && w.embed.w16 && w.lm_head.w16 == w.embed.w16) {
    const bool owned = std::any_of(w.owned16.begin(), w.owned16.end(),
                                   [&](const auto& v) { return v->data() == w.embed.w16; });
    if (!owned) {
      const uint16_t* src = w.embed.w16;
      auto copy = std::make_unique<AlignedVector<uint16_t>>(src, src + w.embed.out * w.embed.in);
      w.embed.w16 = copy->data();
      if (w.lm_head.w16 == src) w.lm_head.w16 = copy->data();
      w.owned16.push_back(std::move(copy));
    }
  }
  return w;
}

}  // namespace jamba
