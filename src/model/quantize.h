// `jamba quantize`: a checkpoint directory rewritten with quantized matrices (docs/QUANT.md).
#pragma once
#include <string>

#include "model/model.h"

namespace jamba {

// Loads `in_dir` quantizing at load to `type` (Int8, Int8Experts or Q4) and writes `out_dir`:
// model.safetensors with every quantized matrix as `<name>` (I8 / U8) + `<name>.scale` (F32)
// and every other tensor copied unchanged (canonical names), config.json with a
// `quantization_config` entry, and the tokenizer files found next to the input. Each file is
// written atomically. Loading `out_dir` gives exactly the weights of loading `in_dir` with `type`.
void write_quantized_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                WeightType type);

}  // namespace jamba
