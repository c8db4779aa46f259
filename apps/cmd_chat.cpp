// `jamba chat`: interactive chat with history. Earlier turns are not recomputed: each prompt
// resumes from the snapshot taken at the end of the previous prompt (prefix cache).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "apps/commands.h"
#include "apps/gen_common.h"
#include "core/error.h"

namespace jamba::app {

namespace {
volatile bool g_interrupted = false;
void on_sigint(int) {
  g_interrupted = true;
  const char msg[] = "\n[interrupted]\n";
  (void)!::write(2, msg, sizeof msg - 1);
}

struct ChatOpts {
  GenOptions g;
  std::string system;
};

// Reads one user message: a line; a trailing backslash continues it on the next line; a line
// holding only """ starts/ends a multi-line block. Returns false on end of input.
bool read_message(std::string* out) {
  out->clear();
  std::string line;
  bool block = false;
  while (true) {
    if (!std::getline(std::cin, line)) return !out->empty();
    if (line == "\"\"\"") {
      if (block) return true;
      block = true;
      continue;
    }
    if (block) {
      *out += line + "\n";
      continue;
    }
    if (!line.empty() && line.back() == '\\') {
      line.pop_back();
      *out += line + "\n";
      continue;
    }
    *out += line;
    return true;
  }
}
}  // namespace

Runner add_chat(CLI::App& app) {
  auto o = std::make_shared<ChatOpts>();
  add_gen_options(app, o->g);
  app.add_option("--system", o->system, "system message");
  return [o]() {
    Loaded L = load_for_generation(o->g);
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, nullptr);
    std::vector<ChatMessage> history;
    if (!o->system.empty()) history.push_back({"system", o->system});
    std::fprintf(stderr,
                 "jamba chat (%s template). Enter a message; end a line with \\ or wrap in \"\"\" "
                 "for multi-line input. Ctrl-C stops an answer; /reset clears the history; /exit "
                 "or Ctrl-D quits.\n",
                 chat_format_name(L.chat_format));
    std::string msg;
    while (true) {
      std::printf("\n> ");
      std::fflush(stdout);
      g_interrupted = false;
      if (!read_message(&msg)) break;
      if (msg == "/exit" || msg == "/quit") break;
      if (msg == "/reset") {
        history.resize(o->system.empty() ? 0 : 1);
        L.engine->prefix_cache().clear();
        std::printf("[history cleared]\n");
        continue;
      }
      if (msg.empty()) continue;
      history.push_back({"user", msg});
      const std::string rendered = render_chat(L.chat_format, history, true);
      const bool bos = !template_adds_bos(L.chat_format) && L.tok->add_bos_default();
      std::vector<int32_t> ids = L.tok->encode(rendered, bos);
      std::string answer;
      try {
        RequestResult r = stream_generate(L, o->g, ids, &g_interrupted, &answer);
        print_speed(r);
      } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        history.pop_back();
        continue;
      }
      history.push_back({"assistant", answer});
    }
    std::printf("\n");
    return 0;
  };
}

}  // namespace jamba::app
