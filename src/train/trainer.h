// The training loop behind `jamba train`: data-parallel over a Comm (one process or MPI
// ranks), AdamW with clipping and an LR schedule, periodic held-out loss, and checkpoints in the
// Hugging Face layout written atomically (a checkpoint directory appears complete or not at all),
// with the optimizer state, step and data position needed to resume bit-identically.
//
// Checkpoint directory OUT/checkpoint-<step>/:
//   config.json, generation_config.json, model.safetensors (float32, HF names),
//   tokenizer.model, tokenizer_config.json, special_tokens_map.json   -- what HF loads
//   optimizer.safetensors  exp_avg.<name>, exp_avg_sq.<name> (F32), adam_steps (I64 [P])
//   trainer_state.json     step, samples, seed, batch, seq_len, data fingerprint, log history
// It is built in OUT/.tmp-checkpoint-<step>/ and renamed into place; older checkpoints beyond
// `keep` are removed after the new one exists.
//
// LoRA (the second constructor): the trainable store is the adapters of a frozen base
// (train/lora_train.h); a checkpoint then holds adapter_config.json + adapter_model.safetensors
// (PEFT's layout, loadable by `--lora`) instead of the model files, with the same optimizer and
// trainer state.
#pragma once
#include <csignal>
#include <cstdint>
#include <string>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "model/lora.h"
#include "train/comm.h"
#include "train/data.h"
#include "train/model_grad.h"
#include "train/optim.h"
#include "train/params.h"

namespace jamba {

struct TrainOptions {
  std::string out_dir;
  int64_t steps = 1000;       // total optimizer steps of the run (also the cosine's end)
  int64_t batch = 8;          // sequences per global batch (split across ranks)
  int64_t micro_batch = 0;    // sequences per forward/backward within a rank (0 = its shard)
  AdamWOptions adam;
  double clip = 1.0;          // <= 0: no clipping
  LrSchedule schedule;
  uint64_t seed = 0;          // data order
  int64_t log_every = 10;
  int64_t eval_every = 100;   // 0: only at the end
  int64_t eval_windows = 64;  // held-out windows per evaluation (capped by the held-out part)
  int64_t save_every = 0;     // 0: only at the end (and on interruption)
  int64_t keep = 2;           // checkpoints kept
  int64_t checkpoint_every = 0;  // activation checkpointing: layers per group (0 = off)
  std::string tokenizer_path; // copied into every checkpoint
  bool quiet = false;
};

struct StepRecord {
  int64_t step = 0;  // 1-based: the state after this many updates
  float loss = 0, ce = 0, aux = 0, grad_norm = 0, lr = 0;
  float tokens_per_s = 0;
};
struct EvalRecord {
  int64_t step = 0;
  float loss = 0;  // mean held-out cross-entropy (nats/token)
};

struct TrainResult {
  int64_t step = 0;
  bool interrupted = false;
  std::string checkpoint;  // the last checkpoint written
  float last_eval = 0;
  double seconds = 0, tokens_per_s = 0;
};

class Trainer {
 public:
  Trainer(ParamStore params, const TokenDataset& data, TrainOptions o, Comm& comm);
  // LoRA: trains `adapters` (lora_param_store) on top of the frozen `base`.
  Trainer(ParamStore adapters, Weights base, LoraConfig lora, const TokenDataset& data,
          TrainOptions o, Comm& comm);
  // Continues from a checkpoint directory (checkpoint-<step>) or an output directory (its
  // latest complete checkpoint). Throws when its batch, seq_len, seed or data do not match.
  void resume(const std::string& dir);
  // Runs until o.steps or until *stop becomes non-zero on rank 0 (Ctrl-C): then saves a
  // checkpoint and returns with interrupted = true.
  TrainResult run(const volatile std::sig_atomic_t* stop);

  const ParamStore& params() const { return P_; }
  const std::vector<StepRecord>& history() const { return hist_; }
  const std::vector<EvalRecord>& evals() const { return evals_; }
  // Mean held-out cross-entropy over the first o.eval_windows held-out windows.
  float evaluate();
  std::string save_checkpoint();  // returns the directory written (rank 0); collective

 private:
  void check_options() const;
  LossValues train_step(Grads& G, float* grad_norm_out);
  // f(TrainTarget): the weights a step runs on (a view of P_, or the LoRA base).
  template <class F>
  auto with_target(F&& f) const {
    if (base_) return f(TrainTarget{P_.cfg, *base_});
    const Weights W = P_.view();
    return f(TrainTarget{P_.cfg, W});
  }

  ParamStore P_;
  std::unique_ptr<Weights> base_;  // LoRA: the frozen base, adapters attached to P_
  LoraConfig lora_;
  const TokenDataset& data_;
  TrainOptions o_;
  Comm& comm_;
  AdamW opt_;
  std::vector<size_t> order_;  // HF parameter order (clipping norm)
  int64_t step_ = 0;
  std::vector<StepRecord> hist_;
  std::vector<EvalRecord> evals_;
};

// The latest complete checkpoint-<step> directory under out_dir ("" if none).
std::string latest_checkpoint(const std::string& out_dir);

// Writes an HF model directory (config.json, generation_config.json, model.safetensors in
// `dtype` F32/BF16, tokenizer files when tokenizer_path is set) into `dir`, each file atomically.
void write_hf_model(const std::string& dir, const ParamStore& P, DType dtype,
                    const std::string& tokenizer_path);

// An SVG line chart of the training loss (raw and smoothed) and the held-out loss per step.
std::string loss_curve_svg(const std::vector<StepRecord>& steps,
                           const std::vector<EvalRecord>& evals, const std::string& title);

}  // namespace jamba
