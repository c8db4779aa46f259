#include "runtime/engine.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>

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
  JAMBA_CHECK(req.logprobs <= kMaxTopLogprobs, "[generate] logprobs must be <= ", kMaxTopLogprobs,
              ", got ", req.logprobs);
  JAMBA_CHECK(int64_t(req.prompt.size()) <= opts_.max_context, "[generate] the prompt has ",
              req.prompt.size(), " tokens, longer than the context of ", opts_.max_context,
              " tokens");
  validate_sampling_params(req.sampling);
}

int64_t Engine::submit(GenerateRequest req, TokenCallback on_token) {
  EventCallback cb;
  if (on_token)
    cb = [f = std::move(on_token)](int64_t id, const TokenEvent& ev) { return f(id, ev.token); };
  return submit_events(std::move(req), std::move(cb));
}

int64_t Engine::submit_events(GenerateRequest req, EventCallback on_token) {
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

namespace {
// log softmax of the raw logits at `tok`, and the n most likely ids (ties: lower id first).
void fill_logprobs(const float* logits, int64_t V, int n, TokenEvent& ev) {
  float mx = logits[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - mx);
  const float lse = mx + float(std::log(sum));
  ev.logprob = logits[ev.token] - lse;
  if (n <= 0) return;
  std::vector<int32_t> ids(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) ids[size_t(i)] = int32_t(i);
  const size_t k = std::min<size_t>(size_t(n), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (size_t i = 0; i < k; ++i) ev.top.emplace_back(ids[i], logits[ids[i]] - lse);
}
}  // namespace

bool Engine::accept(Active& a, const float* logits) {
  const int64_t V = model_.config().vocab_size;
  if (a.req.record_logits) a.res.step_logits.emplace_back(logits, logits + V);
  const int32_t tok = a.sampler.sample({logits, size_t(V)}, a.history);
  a.history.push_back(tok);
  a.res.tokens.push_back(tok);
  bool go_on = true;
  if (a.cb) {
    TokenEvent ev{.token = tok};
    if (a.req.logprobs >= 0) fill_logprobs(logits, V, a.req.logprobs, ev);
    go_on = a.cb(a.id, ev);
  }
  if (std::find(a.req.stop_ids.begin(), a.req.stop_ids.end(), tok) != a.req.stop_ids.end()) {
    finish(a, FinishReason::Stop, logits);
    return false;
  }
  if (!go_on) {
    finish(a, FinishReason::Cancelled, logits);
    return false;
  }
  if (int64_t(a.res.tokens.size()) >= a.req.max_new_tokens) {
    finish(a, FinishReason::Length, logits);
    return false;
  }
  return true;
}

void Engine::finish(Active& a, FinishReason r, const float* last_logits) {
  a.res.finish = r;
  if (a.prefill_done) a.res.decode_seconds = now_s() - a.t_start;
  // The state has consumed history[0, fed) and `last_logits` came out of it: keep it for a later
  // request that continues this one (the next turn of a conversation). It is no longer needed
  // here, so it is moved, not copied.
  if (last_logits && opts_.prefix_cache && opts_.snapshot_finished && a.prefill_done &&
      a.fed > int64_t(a.req.prompt.size())) {
    const int64_t V = model_.config().vocab_size;
    cache_.insert({std::vector<int32_t>(a.history.begin(), a.history.begin() + a.fed),
                   std::move(a.state), std::vector<float>(last_logits, last_logits + V)});
  }
  done_[a.id] = std::move(a.res);
  a.res.finish = r;  // moved-from: keep the marker for erase_if
}

void Engine::step() {
  if (active_.empty()) return;
  std::vector<BatchItem> items;
  std::vector<Active*> owners;
  const bool decoding = std::any_of(active_.begin(), active_.end(),
                                    [](const auto& a) { return a->prefill_done; });
  int64_t budget = decoding ? prefill_budget() : INT64_MAX;
  int64_t n_prompt = 0, n_decode = 0;
  for (auto& up : active_) {
    Active& a = *up;
    const int64_t left = int64_t(a.history.size()) - a.fed;
    int64_t n = a.prefill_done ? 1 : std::min({left, opts_.prefill_chunk, budget});
    if (n == 0) continue;  // budget spent: this prompt waits for the next step
    if (!a.prefill_done && opts_.prefix_cache && opts_.snapshot_interval > 0)  // end chunks on
      n = std::min(n, opts_.snapshot_interval - a.fed % opts_.snapshot_interval);  // boundaries
    if (!a.prefill_done) {
      budget -= n;
      n_prompt += n;
    } else {
      ++n_decode;
    }
    const bool last = a.fed + n == int64_t(a.history.size());
    items.push_back({&a.state, {a.history.data() + a.fed, size_t(n)}, {},
                     last ? LogitsMode::Last : LogitsMode::None});
    owners.push_back(&a);
  }
  ForwardOutput out;
  // Steps are timed per kind: the decode batch and the prompt tokens' power of two (a step's
  // time per token is compared with its kind's).
  const bool tune = opts_.adaptive_threads;
  const int64_t kind = (int64_t(std::bit_width(uint64_t(n_prompt))) << 32) | n_decode;
  const int threads = tune ? tuner_.choose(kind) : 0;
  const double t0 = now_s();
  {
    ScopedThreads scope(threads);
    model_.forward(items, &out);
  }
  const double dt = now_s() - t0;
  if (tune) tuner_.record(kind, threads, dt / double(n_prompt + n_decode));
  auto average = [](double& avg, double x) { avg = avg > 0 ? 0.8 * avg + 0.2 * x : x; };
  if (n_prompt == 0)
    average(avg_decode_step_s_, dt);
  else
    average(avg_prompt_token_s_, std::max(0.0, dt - (n_decode > 0 ? avg_decode_step_s_ : 0.0)) /
                                     double(n_prompt));
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

int64_t Engine::prefill_budget() const {
  const int64_t cap = opts_.prefill_budget_while_decoding > 0 ? opts_.prefill_budget_while_decoding
                                                              : INT64_MAX;
  if (opts_.decode_stall_ratio <= 0) return cap;
  if (avg_decode_step_s_ <= 0 || avg_prompt_token_s_ <= 0)  // not measured yet: start small
    return std::min<int64_t>(32, cap);
  const double fit = opts_.decode_stall_ratio * avg_decode_step_s_ / avg_prompt_token_s_;
  return std::clamp(int64_t(fit), std::min<int64_t>(8, cap), cap);
}

RequestResult Engine::take_result(int64_t id) {
  auto it = done_.find(id);
  JAMBA_CHECK(it != done_.end(), "[engine] request ", id, " has not finished");
  RequestResult r = std::move(it->second);
  done_.erase(it);
  return r;
}

}  // namespace jamba
