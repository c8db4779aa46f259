// libFuzzer target: session files (load_session, what `jamba generate --prompt-cache` reads).
// The model is a tiny random one built once at startup (tiny_model.h).
//
// Each input is tried twice: as it is, and with its __metadata__ "model" and "checksum" set to
// this model's fingerprint and the payload's checksum (when it opens as a safetensors file), so
// that mutations get past those two checks to the per-tensor ones.
// Properties of a session that loads: sizes agree with the model and the token count, and
// save_session + load_session reproduces it bit for bit.
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/json_limits.h"
#include "io/safetensors.h"
#include "runtime/session_file.h"
#include "tiny_model.h"

using namespace jamba;

namespace {

struct Fixture {
  fuzz::ScratchDir dir{"session"};
  Model model;
  std::string fingerprint;

  Fixture()
      : model(fuzz::make_tiny_model(dir.file("model"))), fingerprint(model_fingerprint(model)) {}
};

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

void check_session(const Fixture& fx, const std::string& path, const Session& s) {
  const JambaConfig& c = fx.model.config();
  const int64_t P = s.state.pos;
  FUZZ_CHECK(int64_t(s.tokens.size()) == P && int64_t(s.state.key_valid.size()) == P,
             "session: ", s.tokens.size(), " tokens, ", s.state.key_valid.size(),
             " key_valid, pos ", P);
  FUZZ_CHECK(s.last_logits.empty() || int64_t(s.last_logits.size()) == c.vocab_size,
             "last_logits size ", s.last_logits.size());
  for (int32_t t : s.tokens) FUZZ_CHECK(t >= 0 && t < c.vocab_size, "token ", t);
  for (size_t il = 0; il < c.layers.size(); ++il) {
    if (c.layers[il].mixer == MixerKind::Mamba) {
      FUZZ_CHECK(int64_t(s.state.mamba[il].conv.size()) == c.d_inner() * c.mamba_d_conv &&
                     int64_t(s.state.mamba[il].ssm.size()) == c.d_inner() * c.mamba_d_state,
                 "layer ", il, ": Mamba state sizes");
    } else {
      const AttnLayerState& a = s.state.attn[il];
      const int64_t want = c.num_key_value_heads * a.cap * c.head_dim();
      FUZZ_CHECK(a.cap >= P && int64_t(a.k.size()) >= want && int64_t(a.v.size()) >= want, "layer ",
                 il, ": KV cap ", a.cap, " for ", P, " tokens");
    }
  }
  // Round trip.
  const std::string again = fx.dir.file("again.safetensors");
  save_session(again, fx.model, s);
  Session t;
  try {
    t = load_session(again, fx.model);
  } catch (const Error& e) {
    FUZZ_CHECK(false, "a saved session does not load: ", e.what(), " (from ", path, ")");
  }
  FUZZ_CHECK(
      t.tokens == s.tokens && t.state.key_valid == s.state.key_valid && t.state.pos == s.state.pos,
      "round trip: tokens / key_valid / pos differ");
  auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  };
  FUZZ_CHECK(same(t.last_logits, s.last_logits), "round trip: last_logits differ");
  const int64_t hd = c.head_dim();
  for (size_t il = 0; il < c.layers.size(); ++il) {
    if (c.layers[il].mixer == MixerKind::Mamba) {
      FUZZ_CHECK(same(t.state.mamba[il].conv, s.state.mamba[il].conv) &&
                     same(t.state.mamba[il].ssm, s.state.mamba[il].ssm),
                 "round trip: layer ", il, " Mamba state differs");
    } else {
      const AttnLayerState &a = s.state.attn[il], &b = t.state.attn[il];
      for (int64_t g = 0; g < c.num_key_value_heads; ++g)
        for (int which = 0; which < 2; ++which) {
          const float* x = (which ? a.v : a.k).data() + g * a.cap * hd;
          const float* y = (which ? b.v : b.k).data() + g * b.cap * hd;
          FUZZ_CHECK(P == 0 || std::memcmp(x, y, size_t(P * hd) * sizeof(float)) == 0,
                     "round trip: layer ", il, " KV head ", g, " differs");
        }
    }
  }
}

void try_load(const Fixture& fx, const std::string& path) {
  Session s;
  try {
    s = load_session(path, fx.model);
  } catch (const Error&) {
    return;
  }
  check_session(fx, path, s);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  const std::string raw = fx.dir.file("raw.safetensors"), fixed = fx.dir.file("fixed.safetensors");
  fuzz::write_file(raw, fuzz::as_text(data, size));
  try_load(fx, raw);

  // The same file with a matching fingerprint and checksum.
  uint64_t checksum = 0;
  try {
    checksum = SafetensorsFile::open(raw)->payload_checksum();
  } catch (const Error&) {
    return 0;
  }
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  nlohmann::json header = parse_json_limited(fuzz::as_text(data + 8, size_t(n)), "harness");
  nlohmann::json& md = header["__metadata__"];
  md["model"] = fx.fingerprint;
  md["checksum"] = hex(checksum);
  const std::string text = header.dump();
  const uint64_t len = text.size();
  std::string bytes(reinterpret_cast<const char*>(&len), 8);
  bytes += text;
  bytes.append(reinterpret_cast<const char*>(data + 8 + n), size - 8 - size_t(n));
  fuzz::write_file(fixed, bytes);
  try_load(fx, fixed);
  return 0;
}
