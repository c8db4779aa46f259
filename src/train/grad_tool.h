// The job behind `jamba grad` (and the golden training tests): losses and gradients of a batch
// at the checkpoint's weights, optionally followed by N clipped AdamW steps on the same batch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/model_grad.h"
#include "train/optim.h"
#include "train/params.h"

namespace jamba {

// Reads `input_ids` (I64/I32 [B,T]) and `labels` ([B,T]; absent = input_ids) from a
// safetensors file. Throws naming the file and tensor.
TrainBatch read_train_batch(const std::string& path);

struct GradJobOptions {
  int64_t steps = 0;       // AdamW steps on the batch after the gradient (0 = gradient only)
  AdamWOptions adam;       // lr, betas, eps, weight decay (+ exclusion)
  double clip = 1.0;       // max global grad norm; <= 0 disables clipping
  LrSchedule schedule;     // per-step learning rate (constant by default)
  int64_t micro_batch = 0; // sequences per micro-batch for gradient accumulation (0 = all)
};

struct GradJobResult {
  LossValues initial;  // at the checkpoint's weights
  Grads grads;         // d total_loss / d parameter at the checkpoint's weights, before clipping
  // Per step (evaluated before that step's update): total, cross-entropy and aux losses,
  // pre-clip global grad norm, learning rate used.
  std::vector<float> losses, ce_losses, aux_losses, grad_norms, lrs;
  LossValues final_values;  // after the last step (steps > 0)
};

// Runs the job; with steps > 0, P holds the final weights afterwards.
GradJobResult run_grad_job(ParamStore& P, const TrainBatch& b, const GradJobOptions& o);

// Writes loss, aux_loss, total_loss (F32 []), grad.<HF name> for every parameter with a
// gradient; with steps > 0 also losses, ce_losses, aux_losses, grad_norms, lrs (F32 [steps]),
// final.<HF name> for every parameter and final_loss (F32 []). Tensors in HF parameter order.
void write_grad_job(const std::string& path, const ParamStore& P, const GradJobResult& r,
                    const GradJobOptions& o);

}  // namespace jamba
