#include "runtime/engine.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace jamba {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Running: return "running";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Cancelled: return "cancelled";
  }
  return "?";
}

Engine::Engine(const Model& model, EngineOptions opts)
    : model_(model), opts_(opts), cache_(opts.prefix_cache_bytes) {
  if (opts_.max_context <= 0) opts_.max_context = model.config().max_position_embeddings;
  JAMBA_CHECK(opts_.prefill_chunk > 0, "[engine] prefill_chunk must be positive, got ",
              opts_.prefill_chunk);
}

void Engine::validate(const GenerateRequest& req) const {
  const int64_t V = model_.config().vocab_size;
  JAMBA_CHECK(!req.prompt.empty(), "[generate] the prompt is empty");
  for (size_t i = 0; i < req.prompt.size(); ++i)
    JAMBA_CHECK(req.prompt[i] >= 0 && req.prompt[i] < V, "[generate] prompt token ", i, " has id ",
                req.prompt[i], ", outside the vocabulary [0, ", V, ")");
  JAMBA_CHECK(req.max_new_tokens >= 0, "[generate] max_new_tokens must be >= 0, got ",
              req.max_new_tokens);
  JAMBA_CHECK(int64_t(req.prompt.size()) <= opts_.max_context, "[generate] the prompt has ",
              req.prompt.size(), " tokens, longer than the context of ", opts_.max_context,
              " tokens");
  validate_sampling_params(req.sampling);
}

int64_t Engine::submit(GenerateRequest req, TokenCallback on_token) {
  validate(req);
  const int64_t need = int64_t(req.prompt.size()) + req.max_new_tokens;
  if (need > opts_.max_context) req.max_new_tokens = opts_.max_context - int64_t(req.prompt.size());
  auto a = std::make_unique<Active>(Active{next_id_++, std::move(req), std::move(on_token),
                                           model_.new_state(), Sampler(SamplingParams{}), {}, 0,
                                           {}, now_s(), false});
  a->sampler = Sampler(a->req.sampling);
  a->history = a->req.prompt;
  a->res.prompt_tokens = int64_t(a->req.prompt.size());
  const int64_t id = a->id;
  if (a->req.max_new_tokens == 0) {
    done_[id] = std::move(a->res);
    done_[id].finish = FinishReason::Length;
    return id;
  }
  if (opts_.prefix_cache)
    if (const Snapshot* s = cache_.lookup(a->history)) {
      a->state = s->state.snapshot();
      a->fed = int64_t(s->tokens.size());
      a->res.reused_tokens = a->fed;
      if (a->fed == int64_t(a->history.size())) {  // whole prompt cached: sample right away
        a->prefill_done = true;
        a->res.prefill_seconds = now_s() - a->t_start;
        a->t_start = now_s();
        if (!accept(*a, s->last_logits.data())) return id;
      }
    }
  active_.push_back(std::move(a));
  return id;
}

void Engine::cancel(int64_t id) {
  for (auto& a : active_)
    if (a->id == id) finish(*a, FinishReason::Cancelled);
  std::erase_if(active_, [](const auto& a) { return a->res.finish != FinishReason::Running; });
}

bool Engine::accept(Active& a, const float* logits) {
  const int64_t V = model_.config().vocab_size;
  if (a.req.record_logits) a.res.step_logits.emplace_back(logits, logits + V);
  const int32_t tok = a.sampler.sample({logits, size_t(V)}, a.history);
  a.history.push_back(tok);
  a.res.tokens.push_back(tok);
  bool go_on = !a.cb || a.cb(a.id, tok);
  if (std::find(a.req.stop_ids.begin(), a.req.stop_ids.end(), tok) != a.req.stop_ids.end()) {
    finish(a, FinishReason::Stop);
    return false;
  }
  if (!go_on) {
    finish(a, FinishReason::Cancelled);
    return false;
  }
  if (int64_t(a.res.tokens.size()) >= a.req.max_new_tokens) {
    finish(a, FinishReason::Length);
    return false;
  }
  return true;
}

void Engine::finish(Active& a, FinishReason r) {
  a.res.finish = r;
  if (a.prefill_done) a.res.decode_seconds = now_s() - a.t_start;
  done_[a.id] = std::move(a.res);
  a.res.finish = r;  // moved-from: keep the marker for erase_if
}

void Engine::step() {
  if (active_.empty()) return;
  std::vector<BatchItem> items;
  std::vector<Active*> owners;
  for (auto& up : active_) {
    Active& a = *up;
    const int64_t left = int64_t(a.history.size()) - a.fed;
    int64_t n = a.prefill_done ? 1 : std::min(left, opts_.prefill_chunk);
    if (!a.prefill_done && opts_.prefix_cache && opts_.snapshot_interval > 0)  // end chunks on
      n = std::min(n, opts_.snapshot_interval - a.fed % opts_.snapshot_interval);  // boundaries
    const bool last = a.fed + n == int64_t(a.history.size());
    items.push_back({&a.state, {a.history.data() + a.fed, size_t(n)}, {},
                     last ? LogitsMode::Last : LogitsMode::None});
    owners.push_back(&a);
  }
  ForwardOutput out;
  model_.forward(items, &out);
  const int64_t V = model_.config().vocab_size;
  for (size_t i = 0; i < owners.size(); ++i) {
    Active& a = *owners[i];
    a.fed += int64_t(items[i].tokens.size());
    if (items[i].logits != LogitsMode::Last) {
      const int64_t every = opts_.snapshot_interval;
      if (opts_.prefix_cache && every > 0 && a.fed % every == 0)
        cache_.insert({std::vector<int32_t>(a.history.begin(), a.history.begin() + a.fed),
                       a.state.snapshot(), {}});
      continue;
    }
    const float* logits = out.logits.data() + out.logit_row_offset[i] * V;
    if (!a.prefill_done) {
      a.prefill_done = true;
      a.res.prefill_seconds = now_s() - a.t_start;
      a.t_start = now_s();
      if (opts_.prefix_cache)
        cache_.insert({a.history, a.state.snapshot(), std::vector<float>(logits, logits + V)});
    }
    accept(a, logits);
  }
  std::erase_if(active_, [](const auto& a) { return a->res.finish != FinishReason::Running; });
}

RequestResult Engine::take_result(int64_t id) {
  auto it = done_.find(id);
  JAMBA_CHECK(it != done_.end(), "[engine] request ", id, " has not finished");
  RequestResult r = std::move(it->second);
  done_.erase(it);
  return r;
}

}  // namespace jamba
