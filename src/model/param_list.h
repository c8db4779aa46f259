// One list of every parameter of a config, in HF names and shapes (spec §5.1), with its default
// initialisation (spec §6). Drives `jamba init`, and is the list training/saving iterate over.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"

namespace jamba {

enum class InitKind {
  Normal,     // N(0, initializer_range)
  Zeros,      // biases
  Ones,       // norm weights, D
  ALog,       // log(n + 1) per row
  Embedding,  // N(0, initializer_range), row pad_token_id zeroed
};

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  InitKind init;
};

std::vector<ParamSpec> param_list(const JambaConfig& cfg);

}  // namespace jamba
