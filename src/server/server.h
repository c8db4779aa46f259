// `jamba serve`: an OpenAI-compatible HTTP server over one Engine (continuous batching) with the
// engine's prefix-state cache shared by all requests. Threads: cpp-httplib's pool runs the HTTP
// handlers (parse, tokenize, stream text); one engine thread owns the Engine and the model, admits
// queued requests between steps, cancels the ones whose client went away, and steps. Handlers and
// the engine thread meet only in Job (a mutex-protected token channel) and the pending queue.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace jamba::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: any free port (printed once bound)
  std::string api_key;                  // empty: no authentication
  std::string model_id = "jamba";       // the name /v1/models reports and requests may name
  int parallel = 16;                    // sequences decoded together (engine batch)
  int queue = 64;                       // requests waiting for a slot beyond that; then 503
  int64_t ctx = 0;                      // context limit per request (0 = the model's)
  double cache_ram_gib = 2.0;           // prefix-state cache budget (0 = off)
  size_t max_body = size_t(8) << 20;    // request body limit (413 beyond)
  int64_t default_max_tokens = 2048;    // when a request names no max_tokens
  int64_t prefill_chunk = 512;          // prompt tokens per request per step when nothing decodes
  int64_t prefill_budget_while_decoding = 256;  // at most this many prompt tokens per step
                                                // while streams decode ...
  double decode_stall_ratio = 1.0;  // ... and fewer, so such a step takes <= ~2x a decode step
  int http_threads = 0;                 // 0: parallel + queue + 8
  int read_timeout_s = 30;              // a client that sends nothing for this long is dropped
  bool log_requests = true;             // one line per request on stderr
};

class Server {
 public:
  // The model and tokenizer must outlive the server. `stop_ids`: ids that end a generation.
  Server(const Model& model, const Tokenizer& tok, ChatFormat format, std::vector<int32_t> stop_ids,
         ServerOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; returns the port (the chosen one for port 0). Throws Error.
  int bind();
  // Serves until stop(); returns after in-flight requests have ended and threads are joined.
  void run();
  // Graceful shutdown, callable from any thread (a signal-waiting thread, a test): stops
  // accepting connections, cancels queued and running requests (streams end with finish_reason
  // "cancelled" and [DONE]), and makes run() return.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace jamba::server
