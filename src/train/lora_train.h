// LoRA fine-tuning: the adapters (model/lora.h) of a frozen base are the trainable parameters.
// The store holds A [r, in] and B [out, r] of every targeted module under PEFT's names; the
// base's Linears point at them (Linear::lora), so the model's forward applies them and the
// backward's Grads::slot finds their gradients, while the base (f32, bf16 or quantized) gets none.
#pragma once
#include <cstdint>

#include "model/lora.h"
#include "model/weights.h"
#include "train/params.h"

namespace jamba {

// The adapters of lc.targets over cfg as a store (param order = lora_modules order, A then B):
// A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's default, torch's kaiming_uniform_ with a = sqrt(5)),
// B = 0, so training starts from the base model exactly.
ParamStore lora_param_store(const JambaConfig& cfg, const LoraConfig& lc, uint64_t seed);
// The store's values as a LoraWeights (copied), for LoraWeights::save.
LoraWeights lora_weights_of(const ParamStore& P, const LoraConfig& lc);
// Copies an adapter's values into the store (same config and modules; throws naming the first
// difference).
void load_lora_values(ParamStore& P, const LoraWeights& lw);
// Attaches the store's adapters to base (pointers into P.data: P must outlive base's use and
// keep its tensors in place).
void attach_lora_params(Weights& base, const ParamStore& P, const LoraConfig& lc);

}  // namespace jamba
