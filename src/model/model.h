// The Jamba model: immutable weights + config; forward over a ragged batch of sequences, each
// with its own explicit SequenceState (spec §2, §3).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/memory_plan.h"
#include "model/state.h"
#include "model/weights.h"

namespace jamba {

enum class LogitsMode { None, Last, All };

// One sequence's contribution to a forward call: its new tokens, appended to its state.
struct BatchItem {
  SequenceState* state = nullptr;
  std::span<const int32_t> tokens;
  std::span<const uint8_t> mask;  // empty = all real tokens; 0 = (left) padding
  LogitsMode logits = LogitsMode::Last;
};

struct ForwardOutput {
  // Logits rows for the requested positions, items in order: [n_rows, V].
  std::vector<float> logits;
  std::vector<int64_t> logit_row_offset;  // per item: first row in `logits`; size = items + 1
  // If capture_hidden: hidden[i] is [M, D] over all M tokens of the batch (items in order),
  // i = 0..L: 0 = embeddings, i = residual after layer i-1, L = final norm of the last layer.
  bool capture_hidden = false;
  std::vector<std::vector<float>> hidden;
};

// How the big matrices are held in memory (WeightType, weights.h). Auto keeps BF16 checkpoints
// in bf16 (no f32 copy) and holds everything else in f32, or keeps a quantized checkpoint as
// stored; F32 / BF16 convert at load. Int8 / Q4 quantize every linear layer and an untied LM
// head at load, except dt_proj and the router (f32) and the embedding (as Auto; with it a tied
// LM head); Int8Experts quantizes the
// MoE experts only (Jamba 1.5's ExpertsInt8) and keeps the rest as Auto. Norms, conv, A, D,
// biases and routers are always f32.
// "auto", "f32", "bf16", "int8", "int8-experts", "q4"
WeightType weight_type_from_name(const std::string& name);
const char* weight_type_name(WeightType t);

// The activations entering the GEMMs of bf16 matrices. Auto = Bf16 when the matrices are held
// in bf16: each input is rounded to bf16, as HF computes a bf16 checkpoint, and the GEMMs run on
// the AVX512-BF16 dot products / oneDNN's bf16 matmul (~4x the f32 rate for prefill). F32 keeps
// float32 inputs (bf16 weights times f32 activations: closest to a float32 run, slower prefill).
// Quantized and f32 matrices always take f32 activations.
enum class MatmulActivations { Auto, F32, Bf16 };
// "auto", "f32", "bf16"; anything else throws naming the value.
MatmulActivations matmul_activations_from_name(const std::string& name);

// Sets Linear::bf16_activations of every bf16 matrix of w as `a` resolves (Auto: bf16 when the
// matrices are held in bf16) and Weights::bf16_activations; Model::load calls it.
void set_matmul_activations(Weights& w, const JambaConfig& cfg, MatmulActivations a);

struct LoadOptions {
  WeightType weights = WeightType::Auto;
  MatmulActivations activations = MatmulActivations::Auto;
  KvDtype kv = KvDtype::Auto;  // K/V cache of the states new_state() makes (memory_plan.h)
  std::string lora;  // a PEFT LoRA adapter directory applied on the fly (model/lora.h), or ""
};

class Model {
 public:
  static Model load(const std::string& dir, LoadOptions opts = {});  // config.json + safetensors
  Model(JambaConfig cfg, Weights w, KvDtype kv = KvDtype::F32)
      : cfg_(std::move(cfg)), w_(std::move(w)), kv_(kv == KvDtype::BF16 ? kv : KvDtype::F32) {}

  const JambaConfig& config() const { return cfg_; }
  const Weights& weights() const { return w_; }
  SequenceState new_state() const { return SequenceState::create(cfg_, kv_ == KvDtype::BF16); }
  KvDtype kv_dtype() const { return kv_; }  // resolved: F32 or BF16

  // Runs the batch; advances every item's state. Throws on bad token ids / shapes before
  // touching any state.
  void forward(std::span<BatchItem> batch, ForwardOutput* out) const;

 private:
  JambaConfig cfg_;
  Weights w_;
  KvDtype kv_ = KvDtype::F32;
};

}  // namespace jamba
