// Save / load a sequence's whole hybrid state to a file: a safetensors container (written
// atomically) with format "jamba-session", a version, a fingerprint of the model it belongs to
// and a checksum of the data; every field is checked on load.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace jamba {

constexpr int kSessionVersion = 1;

struct Session {
  std::vector<int32_t> tokens;  // tokens consumed by `state`
  SequenceState state;
  std::vector<float> last_logits;  // logits after the last token (may be empty)
};

std::string model_fingerprint(const Model& model);
void save_session(const std::string& path, const Model& model, const Session& s);
Session load_session(const std::string& path, const Model& model);  // throws naming the problem

}  // namespace jamba
