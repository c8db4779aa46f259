// Whole-model training step over a [B, T] batch with HF labels: the model's forward
// (model/blocks.h forward_layers, saving activations on a tape) -> final norm -> LM head ->
// losses, and the backward. Losses as HF's JambaForCausalLM computes them
// (../shared/golden-train/README.md): cross-entropy with the internal shift and -100 ignored
// (mean over the targets of the whole batch), the Switch-style aux loss pooled over all MoE
// layers, total = loss + router_aux_loss_coef * aux when config.output_router_logits.
#pragma once
#include <cstdint>
#include <vector>

#include "train/blocks_grad.h"
#include "train/params.h"

namespace jamba {

constexpr int64_t kIgnoreIndex = -100;

struct TrainBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids;     // [B, T] token ids
  std::vector<int64_t> labels;  // [B, T] HF labels (= input_ids, -100 ignored); shifted inside
  int64_t n_targets() const;    // entries of labels[:, 1:] that are not -100
  // Rows [b0, b0 + n) of the batch (a micro-batch for gradient accumulation).
  TrainBatch rows(int64_t b0, int64_t n) const;
};

struct LossOptions {
  // The objective's cross-entropy term is ce_sum / ce_denominator; 0 = this batch's own number
  // of targets (HF's mean). Gradient accumulation passes the global batch's count.
  double ce_denominator = 0;
  // Weight of the (unscaled) aux loss in the objective; < 0 = router_aux_loss_coef when
  // config.output_router_logits, else 0.
  double aux_weight = -1;
  // Activation checkpointing: > 0 keeps only the stream entering every group of this many
  // layers (and the last group's activations); the backward recomputes a group's forward before
  // its backward. 0 keeps every layer's activations.
  int64_t checkpoint_every = 0;
};

struct LossValues {
  double ce_sum = 0;      // sum over targets of logsumexp - target logit
  int64_t n_targets = 0;  // targets in this batch
  int64_t aux_rows = 0;   // router rows pooled into the aux loss (n_moe_layers * B * T)
  float loss = 0;         // ce_sum / n_targets (HF `loss`)
  float aux_loss = 0;     // unscaled aux loss (0 unless output_router_logits)
  float total_loss = 0;   // loss + coef * aux_loss (HF `out.loss`)
  double objective = 0;   // what the backward differentiates, in double: ce_sum / denominator
                          // + aux_weight * aux (finite-difference tests use it)
};

// Everything the backward needs, saved by the forward.
struct Tape {
  std::vector<LayerTape> layers;  // per layer (model/blocks.h); empty where checkpointed
  int64_t group = 0;              // layers per checkpoint group (= all layers without)
  std::vector<std::vector<float>> group_in;  // [M, D] stream entering each group (checkpointing)
  std::vector<float> h_final;  // [M, D] residual stream after the last layer
  std::vector<float> hn;       // [M, D] final RMSNorm output
  std::vector<float> aux_dp;   // [E] d objective / d router prob, every MoE row (empty: none)
  double ce_scale = 0;         // d objective / d ce_sum
};

// What a step runs on: the model's weights and the store whose parameters they view (the
// gradients' owner). Full training: W = P.view(); LoRA: W = the frozen base with adapters that
// view P's tensors (train/lora_train.h).
struct TrainTarget {
  const JambaConfig& cfg;
  const Weights& W;
};

// Forward; fills `tape` when non-null (without one, only a layer's activations at a time are
// held). Throws on bad token ids, labels or shapes.
LossValues train_forward(const TrainTarget& m, const TrainBatch& b, const LossOptions& o,
                         Tape* tape);
LossValues train_forward(const ParamStore& P, const TrainBatch& b, const LossOptions& o,
                         Tape* tape);
// Accumulates d objective / d parameter into G (objective = ce_sum * ce_scale + aux_weight *
// aux) for the weights that are parameters of G's store. Parameters never touched (experts
// without tokens) keep no gradient. Recomputes checkpointed groups; each layer's activations
// are freed once its backward is done (the tape is consumed).
void train_backward(const TrainTarget& m, const TrainBatch& b, Tape& tape, Grads& G);

// train_forward + train_backward.
LossValues forward_backward(const TrainTarget& m, const TrainBatch& b, const LossOptions& o,
                            Grads& G);
LossValues forward_backward(const ParamStore& P, const TrainBatch& b, const LossOptions& o,
                            Grads& G);

// Gradient accumulation: the batch split into micro-batches of `micro_rows` sequences (0 = one
// micro-batch). Gradients are summed with the CE term of every micro-batch divided by the
// global target count, so the CE part equals the full batch's exactly; each micro-batch's aux
// loss is weighted by its share of the rows (the aux loss pools over a micro-batch, so with MoE
// layers the aux part is the mean of per-micro-batch aux losses). Returns the global values.
LossValues accumulate_gradients(const TrainTarget& m, const TrainBatch& b, int64_t micro_rows,
                                Grads& G, int64_t checkpoint_every = 0);
LossValues accumulate_gradients(const ParamStore& P, const TrainBatch& b, int64_t micro_rows,
                                Grads& G);

// The same over one shard of a larger global batch (data parallelism: each process holds
// `b`, rows of a global batch of `global_rows` sequences with `global_targets` targets). The CE
// term of every micro-batch is divided by the global target count and each micro-batch's aux
// loss is weighted by its share of the global rows, so summing the gradients of all shards gives
// exactly accumulate_gradients over the global batch split into the same micro-batches.
// Returned: ce_sum, n_targets and aux_rows of this shard; aux_loss is this shard's weighted part
// (sum over its micro-batches of share * aux); loss / total_loss are not set (they need the
// other shards: see finish_shard_losses).
LossValues accumulate_shard_gradients(const TrainTarget& m, const TrainBatch& b,
                                      int64_t micro_rows, int64_t global_rows,
                                      int64_t global_targets, Grads& G,
                                      int64_t checkpoint_every = 0);
// loss, aux_loss, total_loss of the global batch from the shards' summed ce_sum and weighted
// aux parts.
LossValues finish_shard_losses(const JambaConfig& cfg, double ce_sum, double aux_part,
                               int64_t global_targets);

}  // namespace jamba
