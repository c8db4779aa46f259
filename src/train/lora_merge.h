// Merging a LoRA adapter (model/lora.h) into float32 parameters: W' = W + (alpha / r) * B A, the
// weights `jamba merge-lora` writes as a plain checkpoint.
#pragma once
#include "model/lora.h"
#include "train/params.h"

namespace jamba {

// For each adapter module: P["<module>.weight"] [out, in] += scale * B [out, r] @ A [r, in].
// Throws naming the module when P has no such weight or its shape differs from the adapter's.
void merge_lora_into(ParamStore& P, const LoraWeights& lora);

}  // namespace jamba
