// `jamba generate`: stream a completion of one prompt.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "apps/gen_common.h"
#include "core/error.h"
#include "runtime/session_file.h"

namespace jamba::app {

namespace {
struct GenerateOpts {
  GenOptions g;
  std::string prompt, prompt_file, system, prompt_cache;
  bool chat = false, no_bos = false;
};
}  // namespace

Runner add_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOpts>();
  add_gen_options(app, o->g);
  app.add_option("--prompt,-p", o->prompt, "prompt text");
  app.add_option("--file,-f", o->prompt_file, "read the prompt from a file");
  app.add_flag("--chat", o->chat, "wrap the prompt as a user turn in the chat template");
  app.add_option("--system", o->system, "system message (with --chat)");
  app.add_flag("--no-bos", o->no_bos, "do not add the BOS token");
  app.add_option("--prompt-cache", o->prompt_cache,
                 "session file: resume from it when it holds a prefix of the prompt; the prompt's "
                 "state is saved to it after the run");
  return [o]() {
    std::string prompt = o->prompt;
    if (!o->prompt_file.empty()) {
      std::FILE* f = std::fopen(o->prompt_file.c_str(), "rb");
      if (!f) fail(o->prompt_file, ": cannot open prompt file");
      char buf[65536];
      size_t n;
      prompt.clear();
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) prompt.append(buf, n);
      std::fclose(f);
    }
    if (prompt.empty() && !o->chat) fail("--prompt or --file is required");
    Loaded L = load_for_generation(o->g);
    std::vector<int32_t> ids;
    if (o->chat) {
      std::vector<ChatMessage> msgs;
      if (!o->system.empty()) msgs.push_back({"system", o->system});
      msgs.push_back({"user", prompt});
      ids = L.tok->encode(render_chat(L.chat_format, msgs, true),
                          !template_adds_bos(L.chat_format) && !o->no_bos &&
                              L.tok->add_bos_default());
    } else {
      ids = L.tok->encode(prompt, !o->no_bos && L.tok->add_bos_default());
    }
    if (!o->prompt_cache.empty() && std::filesystem::exists(o->prompt_cache)) {
      Session s = load_session(o->prompt_cache, *L.model);
      L.engine->prefix_cache().insert({s.tokens, std::move(s.state), std::move(s.last_logits)});
    }
    RequestResult r = stream_generate(L, o->g, ids, nullptr, nullptr, o->chat ? nullptr : &prompt);
    std::printf("\n");
    print_speed(r);
    if (!o->prompt_cache.empty())
      if (const Snapshot* s = L.engine->prefix_cache().lookup(ids); s && s->tokens == ids) {
        save_session(o->prompt_cache, *L.model, {s->tokens, s->state, s->last_logits});
        std::fprintf(stderr, "[saved %zu-token prompt state to %s]\n", s->tokens.size(),
                     o->prompt_cache.c_str());
      }
    return 0;
  };
}

}  // namespace jamba::app
