// Random initialisation of a checkpoint of any shape (spec §6), written in the HF layout.
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "model/config.h"

namespace jamba {

// Writes out_dir/config.json and out_dir/model.safetensors (F32 or BF16), streaming tensor by
// tensor (a 3B model never needs to fit in memory twice). Deterministic in `seed`, independent
// of the thread count. Calls progress(done_bytes, total_bytes) after each tensor if given.
void init_checkpoint(const JambaConfig& cfg, const std::string& out_dir, uint64_t seed,
                     DType dtype, void (*progress)(size_t, size_t) = nullptr);

// Fills n values of the parameter's init distribution; counter-based (value i depends only on
// seed, stream and i).
void init_values(float* dst, size_t n, int kind, int64_t row_len, double std, int64_t pad_row,
                 uint64_t seed, uint64_t stream);

}  // namespace jamba
