#include "runtime/session_file.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"

namespace jamba {

namespace {
uint64_t fnv1a(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}
}  // namespace

std::string model_fingerprint(const Model& model) {
  const JambaConfig& c = model.config();
  JambaConfig k = c;
  k.torch_dtype = "";  // the same model in another file dtype keeps its sessions
  uint64_t h = fnv1a(k.to_json_text().data(), k.to_json_text().size());
  // A sample of the weights (as f32, whatever their in-memory type): distinguishes two random
  // inits of one config.
  const Linear& e = model.weights().embed;
  const size_t n = size_t(std::min<int64_t>(c.vocab_size * c.hidden_size, 4096));
  std::vector<float> sample(n);
  if (e.w16)
    convert_to_f32(DType::BF16, e.w16, sample.data(), n);
  else
    std::copy_n(e.w, n, sample.data());
  for (float& v : sample) v = bf16_to_f32(f32_to_bf16(v));  // f32 and bf16 loads agree
  h = fnv1a(sample.data(), n * sizeof(float), h);
  return hex(h);
}

void save_session(const std::string& path, const Model& model, const Session& s) {
  const JambaConfig& c = model.config();
  const int64_t nkv = c.num_key_value_heads, hd = c.head_dim();
  const int64_t P = s.state.pos;
  JAMBA_CHECK(int64_t(s.tokens.size()) == P, "[session] ", s.tokens.size(),
              " tokens for a state at position ", P);
  SafetensorsWriter w;
  std::vector<int64_t> toks(s.tokens.begin(), s.tokens.end());
  w.add_i64("tokens", {P}, toks.data());
  w.add("key_valid", DType::U8, {P}, s.state.key_valid.data());
  if (!s.last_logits.empty())
    w.add_f32("last_logits", {int64_t(s.last_logits.size())}, s.last_logits.data());
  std::vector<float> kv;
  std::vector<uint16_t> kv16;
  for (size_t il = 0; il < c.layers.size(); ++il) {
    const std::string p = "layers." + std::to_string(il) + ".";
    if (c.layers[il].mixer == MixerKind::Mamba) {
      const MambaLayerState& m = s.state.mamba[il];
      w.add_f32(p + "conv", {c.d_inner(), c.mamba_d_conv}, m.conv.data());
      w.add_f32(p + "ssm", {c.d_inner(), c.mamba_d_state}, m.ssm.data());
    } else {
      const AttnLayerState& a = s.state.attn[il];
      // As held: an f32 cache as F32, a bf16 one as BF16 (exact either way).
      for (int which = 0; which < 2; ++which) {
        const std::string name = p + (which ? "v" : "k");
        if (a.bf16) {
          kv16.resize(size_t(nkv * P * hd));
          const std::vector<uint16_t>& src = which ? a.v16 : a.k16;
          if (P > 0)
            for (int64_t g = 0; g < nkv; ++g)
              std::memcpy(kv16.data() + g * P * hd, src.data() + g * a.cap * hd,
                          size_t(P * hd) * sizeof(uint16_t));
          w.add(name, DType::BF16, {nkv, P, hd}, kv16.data());
          continue;
        }
        kv.resize(size_t(nkv * P * hd));
        // P = 0: both vectors may be empty (null data), which memcpy does not allow.
        if (P > 0)
          for (int64_t g = 0; g < nkv; ++g) a.read(which, g, P, hd, kv.data() + g * P * hd);
        w.add_f32(name, {nkv, P, hd}, kv.data());
      }
    }
  }
  // Checksum over the payload in data order (the writer lays tensors out in insertion order).
  w.set_metadata("format", "jamba-session");
  w.set_metadata("version", std::to_string(kSessionVersion));
  w.set_metadata("model", model_fingerprint(model));
  w.set_metadata("n_tokens", std::to_string(P));
  w.set_metadata("checksum", hex(w.payload_checksum()));
  w.write(path);
}

Session load_session(const std::string& path, const Model& model) {
  std::shared_ptr<SafetensorsFile> f;
  try {
    f = SafetensorsFile::open(path);
  } catch (const Error& e) {
    fail(path, ": not a valid jamba session file: ", e.what());
  }
  const auto& md = f->metadata();
  auto meta = [&](const char* k) -> std::string {
    auto it = md.find(k);
    if (it == md.end()) fail(path, ": not a jamba session file (metadata '", k, "' missing)");
    return it->second;
  };
  if (meta("format") != "jamba-session")
    fail(path, ": not a jamba session file (format '", meta("format"), "')");
  if (meta("version") != std::to_string(kSessionVersion))
    fail(path, ": session version ", meta("version"), ", this build reads version ",
         kSessionVersion);
  const std::string fp = model_fingerprint(model);
  if (meta("model") != fp)
    fail(path, ": session belongs to another model (fingerprint ", meta("model"),
         ", this model is ", fp, ")");
  if (meta("checksum") != hex(f->payload_checksum()))
    fail(path, ": checksum mismatch (file says ", meta("checksum"), ", data gives ",
         hex(f->payload_checksum()), "): the file is damaged");
  const JambaConfig& c = model.config();
  const int64_t nkv = c.num_key_value_heads, hd = c.head_dim();

  // 1. Every tensor's presence, dtype and shape against the config, before anything is allocated
  //    from the file's sizes (a file could otherwise claim millions of tokens and make us reserve
  //    their KV cache before it turns out to hold no K/V at all).
  // K/V may be F32 or BF16 (the cache type of the model that wrote it); the cache of this model
  // takes either (bf16 -> f32 exact, f32 -> bf16 rounded once).
  auto expect = [&](const std::string& name, DType dt, std::vector<int64_t> shape,
                    bool or_bf16 = false) -> const TensorInfo& {
    const TensorInfo* t = f->find(name);
    if (!t)
      fail(path, ": tensor '", name, "' is missing (expected ", dtype_name(dt), shape_str(shape),
           ")");
    if (or_bf16 && t->dtype == DType::BF16) dt = DType::BF16;
    if (t->dtype != dt || t->shape != shape)
      fail(path, ": tensor '", name, "': expected ", dtype_name(dt), shape_str(shape), ", got ",
           dtype_name(t->dtype), shape_str(t->shape));
    return *t;
  };
  const TensorInfo* toks_p = f->find("tokens");
  if (!toks_p) fail(path, ": tensor 'tokens' is missing");
  const TensorInfo& toks = *toks_p;
  if (toks.dtype != DType::I64 || toks.shape.size() != 1)
    fail(path, ": tensor 'tokens': expected I64[n_tokens], got ", dtype_name(toks.dtype),
         shape_str(toks.shape));
  const int64_t P = toks.shape[0];
  if (meta("n_tokens") != std::to_string(P))
    fail(path, ": metadata n_tokens ", meta("n_tokens"), " but 'tokens' holds ", P);
  const TensorInfo& kvalid = expect("key_valid", DType::U8, {P});
  const TensorInfo* logits = f->find("last_logits");
  if (logits) expect("last_logits", DType::F32, {c.vocab_size});
  const int64_t Din = c.d_inner();
  struct LayerTensors {
    const TensorInfo* a = nullptr;  // conv or k
    const TensorInfo* b = nullptr;  // ssm or v
  };
  std::vector<LayerTensors> lt(c.layers.size());
  for (size_t il = 0; il < c.layers.size(); ++il) {
    const std::string p = "layers." + std::to_string(il) + ".";
    if (c.layers[il].mixer == MixerKind::Mamba) {
      lt[il] = {&expect(p + "conv", DType::F32, {Din, c.mamba_d_conv}),
                &expect(p + "ssm", DType::F32, {Din, c.mamba_d_state})};
    } else {
      lt[il] = {&expect(p + "k", DType::F32, {nkv, P, hd}, true),
                &expect(p + "v", DType::F32, {nkv, P, hd}, true)};
    }
  }
  // tokens, key_valid, [last_logits], two per layer
  const size_t expected = 2 + (logits ? 1 : 0) + 2 * c.layers.size();
  if (f->tensors().size() != expected) {
    std::string extra;  // a tensor that is none of the above
    for (const auto& [name, t] : f->tensors()) {
      const bool known = name == "tokens" || name == "key_valid" || name == "last_logits";
      bool layer = false;
      for (size_t il = 0; il < lt.size() && !known && !layer; ++il)
        layer = &t == lt[il].a || &t == lt[il].b;
      if (!known && !layer) {
        extra = name;
        break;
      }
    }
    fail(path, ": ", f->tensors().size(), " tensors, expected ", expected,
         extra.empty() ? "" : " (unexpected tensor '" + extra + "')");
  }

  // 2. Values, now that the sizes are known to be those of the model (and each allocation below
  //    is backed by as many bytes of the file).
  Session s;
  for (int64_t t : tensor_to_i64(toks)) {
    if (t < 0 || t >= c.vocab_size)
      fail(path, ": token id ", t, " outside the vocabulary [0, ", c.vocab_size, ")");
    s.tokens.push_back(int32_t(t));
  }
  s.state = model.new_state();
  s.state.pos = P;
  s.state.key_valid.assign(kvalid.data, kvalid.data + P);
  if (logits) s.last_logits = tensor_to_f32(*logits);
  for (size_t il = 0; il < c.layers.size(); ++il) {
    if (c.layers[il].mixer == MixerKind::Mamba) {
      s.state.mamba[il].conv = tensor_to_f32(*lt[il].a);
      s.state.mamba[il].ssm = tensor_to_f32(*lt[il].b);
    } else {
      AttnLayerState& a = s.state.attn[il];
      a.reserve(nkv, hd, std::max<int64_t>(P, 1), 0);
      const auto k = tensor_to_f32(*lt[il].a);  // [nkv, P, hd]
      const auto v = tensor_to_f32(*lt[il].b);
      if (P > 0)  // empty (data() may be null) for a 0-token session
        for (int64_t g = 0; g < nkv; ++g)
          a.write(g, 0, P, hd, k.data() + g * P * hd, v.data() + g * P * hd, hd);
    }
  }
  return s;
}

}  // namespace jamba
