// `jamba serve`: the OpenAI-compatible HTTP server (src/server/). Without --model it serves the
// demo model shipped in models/kjv. SIGINT / SIGTERM shut it down gracefully (exit 0).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "apps/commands.h"
#include "apps/gen_common.h"
#include "core/error.h"
#include "server/server.h"

#ifndef JAMBA_DEMO_MODEL
#define JAMBA_DEMO_MODEL "models/kjv"
#endif

namespace jamba::app {

namespace {
struct ServeOpts {
  GenOptions g;
  server::ServerOptions s;
};

std::string model_name(const std::string& dir) {
  std::filesystem::path p(dir);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // trailing '/'
  std::string n = p.filename().string();
  return n.empty() ? "jamba" : n;
}
}  // namespace

Runner add_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOpts>();
  o->g.model = JAMBA_DEMO_MODEL;
  // Float32 GEMM inputs by default: with bf16-rounded inputs a row's result depends on which
  // kernel its GEMM takes, i.e. on what else is in the batch, how a prompt was chunked and
  // whether a prefix came from the cache, and the bf16 rounding turns those last-bit
  // differences into different tokens. A server must give a request the same answer alone, in a
  // batch and after a cache hit (docs/SERVER.md); `--activations auto` trades that for ~3x
  // faster prefill of bf16 checkpoints.
  o->g.activations = "f32";
  app.add_option("--model,-m", o->g.model, "checkpoint directory (default: the demo model)");
  app.add_option("--tokenizer", o->g.tokenizer, "tokenizer.model or directory (default: the model's)");
  app.add_option("--host", o->s.host, "address to listen on");
  app.add_option("--port", o->s.port, "port (0 = any free port)")->check(CLI::Range(0, 65535));
  app.add_option("--api-key", o->s.api_key, "require 'Authorization: Bearer KEY' on /v1/*");
  app.add_option("--parallel", o->s.parallel, "sequences decoded together")->check(CLI::Range(1, 1024));
  app.add_option("--queue", o->s.queue, "requests waiting beyond --parallel before 503")
      ->check(CLI::Range(0, 100000));
  app.add_option("--ctx", o->s.ctx, "context limit per request (0 = the model's)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--cache-ram", o->s.cache_ram_gib, "prefix-state cache budget in GiB (0 = off)")
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--max-body", o->s.max_body, "request body limit in bytes (413 beyond)")
      ->check(CLI::Range(size_t(1024), size_t(1) << 34));
  app.add_option("--max-tokens", o->s.default_max_tokens,
                 "tokens to generate when a request names no max_tokens")
      ->check(CLI::PositiveNumber);
  app.add_option("--prefill-chunk", o->s.prefill_chunk, "prompt tokens per request per step")
      ->check(CLI::PositiveNumber);
  app.add_option("--prefill-budget", o->s.prefill_budget_while_decoding,
                 "at most this many prompt tokens per step while streams decode (0 = prefill-chunk)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--decode-stall", o->s.decode_stall_ratio,
                 "while streams decode, a step with prompt tokens may take (1 + this) x a decode "
                 "step (adapts the prompt tokens per step; 0 = always --prefill-budget)")
      ->check(CLI::Range(0.0, 1000.0));
  app.add_option("--http-threads", o->s.http_threads, "HTTP worker threads (0 = parallel + queue + 8)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads,-t", o->g.threads, "compute threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--dtype", o->g.dtype, kDtypeHelp);
  app.add_option("--lora", o->g.lora, kLoraHelp);
  app.add_option("--activations", o->g.activations,
                 std::string(kActivationsHelp) +
                     ". Default here: f32, so that answers do not depend on batching or caching");
  app.add_flag("!--no-log", o->s.log_requests, "no per-request log lines");
  return [o] {
    // Signals go to one waiting thread (blocked everywhere else, before any thread starts).
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    o->g.ctx_size = o->s.ctx;
    Loaded L = load_for_generation(o->g);
    L.engine.reset();  // the server makes its own
    o->s.model_id = model_name(o->g.model);
    server::Server srv(*L.model, *L.tok, L.chat_format, L.stop_ids, o->s);
    const int port = srv.bind();
    std::thread([&srv, sigs] {
      int sig = 0;
      sigwait(&sigs, &sig);
      std::fprintf(stderr, "[serve] %s: finishing in-flight requests and shutting down\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      srv.stop();
    }).detach();
    std::fprintf(stderr, "[serve] model %s (%s), %d parallel, context %lld, cache %.2f GiB\n",
                 o->s.model_id.c_str(), chat_format_name(L.chat_format), o->s.parallel,
                 (long long)(o->s.ctx > 0 ? o->s.ctx : L.model->config().max_position_embeddings),
                 o->s.cache_ram_gib);
    std::fprintf(stderr, "listening on http://%s:%d\n", o->s.host.c_str(), port);
    srv.run();
    std::fprintf(stderr, "[serve] stopped\n");
    return 0;
  };
}

}  // namespace jamba::app
