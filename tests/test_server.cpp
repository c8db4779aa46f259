// `jamba serve` in-process: the request schema (api.h), the radix-tree prefix cache, the engine
// features the server relies on (finished-request snapshots, prefill budget), and a real HTTP
// server on the demo model driven by raw sockets: exact text against the engine, streaming,
// multi-turn cache reuse, hostile clients, disconnects, queue limits and graceful shutdown.
// (The official `openai` client and the browser page are tested by tests/server/*.test.mjs.)
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "model/model.h"
#include "runtime/engine.h"
#include "server/api.h"
#include "server/server.h"
#include "tolerances.h"

namespace jamba {
namespace {

using json = nlohmann::json;
using server::ApiError;
using server::Endpoint;
using server::parse_api_request;

const std::string kDemo = std::string(JAMBA_SOURCE_DIR) + "/models/kjv";
const std::string kTiny = std::string(JAMBA_SHARED_DIR) + "/golden/dense-tiny";  // f32

// The ApiError a parse throws (status 0 if none).
ApiError api_error(const std::string& body, Endpoint ep = Endpoint::Chat) {
  try {
    (void)parse_api_request(body, ep);
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "");
}

TEST(ServerApi, ParsesEveryField) {
  const auto r = parse_api_request(R"({"model":"kjv","messages":[{"role":"system","content":"s"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
      {"role":"assistant","content":null}],"max_completion_tokens":7,"temperature":0.5,"top_p":0.9,
      "top_k":40,"min_p":0.1,"seed":-3,"stop":["x","yy"],"presence_penalty":0.5,
      "frequency_penalty":-0.5,"logprobs":true,"top_logprobs":3,"n":1,"stream":true,
      "stream_options":{"include_usage":true},"some_future_field":{"a":[1,2]}})",
                                   Endpoint::Chat);
  EXPECT_EQ(r.model, "kjv");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, uint64_t(int64_t(-3)));
  EXPECT_EQ(r.stop, (std::vector<std::string>{"x", "yy"}));
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(r.logprobs, 3);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);

  const auto c = parse_api_request(R"({"prompt":[[1,2,3]],"max_tokens":16.0,"logprobs":2})",
                                   Endpoint::Completion);
  EXPECT_TRUE(c.prompt_is_ids);
  EXPECT_EQ(c.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(c.max_tokens, 16);
  EXPECT_EQ(c.logprobs, 2);
  // OpenAI's defaults: temperature 1, nothing truncated.
  const auto d = parse_api_request(R"({"prompt":"hi"})", Endpoint::Completion);
  EXPECT_FLOAT_EQ(d.sampling.temperature, 1.0f);
  EXPECT_EQ(d.sampling.top_k, 0);
  EXPECT_FALSE(d.max_tokens.has_value());
  EXPECT_EQ(d.logprobs, -1);
}

TEST(ServerApi, InvalidFieldsAre400NamingTheField) {
  struct Case {
    const char* body;
    Endpoint ep;
    const char* param;
  };
  const Case cases[] = {
      {R"({})", Endpoint::Chat, "messages"},
      {R"({"messages":"hi"})", Endpoint::Chat, "messages"},
      {R"({"messages":[]})", Endpoint::Chat, "messages"},
      {R"({"messages":[{"role":"wizard","content":"x"}]})", Endpoint::Chat, "messages[0].role"},
      {R"({"messages":[{"role":"user","content":5}]})", Endpoint::Chat, "messages[0].content"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", Endpoint::Chat,
       "messages[0].content[0].type"},
      {R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})", Endpoint::Chat, "temperature"},
      {R"({"messages":[{"role":"user","content":"x"}],"temperature":2.5})", Endpoint::Chat, "temperature"},
      {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":-1})", Endpoint::Chat, "max_tokens"},
      {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":1.5})", Endpoint::Chat, "max_tokens"},
      {R"({"messages":[{"role":"user","content":"x"}],"n":2})", Endpoint::Chat, "n"},
      {R"({"messages":[{"role":"user","content":"x"}],"top_p":0})", Endpoint::Chat, "top_p"},
      {R"({"messages":[{"role":"user","content":"x"}],"top_k":-1})", Endpoint::Chat, "top_k"},
      {R"({"messages":[{"role":"user","content":"x"}],"stop":[""]})", Endpoint::Chat, "stop"},
      {R"({"messages":[{"role":"user","content":"x"}],"stop":7})", Endpoint::Chat, "stop"},
      {R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", Endpoint::Chat, "top_logprobs"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})", Endpoint::Chat,
       "top_logprobs"},
      {R"({"messages":[{"role":"user","content":"x"}],"stream":"yes"})", Endpoint::Chat, "stream"},
      {R"({"messages":[{"role":"user","content":"x"}],"seed":1e30})", Endpoint::Chat, "seed"},
      {R"({"messages":[{"role":"user","content":"x"}],"model":3})", Endpoint::Chat, "model"},
      {R"({"prompt":""})", Endpoint::Completion, "prompt"},
      {R"({"prompt":[1,-2]})", Endpoint::Completion, "prompt"},
      {R"({"prompt":["a","b"]})", Endpoint::Completion, "prompt"},
      {R"({"prompt":{"a":1}})", Endpoint::Completion, "prompt"},
      {R"({"prompt":"x","logprobs":6})", Endpoint::Completion, "logprobs"},
      {R"({"prompt":"x","echo":true})", Endpoint::Completion, "echo"},
  };
  for (const Case& c : cases) {
    const ApiError e = api_error(c.body, c.ep);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << " -> " << e.what();
    EXPECT_NE(std::string(e.what()).find(c.param), std::string::npos) << e.what();
    EXPECT_EQ(e.type, "invalid_request_error");
  }
}

TEST(ServerApi, HostileBodiesAreClear400s) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  ApiError e = api_error(deep);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(std::string(e.what()).find("nested"), std::string::npos) << e.what();
  e = api_error(R"({"messages":[{"role":"user","content":"a)" "\xff\xfe" R"("}]})");
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(std::string(e.what()).find("UTF-8"), std::string::npos) << e.what();
  EXPECT_EQ(e.param, "messages[0].content");
  e = api_error("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"st\xc0p\":1}");
  EXPECT_EQ(e.param, "st\xef\xbf\xbdp") << e.what();  // a bad key: named with U+FFFD
  e = api_error(R"({"messages":[{"role":"user","content":"\udc00"}]})");  // lone surrogate escape
  EXPECT_EQ(e.status, 400);
  e = api_error(R"({"messages": [)");
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(std::string(e.what()).find("valid JSON"), std::string::npos) << e.what();
  e = api_error("[1,2]");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(api_error("").status, 400);
  const std::string body = server::error_body(ApiError(400, "bad \xff", "x"));
  const json j = json::parse(body);  // the error body itself is valid JSON
  EXPECT_EQ(j["error"]["param"], "x");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
}

TEST(ServerApi, Utf8Validator) {
  EXPECT_TRUE(server::valid_utf8("plain ascii"));
  EXPECT_TRUE(server::valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));  // é € 😀
  EXPECT_FALSE(server::valid_utf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(server::valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(server::valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(server::valid_utf8("\xe2\x82"));          // truncated
}

// ---------------------------------------------------------------------------------------------
// Radix-tree prefix cache.

Snapshot snap(std::vector<int32_t> toks, bool logits = false, size_t extra_floats = 0) {
  Snapshot s;
  s.tokens = std::move(toks);
  if (logits) s.last_logits.assign(4, 0.5f);
  s.last_logits.resize(s.last_logits.size() + extra_floats);
  return s;
}

TEST(PrefixCacheTree, LongestPrefixAcrossSplitEdges) {
  PrefixCache c;
  c.insert(snap({1, 2, 3, 4, 5}));
  c.insert(snap({1, 2, 3, 9}));  // splits the edge after 1 2 3
  c.insert(snap({1, 2}));        // a snapshot on an inner node
  c.insert(snap({7}));
  EXPECT_EQ(c.size(), 4u);
  auto len = [&](std::vector<int32_t> p) {
    const Snapshot* s = c.lookup(p);
    return s ? int(s->tokens.size()) : -1;
  };
  EXPECT_EQ(len({1, 2, 3, 4, 5, 6}), 5);
  EXPECT_EQ(len({1, 2, 3, 9, 9}), 4);
  EXPECT_EQ(len({1, 2, 3, 4}), 2);   // diverges inside the 4-5 edge: falls back to 1 2
  EXPECT_EQ(len({1, 2, 8}), 2);
  EXPECT_EQ(len({1, 5}), -1);
  EXPECT_EQ(len({7, 7}), 1);
  EXPECT_EQ(len({1, 2, 3, 4, 5}), 2);  // whole-prompt match needs logits
  c.insert(snap({1, 2, 3, 4, 5}, /*logits=*/true));  // replaces the one without
  EXPECT_EQ(c.size(), 4u);
  EXPECT_EQ(len({1, 2, 3, 4, 5}), 5);
  const PrefixCacheStats& st = c.stats();
  EXPECT_EQ(st.lookups, 8u);
  EXPECT_EQ(st.hits, 7u);
  EXPECT_EQ(st.tokens_reused, uint64_t(5 + 4 + 2 + 2 + 1 + 2 + 5));
}

TEST(PrefixCacheTree, EvictsLeastRecentlyUsedWithinBudget) {
  const size_t one = snap({1, 2, 3}, false, 1000).bytes();
  PrefixCache c(3 * one + one / 2);
  c.insert(snap({1, 2, 3}, false, 1000));
  c.insert(snap({1, 2, 4}, false, 1000));
  c.insert(snap({5, 6, 7}, false, 1000));
  ASSERT_EQ(c.size(), 3u);
  ASSERT_NE(c.lookup(std::vector<int32_t>{1, 2, 3, 0}), nullptr);  // 1 2 3 is now most recent
  c.insert(snap({8, 9, 9}, false, 1000));                          // evicts 1 2 4
  EXPECT_EQ(c.size(), 3u);
  EXPECT_LE(c.bytes(), c.max_bytes());
  EXPECT_EQ(c.lookup(std::vector<int32_t>{1, 2, 4, 0}), nullptr);
  EXPECT_NE(c.lookup(std::vector<int32_t>{1, 2, 3, 0}), nullptr);
  EXPECT_NE(c.lookup(std::vector<int32_t>{5, 6, 7, 0}), nullptr);
  EXPECT_EQ(c.stats().evictions, 1u);
  PrefixCache none(0);  // --cache-ram 0: nothing is kept
  none.insert(snap({1}));
  EXPECT_EQ(none.size(), 0u);
  EXPECT_EQ(none.bytes(), 0u);
}

TEST(PrefixCacheTree, RandomisedAgainstLinearScan) {
  std::mt19937 rng(5);
  PrefixCache c(size_t(1) << 40);
  std::vector<std::vector<int32_t>> keys;
  auto rand_seq = [&](size_t n) {
    std::vector<int32_t> v(n);
    for (auto& t : v) t = int32_t(rng() % 3);  // small alphabet: many shared prefixes
    return v;
  };
  for (int i = 0; i < 300; ++i) {
    if (rng() % 2 || keys.empty()) {
      auto k = rand_seq(1 + rng() % 12);
      c.insert(snap(k, /*logits=*/true));
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    }
    const auto p = rand_seq(1 + rng() % 14);
    size_t want = 0;
    bool found = false;
    for (const auto& k : keys)
      if (k.size() <= p.size() && std::equal(k.begin(), k.end(), p.begin()) && k.size() >= want) {
        want = k.size();
        found = true;
      }
    const Snapshot* s = c.lookup(p);
    ASSERT_EQ(s != nullptr, found);
    if (s) {
      ASSERT_EQ(s->tokens.size(), want);
    }
  }
  EXPECT_EQ(c.size(), keys.size());
}

// ---------------------------------------------------------------------------------------------
// Engine features the server uses.

std::vector<int32_t> random_prompt(int64_t n, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p(size_t(n), 0);
  for (auto& t : p) t = int32_t(rng() % uint32_t(V));
  return p;
}

TEST(EngineServing, FinishedRequestIsSnapshottedAndContinuesExactly) {
  Model model = Model::load(kTiny);
  const int64_t V = model.config().vocab_size;
  const auto prompt = random_prompt(40, V, 1);
  Engine e(model, {.prefill_chunk = 16});
  const int64_t a = e.submit({.prompt = prompt, .max_new_tokens = 6});
  e.run_until_idle();
  const RequestResult ra = e.take_result(a);
  ASSERT_EQ(ra.tokens.size(), 6u);
  // The next turn: everything the first request saw (its last token was sampled, never fed).
  auto next = prompt;
  next.insert(next.end(), ra.tokens.begin(), ra.tokens.end());
  for (int32_t t : random_prompt(5, V, 2)) next.push_back(t);
  const int64_t b = e.submit({.prompt = next, .max_new_tokens = 5, .record_logits = true});
  e.run_until_idle();
  const RequestResult rb = e.take_result(b);
  EXPECT_EQ(rb.reused_tokens, 40 + 6 - 1);
  Engine cold(model, {.prefill_chunk = 16, .prefix_cache = false});
  const int64_t c = cold.submit({.prompt = next, .max_new_tokens = 5, .record_logits = true});
  cold.run_until_idle();
  const RequestResult rc = cold.take_result(c);
  EXPECT_EQ(rb.tokens, rc.tokens);
  ASSERT_EQ(rb.step_logits.size(), rc.step_logits.size());
  for (size_t s = 0; s < rb.step_logits.size(); ++s)
    for (size_t i = 0; i < rb.step_logits[s].size(); ++i)
      ASSERT_NEAR(rb.step_logits[s][i], rc.step_logits[s][i], tol::kReassociation);
}

TEST(EngineServing, PrefillBudgetSlicesNewPromptsBetweenDecodeSteps) {
  Model model = Model::load(kTiny);
  const int64_t V = model.config().vocab_size;
  Engine e(model, {.prefill_chunk = 512, .prefix_cache = false, .prefill_budget_while_decoding = 24});
  Engine ref(model, {.prefill_chunk = 512, .prefix_cache = false});
  const auto p1 = random_prompt(10, V, 3), p2 = random_prompt(100, V, 4);
  int64_t tokens_a = 0;
  const int64_t a = e.submit({.prompt = p1, .max_new_tokens = 30}, [&](int64_t, int32_t) {
    ++tokens_a;
    return true;
  });
  e.step();  // a's prefill; a now decodes
  ASSERT_EQ(tokens_a, 1);
  const int64_t b = e.submit({.prompt = p2, .max_new_tokens = 4});
  // 100 prompt tokens at 24 per step: b's first token comes on the 5th step, and a keeps
  // producing one token every step meanwhile.
  int steps = 0;
  while (!e.finished(b) && e.active_count() > 0) {
    e.step();
    ++steps;
    if (steps <= 5) {
      EXPECT_EQ(tokens_a, 1 + steps);
    }
  }
  EXPECT_GE(steps, 5 + 3);
  e.run_until_idle();
  const RequestResult rb = e.take_result(b), ra = e.take_result(a);
  const int64_t rb_id = ref.submit({.prompt = p2, .max_new_tokens = 4});
  const int64_t ra_id = ref.submit({.prompt = p1, .max_new_tokens = 30});
  ref.run_until_idle();
  EXPECT_EQ(rb.tokens, ref.take_result(rb_id).tokens);
  EXPECT_EQ(ra.tokens, ref.take_result(ra_id).tokens);
}

// The adaptive budget (decode_stall_ratio): a long prompt arriving while a request decodes is
// sliced over several steps, the decoding request gets a token every step, and both answers
// equal an engine without any budget.
TEST(EngineServing, AdaptivePrefillBudgetKeepsDecodingAndAnswers) {
  Model model = Model::load(kTiny);
  const int64_t V = model.config().vocab_size;
  Engine e(model, {.prefill_chunk = 512, .prefix_cache = false, .prefill_budget_while_decoding = 400,
                   .decode_stall_ratio = 1.0});
  Engine ref(model, {.prefill_chunk = 512, .prefix_cache = false});
  const auto p1 = random_prompt(10, V, 13), p2 = random_prompt(400, V, 14);
  int64_t tokens_a = 0;
  const int64_t a = e.submit({.prompt = p1, .max_new_tokens = 60}, [&](int64_t, int32_t) {
    ++tokens_a;
    return true;
  });
  for (int i = 0; i < 5; ++i) e.step();  // a decodes: the decode step time is measured
  const int64_t b = e.submit({.prompt = p2, .max_new_tokens = 2});
  int steps = 0;
  const int64_t before = tokens_a;
  while (!e.finished(b)) {
    e.step();
    ++steps;
  }
  EXPECT_GE(steps, 2 + 1);  // 400 prompt tokens did not go in one step (the first budget is 32)
  EXPECT_GE(tokens_a - before, std::min<int64_t>(steps, 60 - before));  // a token every step
  e.run_until_idle();
  const RequestResult rb = e.take_result(b), ra = e.take_result(a);
  const int64_t rb_id = ref.submit({.prompt = p2, .max_new_tokens = 2});
  const int64_t ra_id = ref.submit({.prompt = p1, .max_new_tokens = 60});
  ref.run_until_idle();
  EXPECT_EQ(rb.tokens, ref.take_result(rb_id).tokens);
  EXPECT_EQ(ra.tokens, ref.take_result(ra_id).tokens);
}

TEST(EngineServing, LogprobsAreLogSoftmaxOfTheLogits) {
  Model model = Model::load(kTiny);
  const int64_t V = model.config().vocab_size;
  Engine e(model, {.prefix_cache = false});
  std::vector<TokenEvent> evs;
  const int64_t id = e.submit_events({.prompt = random_prompt(12, V, 7), .max_new_tokens = 3,
                                      .record_logits = true, .logprobs = 4},
                                     [&](int64_t, const TokenEvent& ev) {
                                       evs.push_back(ev);
                                       return true;
                                     });
  e.run_until_idle();
  const RequestResult r = e.take_result(id);
  ASSERT_EQ(evs.size(), 3u);
  for (size_t s = 0; s < evs.size(); ++s) {
    const auto& L = r.step_logits[s];
    double mx = *std::max_element(L.begin(), L.end()), sum = 0;
    for (float x : L) sum += std::exp(double(x) - mx);
    const double lse = mx + std::log(sum);
    EXPECT_NEAR(evs[s].logprob, L[size_t(evs[s].token)] - lse, 1e-4);
    ASSERT_EQ(evs[s].top.size(), 4u);
    EXPECT_EQ(evs[s].top[0].first, evs[s].token);  // greedy: the best is the one sampled
    for (size_t k = 1; k < 4; ++k) EXPECT_GE(evs[s].top[k - 1].second, evs[s].top[k].second);
  }
}

// ---------------------------------------------------------------------------------------------
// A real server on the demo model.

struct HttpReply {
  int status = 0;
  std::string headers, body;  // body de-chunked
};

// One raw HTTP/1.1 exchange (Connection: close): the request bytes as given, then everything the
// server sends until it closes. Raw sockets, so tests can send what no client library would.
HttpReply raw_http(int port, const std::string& request, int timeout_ms = 60000) {
  HttpReply r;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return r;
  }
  for (size_t off = 0; off < request.size();) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += size_t(n);
  }
  std::string raw;
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(
                             deadline - std::chrono::steady_clock::now())
                             .count());
    if (left <= 0 || ::poll(&p, 1, left) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, size_t(n));
  }
  ::close(fd);
  const size_t hend = raw.find("\r\n\r\n");
  if (hend == std::string::npos || raw.size() < 12) return r;
  r.status = std::atoi(raw.c_str() + 9);
  r.headers = raw.substr(0, hend);
  std::string body = raw.substr(hend + 4);
  if (r.headers.find("Transfer-Encoding: chunked") != std::string::npos) {
    std::string out;
    size_t pos = 0;
    while (pos < body.size()) {
      const size_t eol = body.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const size_t len = std::stoul(body.substr(pos, eol - pos), nullptr, 16);
      if (len == 0) break;
      out += body.substr(eol + 2, len);
      pos = eol + 2 + len + 2;
    }
    body = out;
  }
  r.body = body;
  return r;
}

std::string post(const std::string& path, const std::string& body,
                 const std::string& extra_headers = "Content-Type: application/json\r\n") {
  return "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra_headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string get(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
}

// The data: payloads of an SSE body.
std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new Model(Model::load(kDemo));
    tok_ = new Tokenizer(Tokenizer::load(kDemo));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tok_;
  }
  void start(server::ServerOptions o = {}) {
    o.port = 0;
    o.model_id = "kjv";
    o.log_requests = false;
    std::vector<int32_t> stops;
    for (int64_t e : model_->config().eos_token_id) stops.push_back(int32_t(e));
    srv_ = std::make_unique<server::Server>(*model_, *tok_, detect_chat_format(tok_->chat_template()),
                                            stops, o);
    port_ = srv_->bind();
    thread_ = std::thread([this] { srv_->run(); });
  }
  void TearDown() override {
    if (srv_) srv_->stop();
    if (thread_.joinable()) thread_.join();
    srv_.reset();
  }
  json call(const std::string& path, const json& body) {
    const HttpReply r = raw_http(port_, post(path, body.dump()));
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false);
  }
  std::string stream_text(const std::string& path, json body, json* last_usage = nullptr) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    const HttpReply r = raw_http(port_, post(path, body.dump()));
    EXPECT_EQ(r.status, 200);
    const auto evs = sse_events(r.body);
    EXPECT_FALSE(evs.empty());
    if (evs.empty()) return {};
    EXPECT_EQ(evs.back(), "[DONE]");
    std::string text;
    for (const auto& e : evs) {
      if (e == "[DONE]") break;
      const json j = json::parse(e);
      if (j.contains("usage") && last_usage) *last_usage = j["usage"];
      if (j["choices"].empty()) continue;
      const json& c = j["choices"][0];
      if (c.contains("delta") && c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
      if (c.contains("text")) text += c["text"].get<std::string>();
    }
    return text;
  }
  int64_t metric(const std::string& name) {
    const HttpReply r = raw_http(port_, get("/metrics"));
    const size_t p = r.body.find("\n" + name + " ");
    return p == std::string::npos ? -1 : std::stoll(r.body.substr(p + name.size() + 2));
  }

  static Model* model_;
  static Tokenizer* tok_;
  std::unique_ptr<server::Server> srv_;
  std::thread thread_;
  int port_ = 0;
};
Model* ServerTest::model_ = nullptr;
Tokenizer* ServerTest::tok_ = nullptr;

TEST_F(ServerTest, GreedyCompletionEqualsTheEngineAndStreamingEqualsFull) {
  start();
  const std::string prompt = "And it came to pass";
  // The engine directly, as `jamba generate` runs it.
  Engine e(*model_, {});
  std::vector<int32_t> stops;
  for (int64_t s : model_->config().eos_token_id) stops.push_back(int32_t(s));
  const auto ids = tok_->encode(prompt, tok_->add_bos_default());
  const int64_t id = e.submit({.prompt = ids, .max_new_tokens = 20, .stop_ids = stops});
  e.run_until_idle();
  auto gen = e.take_result(id).tokens;
  if (!gen.empty() && std::find(stops.begin(), stops.end(), gen.back()) != stops.end()) gen.pop_back();
  auto all = ids;
  all.insert(all.end(), gen.begin(), gen.end());
  const std::string want = tok_->decode(all, true).substr(tok_->decode(ids, true).size());

  const json req = {{"prompt", prompt}, {"max_tokens", 20}, {"temperature", 0}};
  const json full = call("/v1/completions", req);
  EXPECT_EQ(full["choices"][0]["text"], want);
  EXPECT_EQ(full["object"], "text_completion");
  EXPECT_EQ(full["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(full["usage"]["completion_tokens"].get<int64_t>() + full["usage"]["prompt_tokens"].get<int64_t>(),
            full["usage"]["total_tokens"].get<int64_t>());
  json usage;
  EXPECT_EQ(stream_text("/v1/completions", req, &usage), want);
  EXPECT_EQ(usage["completion_tokens"], full["usage"]["completion_tokens"]);
  // Token ids as the prompt: the same answer.
  const json by_ids = call("/v1/completions", {{"prompt", ids}, {"max_tokens", 20}, {"temperature", 0}});
  EXPECT_EQ(by_ids["choices"][0]["text"], want);

  const json chat = {{"messages", {{{"role", "user"}, {"content", "Who begat Enos?"}}}},
                     {"max_tokens", 16}, {"temperature", 0}};
  const json cf = call("/v1/chat/completions", chat);
  EXPECT_EQ(cf["object"], "chat.completion");
  EXPECT_EQ(cf["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(stream_text("/v1/chat/completions", chat), cf["choices"][0]["message"]["content"]);
}

TEST_F(ServerTest, StopStringsSeedsAndLogprobs) {
  start();
  const json base = {{"prompt", "In the beginning"}, {"max_tokens", 24}, {"temperature", 0}};
  const std::string text = call("/v1/completions", base)["choices"][0]["text"];
  ASSERT_GT(text.size(), 10u);
  const std::string stop = text.substr(8, 3);  // occurs in the greedy answer
  json with_stop = base;
  with_stop["stop"] = stop;
  const json r = call("/v1/completions", with_stop);
  EXPECT_EQ(r["choices"][0]["text"], text.substr(0, text.find(stop)));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(stream_text("/v1/completions", with_stop), text.substr(0, text.find(stop)));

  json sampled = base;
  sampled["temperature"] = 0.9;
  sampled["seed"] = 42;
  const std::string s1 = call("/v1/completions", sampled)["choices"][0]["text"];
  EXPECT_EQ(call("/v1/completions", sampled)["choices"][0]["text"], s1);
  std::set<std::string> distinct;
  for (int seed = 1; seed <= 4; ++seed) {
    sampled["seed"] = seed;
    distinct.insert(call("/v1/completions", sampled)["choices"][0]["text"].get<std::string>());
  }
  EXPECT_GT(distinct.size(), 1u);

  json lp = {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", 4},
             {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 3}};
  const json l = call("/v1/chat/completions", lp);
  const json& content = l["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  for (const json& t : content) {
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
  }
}

TEST_F(ServerTest, MultiTurnResumesAfterThePreviousAnswer) {
  start();
  json msgs = json::array({{{"role", "system"}, {"content", "Answer in the words of the scripture."}}});
  int64_t prev_prompt = 0, prev_completion = 0;
  for (int turn = 0; turn < 4; ++turn) {
    msgs.push_back({{"role", "user"}, {"content", "Tell me of the " + std::to_string(turn + 1) + " day."}});
    const json r = call("/v1/chat/completions", {{"messages", msgs}, {"max_tokens", 10}, {"temperature", 0}});
    const int64_t cached = r["usage"]["prompt_tokens_details"]["cached_tokens"];
    if (turn > 0) {
      EXPECT_GE(cached, prev_prompt + prev_completion - 1) << "turn " << turn;
    }
    prev_prompt = r["usage"]["prompt_tokens"];
    prev_completion = r["usage"]["completion_tokens"];
    msgs.push_back({{"role", "assistant"}, {"content", r["choices"][0]["message"]["content"]}});
  }
  EXPECT_GT(metric("jamba_prefix_cache_hits_total"), 2);
  EXPECT_GT(metric("jamba_prefix_cache_bytes"), 0);
}

TEST_F(ServerTest, HostileRequestsGetClear4xxAndTheServerStaysUp) {
  server::ServerOptions o;
  o.max_body = 1 << 20;
  o.api_key = "sk-test";
  o.read_timeout_s = 2;
  start(o);
  const std::string auth = "Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n";
  const std::string ok_body = R"({"prompt":"And","max_tokens":2,"temperature":0})";
  auto expect_error = [&](const HttpReply& r, int status, const std::string& needle) {
    EXPECT_EQ(r.status, status) << r.body;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
    EXPECT_NE(j["error"]["message"].get<std::string>().find(needle), std::string::npos)
        << j["error"]["message"];
  };
  expect_error(raw_http(port_, post("/v1/completions", ok_body)), 401, "API key");
  expect_error(raw_http(port_, post("/v1/completions", ok_body,
                                    "Authorization: Bearer nope\r\nContent-Type: application/json\r\n")),
               401, "invalid API key");
  EXPECT_EQ(raw_http(port_, post("/v1/completions", ok_body, auth)).status, 200);
  EXPECT_EQ(raw_http(port_, get("/health")).status, 200);  // open without the key
  expect_error(raw_http(port_, post("/v1/completions", std::string(2 << 20, ' '), auth)), 413, "limit");
  expect_error(raw_http(port_, post("/v1/completions", std::string(50000, '[') + std::string(50000, ']'), auth)),
               400, "nested");
  expect_error(raw_http(port_, post("/v1/completions", "{\"prompt\":\"\xff\"}", auth)), 400, "UTF-8");
  expect_error(raw_http(port_, post("/v1/completions", ok_body,
                                    "Authorization: Bearer sk-test\r\nContent-Type: text/plain\r\n")),
               415, "application/json");
  expect_error(raw_http(port_, post("/v1/completions", R"({"prompt":"x","temperature":"hot"})", auth)), 400,
               "temperature");
  expect_error(raw_http(port_, post("/v1/completions", R"({"prompt":[1,999999]})", auth)), 400, "vocabulary");
  expect_error(raw_http(port_, post("/v1/completions", R"({"prompt":"x","model":"gpt-4"})", auth)), 404,
               "gpt-4");
  expect_error(raw_http(port_, get("/v1/nothing-here")), 401, "API key");  // the key comes first
  expect_error(raw_http(port_, get("/nothing-here")), 404, "no route");
  expect_error(raw_http(port_, post("/tokenize", R"({"content":5})")), 400, "content");
  // A body shorter than its Content-Length, then the client goes away.
  const std::string truncated = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth +
                                "Content-Length: 1000\r\n\r\n{\"prompt\":";
  const HttpReply t = raw_http(port_, truncated, 5000);
  EXPECT_TRUE(t.status == 0 || (t.status >= 400 && t.status < 500)) << t.status;
  // Garbage instead of HTTP.
  const HttpReply g = raw_http(port_, "\x16\x03\x01 this is not http\r\n\r\n", 5000);
  EXPECT_TRUE(g.status == 0 || (g.status >= 400 && g.status < 500)) << g.status;
  // Unknown fields are ignored.
  EXPECT_EQ(raw_http(port_, post("/v1/completions",
                                 R"({"prompt":"And","max_tokens":2,"frobnicate":{"x":[1]}})", auth))
                .status,
            200);
  EXPECT_EQ(raw_http(port_, get("/health")).status, 200);
  EXPECT_GE(metric("jamba_requests_failed_total"), 8);
}

TEST_F(ServerTest, PromptOverTheContextIs400) {
  server::ServerOptions o;
  o.ctx = 64;
  start(o);
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "and the ";
  const HttpReply r = raw_http(port_, post("/v1/completions", json{{"prompt", long_prompt}}.dump()));
  EXPECT_EQ(r.status, 400);
  const json j = json::parse(r.body);
  EXPECT_EQ(j["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(j["error"]["param"], "prompt");
  // max_tokens past the context is cut to what is left, not an error.
  const json ok = call("/v1/completions", {{"prompt", "And"}, {"max_tokens", 1000}, {"temperature", 0}});
  EXPECT_LE(ok["usage"]["total_tokens"].get<int64_t>(), 64);
}

// A client that disconnects mid-stream is cancelled and its slot freed.
TEST_F(ServerTest, DisconnectFreesTheSlot) {
  start();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port_));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string req = post("/v1/completions",
                               R"({"prompt":"And","max_tokens":100000,"temperature":0,"stream":true})");
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
  char buf[4096];
  ASSERT_GT(::recv(fd, buf, sizeof buf, 0), 0);  // the response has started
  for (int i = 0; i < 200 && metric("jamba_generated_tokens_total") + metric("jamba_requests_active") < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(metric("jamba_requests_active"), 1);
  ::close(fd);
  int64_t active = 1;
  for (int i = 0; i < 100 && active != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    active = metric("jamba_requests_active");
  }
  EXPECT_EQ(active, 0);
  EXPECT_LT(metric("jamba_generated_tokens_total"), 100000);
}

TEST_F(ServerTest, FullQueueAnswers503) {
  server::ServerOptions o;
  o.parallel = 1;
  o.queue = 1;
  start(o);
  const std::string body = R"({"prompt":"And","max_tokens":2000,"temperature":0})";
  int first = 0;
  std::thread t0([&] { first = raw_http(port_, post("/v1/completions", body)).status; });
  for (int i = 0; i < 500 && metric("jamba_requests_active") < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(metric("jamba_requests_active"), 1);  // the one slot is taken
  std::vector<std::thread> ts;
  std::vector<int> status(5);
  for (int i = 0; i < 5; ++i)  // one of these waits in the queue, the other four are refused
    ts.emplace_back([&, i] { status[size_t(i)] = raw_http(port_, post("/v1/completions", body)).status; });
  for (auto& t : ts) t.join();
  t0.join();
  EXPECT_EQ(first, 200);
  EXPECT_EQ(std::count(status.begin(), status.end(), 200), 1);
  EXPECT_EQ(std::count(status.begin(), status.end(), 503), 4);
}

TEST_F(ServerTest, StopDuringAStreamEndsItAndReturns) {
  start();
  HttpReply r;
  std::thread client([&] {
    r = raw_http(port_, post("/v1/completions",
                             R"({"prompt":"And","max_tokens":100000,"temperature":0,"stream":true})"));
  });
  for (int i = 0; i < 200 && metric("jamba_generated_tokens_total") < 5; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const auto t0 = std::chrono::steady_clock::now();
  srv_->stop();
  thread_.join();
  client.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(r.status, 200);
  const auto evs = sse_events(r.body);
  ASSERT_FALSE(evs.empty());
  // Either the stream was ended properly (finish_reason cancelled, [DONE]) or the connection
  // was closed; never a hang.
  if (evs.back() == "[DONE]") {
    const json last = json::parse(evs[evs.size() - 2]);
    EXPECT_EQ(last["choices"][0]["finish_reason"], "cancelled");
  }
  srv_.reset();
}

}  // namespace
}  // namespace jamba
