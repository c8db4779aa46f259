#include "server/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "io/json_limits.h"
#include "runtime/engine.h"
#include "server/api.h"

namespace jamba::server {

using json = nlohmann::json;

namespace {

const char kChatPage[] =
#include "chat_page.inc"
    ;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_body(e), "application/json");
}

// One request in flight. The engine thread appends events and marks it done; the handler thread
// waits on `cv` and turns events into text.
struct Job {
  std::string id;  // "chatcmpl-..." / "cmpl-..."
  ApiRequest api;
  GenerateRequest req;
  double t_arrival = 0, t_first = 0;

  std::mutex m;
  std::condition_variable cv;
  std::vector<TokenEvent> events;  // not yet consumed by the handler
  bool done = false;
  RequestResult result;
  std::string failure;  // an engine error (the request failed, not the client)
  std::atomic<bool> cancel{false};

  std::atomic<int>* live = nullptr;  // the server's count of jobs not yet released
  Job() = default;
  Job(const Job&) = delete;
  ~Job() {
    if (live) --*live;
  }
};

// Remembers the exact tokens behind recent assistant answers, so that when a conversation
// comes back with an answer in its history, the prompt is built from the tokens the model
// generated (tokenising the text again may split it differently) and the prefix cache entry
// saved at the end of that answer matches. Bounded, least recently used out.
class AnswerMemory {
 public:
  struct Entry {
    std::vector<int32_t> ids;  // generated tokens, the final stop token excluded
    std::string rendered;      // the text the chat template writes for the answer (separator
                               // + content), which these tokens stand for in a later prompt
  };
  void put(const std::string& content, Entry e) {
    std::lock_guard lk(m_);
    auto it = map_.find(content);
    if (it != map_.end()) order_.erase(it->second.second);
    order_.push_front(content);
    map_[content] = {std::move(e), order_.begin()};
    while (map_.size() > kCapacity) {
      map_.erase(order_.back());
      order_.pop_back();
    }
  }
  bool get(const std::string& content, Entry* out) {
    std::lock_guard lk(m_);
    auto it = map_.find(content);
    if (it == map_.end()) return false;
    order_.splice(order_.begin(), order_, it->second.second);
    *out = it->second.first;
    return true;
  }

 private:
  static constexpr size_t kCapacity = 4096;
  std::mutex m_;
  std::list<std::string> order_;
  std::unordered_map<std::string, std::pair<Entry, std::list<std::string>::iterator>> map_;
};

// Turns a job's token events into the text a client sees: incremental UTF-8-safe decoding in
// the context of the prompt, special tokens and stop ids dropped, stop strings cut.
class TextAssembler {
 public:
  TextAssembler(const Tokenizer& tok, const std::vector<int32_t>& prompt,
                const std::vector<int32_t>& stop_ids, std::vector<std::string> stop,
                bool strip_leading_space)
      : tok_(tok), stop_ids_(stop_ids), dec_(tok, /*skip_special=*/true),
        stops_(std::move(stop)), strip_(strip_leading_space) {
    for (int32_t id : prompt) (void)dec_.push(id);
  }
  // Text to emit for one generated token (may be empty: held back, special, or after a stop).
  std::string push(int32_t id) {
    if (stops_.stopped()) return {};
    if (tok_.is_eos(id) || std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end())
      return {};
    std::string piece = dec_.push(id);
    raw_ += piece;
    return trim(stops_.push(piece).text);
  }
  std::string finish() {
    if (stops_.stopped()) return {};
    std::string piece = dec_.flush();
    raw_ += piece;
    std::string out = stops_.push(piece).text;
    out += stops_.flush();
    return trim(std::move(out));
  }
  bool stopped_by_string() const { return stops_.stopped(); }
  const std::string& raw() const { return raw_; }

 private:
  std::string trim(std::string s) {
    if (strip_ && !s.empty()) {
      if (s[0] == ' ') s.erase(0, 1);
      strip_ = false;
    }
    return s;
  }
  const Tokenizer& tok_;
  const std::vector<int32_t>& stop_ids_;
  StreamDecoder dec_;
  StopStrings stops_;
  bool strip_;
  std::string raw_;
};

// The text a token contributes to the output (so the tokens of an answer concatenate to its
// text, as OpenAI's do): the vocabulary piece with SentencePiece's word-boundary mark as a
// space, a byte-fallback piece as its byte. decode() of a single id would drop the leading space.
std::string token_text(const Tokenizer& tok, int32_t id) {
  std::string p = tok.piece(id);
  if (p.size() == 6 && p.rfind("<0x", 0) == 0 && p[5] == '>')
    return std::string(1, char(std::stoi(p.substr(3, 2), nullptr, 16)));
  std::string out;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p.compare(i, 3, "\xe2\x96\x81") == 0) {  // U+2581
      out += ' ';
      i += 2;
    } else {
      out += p[i];
    }
  }
  return out;
}

json logprob_entry(const Tokenizer& tok, int32_t id, float lp) {
  const std::string s = token_text(tok, id);
  json bytes = json::array();
  for (unsigned char c : s) bytes.push_back(int(c));
  return {{"token", s}, {"logprob", lp}, {"bytes", bytes}};
}

// HTTP worker threads, started on demand up to a limit, idle ones reused last-in first-out.
// httplib's own pool starts every thread up front and wakes them in turn, so over time every one
// of the (parallel + queue + 8) threads touches its stack and buffers: resident memory then grows
// by megabytes across the first hundreds of requests, a steady climb that looks like a leak.
// Handing each connection to the most recently idle thread keeps the working set to the
// concurrency actually seen.
class LifoPool : public httplib::TaskQueue {
 public:
  explicit LifoPool(size_t max_threads) : max_(std::max<size_t>(1, max_threads)) {}
  ~LifoPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::lock_guard lk(m_);
    if (!idle_.empty()) {
      Worker* w = idle_.back();
      idle_.pop_back();
      w->job = std::move(fn);
      w->cv.notify_one();
    } else if (workers_.size() < max_) {
      workers_.push_back(std::make_unique<Worker>());
      Worker* w = workers_.back().get();
      w->job = std::move(fn);
      w->thread = std::thread([this, w] { run(w); });
    } else {
      backlog_.push_back(std::move(fn));
    }
  }

  void shutdown() override {
    {
      std::lock_guard lk(m_);
      stop_ = true;
      for (auto& w : workers_) w->cv.notify_one();
    }
    for (auto& w : workers_)
      if (w->thread.joinable()) w->thread.join();
  }

 private:
  struct Worker {
    std::thread thread;
    std::condition_variable cv;
    std::function<void()> job;
  };

  void run(Worker* w) {
    std::unique_lock lk(m_);
    for (;;) {
      if (!w->job && !backlog_.empty()) {
        w->job = std::move(backlog_.front());
        backlog_.pop_front();
      }
      if (!w->job) {
        if (stop_) return;
        idle_.push_back(w);
        w->cv.wait(lk, [&] { return w->job || stop_; });
        if (!w->job) {  // woken to stop: leave the idle list, drain the backlog, then exit
          std::erase(idle_, w);
          continue;
        }
      }
      std::function<void()> job = std::move(w->job);
      w->job = nullptr;
      lk.unlock();
      job();
      lk.lock();
    }
  }

  const size_t max_;
  std::mutex m_;
  bool stop_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Worker*> idle_;  // back = most recently idle
  std::deque<std::function<void()>> backlog_;
};

}  // namespace

struct Server::Impl {
  const Model& model;
  const Tokenizer& tok;
  ChatFormat format;
  std::vector<int32_t> stop_ids;
  ServerOptions opts;
  Engine engine;
  httplib::Server http;
  AnswerMemory answers;
  std::string page{kChatPage};

  // Pending queue and shutdown flag (engine thread <-> handlers).
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Job>> pending;
  std::vector<std::shared_ptr<Job>> all_running;  // engine thread's running jobs (for shutdown)
  bool stopping = false;
  // The engine loop runs on the thread that calls run() (the one that loaded the model: its
  // OpenMP team is the only one in the process, see run()); HTTP is served from this thread.
  std::thread http_thread;
  std::atomic<bool> engine_running{false};

  // Metrics.
  std::atomic<uint64_t> n_requests{0}, n_errors{0}, n_prompt{0}, n_cached{0}, n_generated{0};
  std::atomic<int64_t> n_active{0}, n_queued{0};
  std::atomic<int> live_jobs{0};  // handlers still holding a job (streams being written)
  std::mutex stats_mu;
  PrefixCacheStats cache_stats;
  size_t cache_bytes = 0, cache_entries = 0;
  std::atomic<uint64_t> next_serial{1};
  std::mt19937_64 seed_rng{std::random_device{}()};
  std::mutex seed_mu;

  Impl(const Model& m, const Tokenizer& t, ChatFormat f, std::vector<int32_t> s, ServerOptions o)
      : model(m), tok(t), format(f), stop_ids(std::move(s)), opts(std::move(o)),
        engine(m, EngineOptions{
                      .prefill_chunk = opts.prefill_chunk,
                      .max_context = opts.ctx,
                      .prefix_cache = opts.cache_ram_gib > 0,
                      .prefix_cache_bytes = size_t(std::max(0.0, opts.cache_ram_gib) * 1073741824.0),
                      .prefill_budget_while_decoding = opts.prefill_budget_while_decoding,
                      .decode_stall_ratio = opts.decode_stall_ratio}) {}

  // ---------------------------------------------------------------------------------------
  // Engine thread.

  void engine_loop() {
    std::map<int64_t, std::shared_ptr<Job>> running;  // engine id -> job
    for (;;) {
      std::vector<std::shared_ptr<Job>> admit;
      {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return stopping || !pending.empty() || !running.empty(); });
        if (stopping) {
          for (auto& j : pending) j->cancel = true;
          for (auto& [id, j] : running) j->cancel = true;
        }
        if (stopping && pending.empty() && running.empty()) break;
        while (!pending.empty() && int64_t(running.size() + admit.size()) < opts.parallel) {
          admit.push_back(std::move(pending.front()));
          pending.pop_front();
        }
        n_queued = int64_t(pending.size());
      }
      for (auto& job : admit) {
        if (job->cancel) {
          complete(*job, RequestResult{.finish = FinishReason::Cancelled}, {});
          continue;
        }
        Job* jp = job.get();
        try {
          const int64_t eid = engine.submit_events(job->req, [jp](int64_t, const TokenEvent& ev) {
            std::lock_guard lk(jp->m);
            if (jp->t_first == 0) jp->t_first = now_s();
            jp->events.push_back(ev);
            jp->cv.notify_all();
            return !jp->cancel.load();
          });
          running[eid] = std::move(job);
        } catch (const std::exception& e) {
          complete(*job, {}, e.what());
        }
      }
      for (auto& [eid, job] : running)
        if (job->cancel && !engine.finished(eid)) engine.cancel(eid);
      try {
        if (!engine.idle()) engine.step();
      } catch (const std::exception& e) {  // an engine failure fails the running requests
        std::fprintf(stderr, "[serve] engine error: %s\n", e.what());
        for (auto& [eid, job] : running) {
          if (!engine.finished(eid)) engine.cancel(eid);
          job->cancel = true;
        }
      }
      for (auto it = running.begin(); it != running.end();) {
        if (engine.finished(it->first)) {
          complete(*it->second, engine.take_result(it->first), {});
          it = running.erase(it);
        } else {
          ++it;
        }
      }
      n_active = int64_t(running.size());
      std::lock_guard lk(stats_mu);
      cache_stats = engine.prefix_cache().stats();
      cache_bytes = engine.prefix_cache().bytes();
      cache_entries = engine.prefix_cache().size();
    }
    n_active = 0;
  }

  void complete(Job& job, RequestResult r, const std::string& failure) {
    std::lock_guard lk(job.m);
    job.result = std::move(r);
    job.failure = failure;
    job.done = true;
    job.cv.notify_all();
  }

  // ---------------------------------------------------------------------------------------
  // Prompts.

  // The chat prompt's tokens; earlier assistant answers this server generated are spliced in as
  // the tokens it generated (AnswerMemory), everything else is encoded from the rendered text.
  std::vector<int32_t> chat_prompt(const std::vector<ChatMessage>& msgs) {
    std::string full;
    try {
      full = render_chat(format, msgs, /*add_generation_prompt=*/true);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "messages");
    }
    const bool bos = !template_adds_bos(format) && tok.add_bos_default();
    std::vector<int32_t> ids;
    bool first = true;
    auto encode = [&](size_t from, size_t to) {
      if (from < to) {
        std::vector<int32_t> v = tok.encode(std::string_view(full).substr(from, to - from), first && bos);
        ids.insert(ids.end(), v.begin(), v.end());
      } else if (first && bos && tok.bos_id() >= 0) {
        ids.push_back(tok.bos_id());
      }
      first = false;
    };
    size_t pos = 0;
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (msgs[i].role != "assistant" || i == 0) continue;
      AnswerMemory::Entry e;
      if (!answers.get(msgs[i].content, &e)) continue;
      std::string g;  // the prompt that produced this answer
      try {
        g = render_chat(format, std::vector<ChatMessage>(msgs.begin(), msgs.begin() + long(i)), true);
      } catch (const Error&) {
        continue;
      }
      if (g.size() < pos || full.compare(0, g.size(), g) != 0 ||
          full.compare(g.size(), e.rendered.size(), e.rendered) != 0)
        continue;  // rendered differently than it was generated: encode the text
      encode(pos, g.size());
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
      pos = g.size() + e.rendered.size();
    }
    encode(pos, full.size());
    return ids;
  }

  uint64_t random_seed() {
    std::lock_guard lk(seed_mu);
    return seed_rng();
  }

  // ---------------------------------------------------------------------------------------
  // Handlers.

  void check_content_type(const httplib::Request& req) {
    if (!req.has_header("Content-Type")) return;  // a bare body is read as JSON
    std::string ct = req.get_header_value("Content-Type");
    ct = ct.substr(0, ct.find(';'));
    std::transform(ct.begin(), ct.end(), ct.begin(), [](unsigned char c) { return std::tolower(c); });
    while (!ct.empty() && ct.back() == ' ') ct.pop_back();
    if (ct != "application/json")
      throw ApiError(415, "Content-Type must be application/json, got '" + ct.substr(0, 100) +
                          "' (curl: -H 'Content-Type: application/json')");
  }

  void check_model(const std::string& name) {
    if (!name.empty() && name != opts.model_id)
      throw ApiError(404, "the model '" + name.substr(0, 200) + "' does not exist; this server serves '" +
                              opts.model_id + "'",
                     "model", "model_not_found");
  }

  void handle_generate(const httplib::Request& hreq, httplib::Response& res, Endpoint ep) {
    const double t0 = now_s();
    ++n_requests;
    check_content_type(hreq);
    ApiRequest api = parse_api_request(hreq.body, ep);
    check_model(api.model);
    auto job = std::make_shared<Job>();
    job->live = &live_jobs;
    ++live_jobs;
    job->t_arrival = t0;
    const uint64_t serial = next_serial++;
    char idbuf[40];
    std::snprintf(idbuf, sizeof idbuf, "%s-%llx", ep == Endpoint::Chat ? "chatcmpl" : "cmpl",
                  (unsigned long long)serial);
    job->id = idbuf;
    GenerateRequest& g = job->req;
    const char* prompt_field = ep == Endpoint::Chat ? "messages" : "prompt";
    if (ep == Endpoint::Chat) {
      g.prompt = chat_prompt(api.messages);
    } else if (api.prompt_is_ids) {
      g.prompt = api.prompt_ids;
    } else {
      g.prompt = tok.encode(api.prompt_text, tok.add_bos_default());
    }
    const int64_t ctx = engine.max_context();
    if (int64_t(g.prompt.size()) >= ctx)
      throw ApiError(400, "the prompt has " + std::to_string(g.prompt.size()) +
                              " tokens; the context is " + std::to_string(ctx) +
                              " tokens and at least one must remain for the answer",
                     prompt_field, "context_length_exceeded");
    g.max_new_tokens = std::min(api.max_tokens.value_or(opts.default_max_tokens),
                                ctx - int64_t(g.prompt.size()));
    g.sampling = api.sampling;
    if (!api.seed_given) g.sampling.seed = random_seed();
    g.stop_ids = stop_ids;
    g.logprobs = api.logprobs;
    try {
      engine.validate(g);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), prompt_field);
    }
    job->api = std::move(api);
    {
      std::lock_guard lk(mu);
      if (stopping) throw ApiError(503, "the server is shutting down");
      if (int64_t(pending.size()) >= opts.queue)
        throw ApiError(503, "the request queue is full (" + std::to_string(opts.queue) +
                                " waiting); retry later");
      pending.push_back(job);
      n_queued = int64_t(pending.size());
    }
    cv.notify_all();
    if (job->api.stream)
      stream_response(job, res);
    else
      full_response(job, res);
  }

  // Everything a response needs once the job is done.
  struct Outcome {
    std::string finish;
    json usage, timings;
  };

  Outcome outcome(Job& job, const TextAssembler& text, int64_t n_gen) {
    const RequestResult& r = job.result;
    Outcome o;
    o.finish = text.stopped_by_string() ? "stop"
               : r.finish == FinishReason::Length ? "length"
               : r.finish == FinishReason::Stop   ? "stop"
                                                  : "cancelled";
    const int64_t prompt_n = int64_t(job.req.prompt.size());
    o.usage = {{"prompt_tokens", prompt_n},
               {"completion_tokens", n_gen},
               {"total_tokens", prompt_n + n_gen},
               {"prompt_tokens_details", {{"cached_tokens", r.reused_tokens}}}};
    const double pred_ms = r.decode_seconds * 1e3;
    o.timings = {{"prompt_n", prompt_n - r.reused_tokens},
                 {"cached_n", r.reused_tokens},
                 {"prompt_ms", r.prefill_seconds * 1e3},
                 {"predicted_n", n_gen},
                 {"predicted_ms", pred_ms},
                 {"predicted_per_second", n_gen > 1 && pred_ms > 0 ? (n_gen - 1) / (pred_ms / 1e3) : 0.0}};
    return o;
  }

  void finish_job(Job& job, const TextAssembler& text, const Outcome& o, int status) {
    const RequestResult& r = job.result;
    n_prompt += uint64_t(job.req.prompt.size());
    n_cached += uint64_t(r.reused_tokens);
    n_generated += uint64_t(r.tokens.size());
    // Remember the answer's tokens for the next turn of this conversation (whole answers only).
    if (job.api.endpoint == Endpoint::Chat && !text.stopped_by_string() &&
        (r.finish == FinishReason::Stop || r.finish == FinishReason::Length)) {
      std::vector<int32_t> ids = r.tokens;
      if (r.finish == FinishReason::Stop && !ids.empty()) ids.pop_back();
      // The content as returned (Jamba15 answers lose the space that follows <|assistant|>,
      // which the template writes itself), and the text the template renders for it.
      std::string content = text.raw();
      const bool sep = format == ChatFormat::Jamba15;
      if (sep && !content.empty() && content[0] == ' ') content.erase(0, 1);
      answers.put(content, {std::move(ids), sep ? " " + content : content});
    }
    if (opts.log_requests) {
      const double ttft = job.t_first > 0 ? (job.t_first - job.t_arrival) * 1e3 : 0.0;
      std::fprintf(stderr,
                   "[serve] %s %s status=%d prompt=%zu cached=%lld generated=%zu ttft=%.1fms "
                   "%.1f t/s finish=%s\n",
                   job.id.c_str(), job.api.stream ? "stream" : "full", status,
                   job.req.prompt.size(), (long long)r.reused_tokens, r.tokens.size(), ttft,
                   o.timings["predicted_per_second"].get<double>(), o.finish.c_str());
    }
  }

  json logprobs_json(const std::vector<TokenEvent>& evs, bool chat) {
    if (chat) {
      json content = json::array();
      for (const auto& ev : evs) {
        json e = logprob_entry(tok, ev.token, ev.logprob);
        json top = json::array();
        for (auto [id, lp] : ev.top) top.push_back(logprob_entry(tok, id, lp));
        e["top_logprobs"] = top;
        content.push_back(e);
      }
      return {{"content", content}};
    }
    json tokens = json::array(), lps = json::array(), tops = json::array();
    for (const auto& ev : evs) {
      tokens.push_back(token_text(tok, ev.token));
      lps.push_back(ev.logprob);
      json top = json::object();
      for (auto [id, lp] : ev.top) top[token_text(tok, id)] = lp;
      tops.push_back(top);
    }
    return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}};
  }

  json base(const Job& job, bool chunk) {
    const bool chat = job.api.endpoint == Endpoint::Chat;
    return {{"id", job.id},
            {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
            {"created", int64_t(std::time(nullptr))},
            {"model", opts.model_id},
            {"system_fingerprint", "jamba.cpp"}};
  }

  bool wait_done(Job& job) {  // non-streaming: wait for the end
    std::unique_lock lk(job.m);
    job.cv.wait(lk, [&] { return job.done; });
    return job.failure.empty();
  }

  void full_response(const std::shared_ptr<Job>& jp, httplib::Response& res) {
    Job& job = *jp;
    const bool chat = job.api.endpoint == Endpoint::Chat;
    TextAssembler text(tok, job.req.prompt, stop_ids, job.api.stop,
                       chat && format == ChatFormat::Jamba15);
    std::string content;
    std::vector<TokenEvent> all;
    // Consume tokens as they come, so a stop string cancels the request early.
    for (;;) {
      std::vector<TokenEvent> evs;
      bool done;
      {
        std::unique_lock lk(job.m);
        job.cv.wait(lk, [&] { return job.done || !job.events.empty(); });
        evs.swap(job.events);
        done = job.done;
      }
      for (const auto& ev : evs) {
        if (text.stopped_by_string()) break;
        content += text.push(ev.token);
        all.push_back(ev);
        if (text.stopped_by_string()) job.cancel = true;
      }
      if (done) break;
    }
    if (!job.failure.empty()) throw ApiError(500, "generation failed: " + job.failure);
    content += text.finish();
    const Outcome o = outcome(job, text, int64_t(job.result.tokens.size()));
    json body = base(job, false);
    json choice = {{"index", 0}, {"finish_reason", o.finish}};
    if (job.api.logprobs >= 0) choice["logprobs"] = logprobs_json(all, chat);
    else choice["logprobs"] = nullptr;
    if (chat) choice["message"] = {{"role", "assistant"}, {"content", content}};
    else choice["text"] = content;
    body["choices"] = json::array({choice});
    body["usage"] = o.usage;
    body["timings"] = o.timings;
    res.set_content(dump(body), "application/json");
    finish_job(job, text, o, 200);
  }

  void stream_response(const std::shared_ptr<Job>& jp, httplib::Response& res) {
    struct StreamState {
      std::shared_ptr<Job> job;
      TextAssembler text;
      bool started = false, finished = false;
    };
    const bool chat = jp->api.endpoint == Endpoint::Chat;
    auto st = std::make_shared<StreamState>(StreamState{
        jp, TextAssembler(tok, jp->req.prompt, stop_ids, jp->api.stop,
                          chat && format == ChatFormat::Jamba15)});
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st, chat](size_t, httplib::DataSink& sink) -> bool {
          Job& job = *st->job;
          auto send = [&](const json& j) {
            const std::string s = "data: " + dump(j) + "\n\n";
            return sink.write(s.data(), s.size());
          };
          auto chunk = [&](const std::string& delta, const json& finish, const json& lp) {
            json c = base(job, true);
            json choice = {{"index", 0}, {"finish_reason", finish}, {"logprobs", lp}};
            if (chat) {
              json d = json::object();
              if (!st->started) d["role"] = "assistant";
              if (!delta.empty() || !st->started) d["content"] = delta;
              choice["delta"] = d;
            } else {
              choice["text"] = delta;
            }
            c["choices"] = json::array({choice});
            st->started = true;
            return send(c);
          };
          if (!st->started && chat && !chunk("", nullptr, nullptr)) {
            job.cancel = true;
            return false;
          }
          std::vector<TokenEvent> evs;
          bool done;
          {
            std::unique_lock lk(job.m);
            job.cv.wait_for(lk, std::chrono::milliseconds(250),
                            [&] { return job.done || !job.events.empty(); });
            evs.swap(job.events);
            done = job.done;
          }
          if (evs.empty() && !done) {
            // Nothing yet (a long prefill, or queued): an SSE comment, which clients ignore, so
            // that a client that went away is noticed by a failing write and cancelled.
            static const char ping[] = ": ping\n\n";
            if (!sink.write(ping, sizeof ping - 1)) {
              job.cancel = true;
              return false;
            }
            return true;
          }
          std::string delta;
          std::vector<TokenEvent> used;
          for (const auto& ev : evs) {
            if (st->text.stopped_by_string()) break;
            delta += st->text.push(ev.token);
            used.push_back(ev);
            if (st->text.stopped_by_string()) job.cancel = true;
          }
          if (done) delta += st->text.finish();
          if (!delta.empty() || (!used.empty() && job.api.logprobs >= 0)) {
            json lp = job.api.logprobs >= 0 ? logprobs_json(used, chat) : json(nullptr);
            if (!chunk(delta, nullptr, lp)) {
              job.cancel = true;
              return false;
            }
          }
          if (!done) return true;
          if (!job.failure.empty()) {
            send({{"error", {{"message", "generation failed: " + job.failure},
                             {"type", "server_error"}, {"param", nullptr}, {"code", nullptr}}}});
            sink.done();
            return true;
          }
          const Outcome o = outcome(job, st->text, int64_t(job.result.tokens.size()));
          json last = base(job, true);
          json choice = {{"index", 0}, {"finish_reason", o.finish}, {"logprobs", nullptr}};
          if (chat) choice["delta"] = json::object();
          else choice["text"] = "";
          last["choices"] = json::array({choice});
          last["timings"] = o.timings;
          send(last);
          if (job.api.include_usage) {
            json u = base(job, true);
            u["choices"] = json::array();
            u["usage"] = o.usage;
            u["timings"] = o.timings;
            send(u);
          }
          static const char done_line[] = "data: [DONE]\n\n";
          sink.write(done_line, sizeof done_line - 1);
          sink.done();
          st->finished = true;
          finish_job(job, st->text, o, 200);
          return true;
        },
        [st](bool) {
          // Connection closed or response complete: make sure the engine lets go of it.
          if (!st->finished) st->job->cancel = true;
        });
  }

  std::string metrics_text() {
    PrefixCacheStats cs;
    size_t cb, ce;
    {
      std::lock_guard lk(stats_mu);
      cs = cache_stats;
      cb = cache_bytes;
      ce = cache_entries;
    }
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      char buf[512];
      std::snprintf(buf, sizeof buf, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name,
                    type, name, v);
      out += buf;
    };
    metric("jamba_requests_total", "counter", "Generation requests received.", double(n_requests));
    metric("jamba_requests_failed_total", "counter", "Requests answered with an error status.",
           double(n_errors));
    metric("jamba_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", double(n_prompt));
    metric("jamba_prompt_tokens_cached_total", "counter",
           "Prompt tokens restored from the prefix cache instead of prefilled.", double(n_cached));
    metric("jamba_generated_tokens_total", "counter", "Generated tokens.", double(n_generated));
    metric("jamba_requests_active", "gauge", "Requests in the engine batch.", double(n_active));
    metric("jamba_requests_queued", "gauge", "Requests waiting for a batch slot.", double(n_queued));
    metric("jamba_prefix_cache_lookups_total", "counter", "Prefix cache lookups.", double(cs.lookups));
    metric("jamba_prefix_cache_hits_total", "counter", "Lookups that found a snapshot.", double(cs.hits));
    metric("jamba_prefix_cache_tokens_reused_total", "counter",
           "Tokens covered by the snapshots found.", double(cs.tokens_reused));
    metric("jamba_prefix_cache_evictions_total", "counter", "Snapshots evicted (LRU).",
           double(cs.evictions));
    metric("jamba_prefix_cache_bytes", "gauge", "Bytes held by snapshots.", double(cb));
    metric("jamba_prefix_cache_limit_bytes", "gauge", "Byte budget (--cache-ram).",
           double(engine.prefix_cache().max_bytes()));
    metric("jamba_prefix_cache_entries", "gauge", "Snapshots held.", double(ce));
    return out;
  }

  // Every handler: ApiError -> its status; any other exception -> 400 if it is our Error about
  // the input, else 500 (a bug), never a dropped connection.
  template <typename F>
  httplib::Server::Handler guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const ApiError& e) {
        ++n_errors;
        send_error(res, e);
        if (opts.log_requests)
          std::fprintf(stderr, "[serve] %s %s status=%d error: %.200s\n", req.method.c_str(),
                       req.path.c_str(), e.status, e.what());
      } catch (const Error& e) {
        ++n_errors;
        send_error(res, ApiError(400, e.what()));
      } catch (const std::exception& e) {
        ++n_errors;
        send_error(res, ApiError(500, std::string("internal error: ") + e.what()));
      }
    };
  }

  void routes() {
    http.set_payload_max_length(opts.max_body);
    http.set_read_timeout(opts.read_timeout_s, 0);
    http.set_write_timeout(opts.read_timeout_s, 0);
    const int threads = opts.http_threads > 0 ? opts.http_threads : opts.parallel + opts.queue + 8;
    http.new_task_queue = [threads] { return new LifoPool(size_t(threads)); };

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (opts.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
      const std::string want = "Bearer " + opts.api_key;
      const std::string got = req.get_header_value("Authorization");
      unsigned diff = got.size() != want.size();
      for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) diff |= unsigned(got[i] ^ want[i]);
      if (diff == 0) return httplib::Server::HandlerResponse::Unhandled;
      ++n_errors;
      send_error(res, ApiError(401, got.empty() ? "missing API key: send 'Authorization: Bearer <key>'"
                                                : "invalid API key",
                               {}, "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                                   httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string msg;
      switch (res.status) {
        case 404: msg = "no route for " + req.method + " " + req.path.substr(0, 200); break;
        case 413: msg = "the request body is larger than the server's limit (--max-body)"; break;
        case 405: msg = "method not allowed"; break;
        default: msg = "the request could not be read (HTTP status " + std::to_string(res.status) + ")";
      }
      send_error(res, ApiError(res.status, msg));
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      send_error(res, ApiError(500, "internal error"));
    });

    http.Get("/", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(page, "text/html; charset=utf-8");
    });
    http.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json m = {{"id", opts.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "jamba.cpp"},
                {"meta", {{"n_ctx", engine.max_context()}, {"n_vocab", model.config().vocab_size},
                          {"n_layers", model.config().num_hidden_layers}}}};
      res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
    });
    http.Get(R"(/v1/models/(.+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      check_model(req.matches[1]);
      res.set_content(dump({{"id", opts.model_id}, {"object", "model"}, {"created", 0},
                            {"owned_by", "jamba.cpp"}}),
                      "application/json");
    }));
    http.Post("/v1/chat/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
      handle_generate(req, res, Endpoint::Chat);
    }));
    http.Post("/v1/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
      handle_generate(req, res, Endpoint::Completion);
    }));
    http.Post("/tokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
      check_content_type(req);
      const json j = body_object(req.body);
      if (!j.contains("content") || !j["content"].is_string())
        throw ApiError(400, "'content' must be a string", "content");
      bool special = false;
      if (j.contains("add_special")) {
        if (!j["add_special"].is_boolean()) throw ApiError(400, "'add_special' must be a boolean", "add_special");
        special = j["add_special"].get<bool>();
      }
      const auto ids = tok.encode(j["content"].get<std::string>(), special && tok.add_bos_default(),
                                  /*parse_special=*/special);
      res.set_content(dump({{"tokens", ids}}), "application/json");
    }));
    http.Post("/detokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
      check_content_type(req);
      const json j = body_object(req.body);
      if (!j.contains("tokens") || !j["tokens"].is_array())
        throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
      std::vector<int32_t> ids;
      for (const json& t : j["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.vocab_size())
          throw ApiError(400, "'tokens' must hold ids in [0, " + std::to_string(tok.vocab_size()) +
                                  "), got " + t.dump().substr(0, 40), "tokens");
        ids.push_back(int32_t(t.get<int64_t>()));
      }
      res.set_content(dump({{"content", tok.decode(ids)}}), "application/json");
    }));
  }

  static json body_object(const std::string& body) {
    json j = parse_body(body);
    if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
    return j;
  }
};

Server::Server(const Model& model, const Tokenizer& tok, ChatFormat format,
               std::vector<int32_t> stop_ids, ServerOptions opts)
    : impl_(std::make_unique<Impl>(model, tok, format, std::move(stop_ids), std::move(opts))) {
  JAMBA_CHECK(impl_->opts.parallel >= 1, "[serve] --parallel must be >= 1, got ", impl_->opts.parallel);
  JAMBA_CHECK(impl_->opts.queue >= 0, "[serve] --queue must be >= 0, got ", impl_->opts.queue);
  impl_->routes();
}

Server::~Server() {
  stop();
  if (impl_->http_thread.joinable()) impl_->http_thread.join();
}

int Server::bind() {
  Impl& s = *impl_;
  int port = s.opts.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.opts.host);
    JAMBA_CHECK(port > 0, "[serve] cannot bind to ", s.opts.host, " (any port)");
  } else {
    JAMBA_CHECK(s.http.bind_to_port(s.opts.host, port), "[serve] cannot bind to ", s.opts.host, ":",
                port, " (in use, or not an address of this machine)");
  }
  return port;
}

void Server::run() {
  Impl& s = *impl_;
  // The engine loop stays on this thread and HTTP gets a new one, not the other way round: a
  // thread's first parallel region creates its own OpenMP team, and libgomp, seeing more OpenMP
  // threads than cores (the loader's idle team plus the engine's), cuts every barrier's spinning
  // to ~1,000 iterations, so the workers sleep and are woken at each of the hundreds of regions
  // of a decode step (moe1b, 2 cores: 20 tokens/s through the server vs 27 in `jamba generate`).
  s.engine_running = true;
  s.http_thread = std::thread([&s] {
    s.http.listen_after_bind();
    {
      std::lock_guard lk(s.mu);
      s.stopping = true;
    }
    s.cv.notify_all();
  });
  s.engine_loop();
  s.engine_running = false;
  if (s.http_thread.joinable()) s.http_thread.join();
}

void Server::stop() {
  Impl& s = *impl_;
  {
    std::lock_guard lk(s.mu);
    s.stopping = true;
  }
  s.cv.notify_all();
  // The engine cancels every request within a step; give the handlers a moment to write the
  // ends of their streams before the HTTP server stops writing.
  for (int i = 0; i < 500 && s.live_jobs > 0 && s.engine_running; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.http.stop();
}

}  // namespace jamba::server
