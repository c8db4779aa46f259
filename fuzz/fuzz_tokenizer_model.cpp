// libFuzzer target: a tokenizer.model file (a serialized SentencePiece ModelProto) in a
// checkpoint directory, read by Tokenizer::load(dir) as `jamba generate` / `jamba tokenize` do.
// Properties of a model that loads: every id in [0, V) has a piece and decodes on its own,
// encode() gives ids in [0, V), and the stream decoder agrees with decode().
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/tokenizer.h"

using namespace jamba;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::ScratchDir dir("tokmodel");
  fuzz::write_file(dir.file("tokenizer.model"), fuzz::as_text(data, size));
  std::optional<Tokenizer> tok;
  try {
    tok.emplace(Tokenizer::load(dir.path().string()));
  } catch (const Error&) {
    return 0;
  }
  const int32_t V = tok->vocab_size();
  FUZZ_CHECK(V > 0, "a loaded tokenizer has vocab_size ", V);
  FUZZ_CHECK(tok->bos_id() >= -1 && tok->bos_id() < V, "bos id ", tok->bos_id());
  for (int32_t id : tok->eos_ids()) FUZZ_CHECK(id >= 0 && id < V, "eos id ", id);
  std::vector<int32_t> all;
  for (int32_t id = 0; id < V && id < 4096; ++id) {
    tok->piece(id);
    tok->is_special(id);
    tok->decode({id});
    all.push_back(id);
  }
  for (const char* text : {"Hello, world!", " two  spaces\n\tand a tab", "<|bom|><s></s><unk>x",
                           "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", ""}) {
    for (bool parse_special : {false, true}) {
      std::vector<int32_t> ids;
      try {
        ids = tok->encode(text, true, parse_special);
      } catch (const Error&) {
        continue;
      }
      for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < V, "encode gave id ", id);
      all.insert(all.end(), ids.begin(), ids.end());
    }
  }
  for (bool skip : {false, true}) {
    StreamDecoder sd(*tok, skip);
    std::string got;
    for (int32_t id : all) got += sd.push(id);
    got += sd.flush();
    FUZZ_CHECK(got == tok->decode(all, skip), "stream != decode (skip_special ", skip, ")");
  }
  return 0;
}
