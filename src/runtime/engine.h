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
};

class Engine {
 public:
  // Called for every generated token; return false to stop that request.
  using TokenCallback = std::function<bool(int64_t request_id, int32_t token)>;

  Engine(const Model& model, EngineOptions opts = {});

  // Throws Error naming the problem: empty prompt, token ids outside the vocabulary, a prompt
  // longer than the context, bad sampling params.
  void validate(const GenerateRequest& req) const;
  // Validates and queues; returns the request id.
  int64_t submit(GenerateRequest req, TokenCallback on_token = {});
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

 private:
  struct Active {
    int64_t id;
    GenerateRequest req;
    TokenCallback cb;
    SequenceState state;
    Sampler sampler;
    std::vector<int32_t> history;  // prompt + generated
    int64_t fed = 0;               // tokens of history consumed by state
    RequestResult res;
    double t_start = 0;
    bool prefill_done = false;
  };
  bool accept(Active& a, const float* logits);  // sample + bookkeeping; false when finished
  void finish(Active& a, FinishReason r);

  const Model& model_;
  EngineOptions opts_;
  PrefixCache cache_;
  int64_t next_id_ = 1;
  std::vector<std::unique_ptr<Active>> active_;
  std::map<int64_t, RequestResult> done_;
};

}  // namespace jamba
