// `jamba tokenize`: show the ids and pieces of a text.
#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "core/error.h"
#include "io/tokenizer.h"

namespace jamba::app {

namespace {
struct TokenizeOpts {
  std::string tokenizer, prompt;
  bool no_bos = false, ids_only = false;
};
}  // namespace

Runner add_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOpts>();
  app.add_option("--model,--tokenizer", o->tokenizer,
                 "checkpoint directory or tokenizer.model")->required();
  app.add_option("--prompt,-p", o->prompt, "text to tokenize")->required();
  app.add_flag("--no-bos", o->no_bos, "do not add the BOS token");
  app.add_flag("--ids-only", o->ids_only, "print only the ids, space separated");
  return [o]() {
    Tokenizer tok = Tokenizer::load(o->tokenizer);
    const auto ids = tok.encode(o->prompt, !o->no_bos && tok.add_bos_default());
    if (o->ids_only) {
      for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
      std::printf("\n");
      return 0;
    }
    for (int32_t id : ids)
      std::printf("%6d  %s%s\n", id, tok.piece(id).c_str(), tok.is_special(id) ? "  (special)" : "");
    std::printf("%zu tokens; decodes back to: %s\n", ids.size(), tok.decode(ids, true).c_str());
    return 0;
  };
}

}  // namespace jamba::app
