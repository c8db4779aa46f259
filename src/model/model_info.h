// Parameter and memory accounting from a config alone (no weights needed).
#pragma once
#include <cstdint>

#include "model/config.h"

namespace jamba {

struct ModelStats {
  int64_t params_total = 0;
  int64_t params_active = 0;        // per token (top-k experts, lm_head counted)
  int64_t kv_bytes_per_token = 0;   // f32 K and V of all attention layers
  int64_t state_bytes_per_seq = 0;  // f32 conv + SSM state of all Mamba layers
  int64_t flops_per_token = 0;      // 2 * active matmul params (forward, excluding attention)
};

ModelStats model_stats(const JambaConfig& cfg);

}  // namespace jamba
