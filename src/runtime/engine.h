// Batched generation engine: requests of different prompt lengths advance together, one forward
// per step (prompt chunks and single decode tokens of all active requests share every GEMM);
// requests join and leave independently. The base of `jamba generate`, `jamba chat` and a
// continuous-batching server.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/threads.h"
#include "model/model.h"
#include "runtime/prefix_cache.h"
#include "runtime/sampler.h"

namespace jamba {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 256;
  SamplingParams sampling{.temperature = 0.0f};
  std::vector<int32_t> stop_ids;  // generation ends after emitting any of these
  bool record_logits = false;     // keep the logits of every sampled step (for exact checks)
  // >= 0: every TokenEvent carries the sampled token's log-probability under the model (log
  // softmax of the raw logits, before penalties and temperature) and this many top alternatives.
  int logprobs = -1;
};

inline constexpr int kMaxTopLogprobs = 20;

struct TokenEvent {
  int32_t token = 0;
  float logprob = 0;                                  // if GenerateRequest::logprobs >= 0
  std::vector<std::pair<int32_t, float>> top;         // (id, logprob), best first
};

enum class FinishReason { Running, Length, Stop, Cancelled };
const char* finish_reason_name(FinishReason r);

struct RequestResult {
  std::vector<int32_t> tokens;  // generated tokens (a stop id, if hit, is included)
  FinishReason finish = FinishReason::Running;
  int64_t prompt_tokens = 0;
  int64_t reused_tokens = 0;  // prompt tokens restored from the prefix cache
  double prefill_seconds = 0, decode_seconds = 0;
  std::vector<std::vector<float>> step_logits;  // if record_logits
};

struct EngineOptions {
  int64_t prefill_chunk = 512;    // prompt tokens per request per step
  int64_t max_context = 0;        // 0 = config.max_position_embeddings
  bool prefix_cache = true;
  size_t prefix_cache_bytes = size_t(1) << 30;
  // During a prefill, also snapshot every this many tokens (0 = only at the end of the prompt),
  // so a later prompt that diverges inside this one still resumes from the last boundary.
  int64_t snapshot_interval = 1024;
  // While any request is decoding, the prompt tokens of all prefilling requests together are
  // limited to this many per step (0 = no limit beyond prefill_chunk each), so a long new prompt
  // is prefilled in slices between the decode steps of the running streams instead of stalling
  // them for a whole prefill_chunk.
  int64_t prefill_budget_while_decoding = 0;
  // > 0: the budget above adapts so that a step with prompt tokens takes at most about
  // (1 + this) times a decode-only step (measured: moving averages of the decode step time and
  // of the time per prompt token), between 8 tokens and prefill_budget_while_decoding.
  double decode_stall_ratio = 0;
  // Also snapshot every finished request (prompt + generated tokens), so the next turn of a
  // conversation resumes after the answer.
  bool snapshot_finished = true;
  // Steps run on the thread count (all, half, ..., 1) measured fastest for their kind (decode
  // batch size, prompt tokens' power of two), timed again now and then (core/threads.h,
  // ThreadTuner): on a machine shared with other work, fewer threads than cores decode several
  // times faster.
  bool adaptive_threads = true;
};

class Engine {
 public:
  // Called for every generated token; return false to stop that request.
  using TokenCallback = std::function<bool(int64_t request_id, int32_t token)>;
  // The same with the token's log-probabilities (GenerateRequest::logprobs).
  using EventCallback = std::function<bool(int64_t request_id, const TokenEvent& ev)>;

  Engine(const Model& model, EngineOptions opts = {});

  // Throws Error naming the problem: empty prompt, token ids outside the vocabulary, a prompt
  // longer than the context, bad sampling params.
  void validate(const GenerateRequest& req) const;
  // Validates and queues; returns the request id.
  int64_t submit(GenerateRequest req, TokenCallback on_token = {});
  int64_t submit_events(GenerateRequest req, EventCallback on_event);
  void cancel(int64_t id);
  void step();  // one forward over every active request
  bool idle() const { return active_.empty(); }
  void run_until_idle() {
    while (!idle()) step();
  }
  bool finished(int64_t id) const { return done_.count(id) != 0; }
  RequestResult take_result(int64_t id);  // throws if not finished
  PrefixCache& prefix_cache() { return cache_; }
  int64_t active_count() const { return int64_t(active_.size()); }
  int64_t max_context() const { return opts_.max_context; }
  const Model& model() const { return model_; }

 private:
  struct Active {
    int64_t id;
    GenerateRequest req;
    EventCallback cb;
    SequenceState state;
    Sampler sampler;
    std::vector<int32_t> history;  // prompt + generated
    int64_t fed = 0;               // tokens of history consumed by state
    RequestResult res;
    double t_start = 0;
    bool prefill_done = false;
  };
  bool accept(Active& a, const float* logits);  // sample + bookkeeping; false when finished
  void finish(Active& a, FinishReason r, const float* last_logits = nullptr);

  int64_t prefill_budget() const;  // prompt tokens per step while requests decode

  const Model& model_;
  EngineOptions opts_;
  double avg_decode_step_s_ = 0;   // moving average of decode-only steps
  double avg_prompt_token_s_ = 0;  // moving average of the time per prompt token
  ThreadTuner tuner_;              // the steps' thread counts, per kind
  PrefixCache cache_;
  int64_t next_id_ = 1;
  std::vector<std::unique_ptr<Active>> active_;
  std::map<int64_t, RequestResult> done_;
};

}  // namespace jamba
