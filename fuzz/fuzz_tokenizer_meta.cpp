// libFuzzer target: the tokenizer metadata files of a checkpoint, read by Tokenizer::load(dir)
// beside tokenizer.model: tokenizer_config.json (added tokens, bos/eos, add_bos_token,
// chat_template), special_tokens_map.json and generation_config.json.
//
// Input: up to four parts separated by NUL bytes: tokenizer_config.json, special_tokens_map.json,
// generation_config.json (each written when its part is present, absent otherwise), then a text
// to tokenize. tokenizer.model is the real Jamba tokenizer cut to its first 2048 pieces (every
// control and byte piece, a few hundred merges) plus "▁" as id 2048: quick to load; written once
// at startup.
// Properties of metadata that loads: bos in [-1, V), eos ids in [0, V) and at least one, every id
// has a piece, decode(encode(text, parse_special)) == text for well-formed UTF-8 without U+2581,
// and the stream decoder agrees with decode().
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/tokenizer.h"

using namespace jamba;

namespace {

// Protobuf walk over the serialized ModelProto: keeps the first `max_pieces` of field 1 (pieces),
// the piece "▁" (the whitespace marker, id 62934 of 65536: without it every space would fall back
// to its three bytes) and every other field as it is.
class ProtoCursor {
 public:
  explicit ProtoCursor(std::string_view buf) : buf_(buf) {}
  bool done() const { return pos_ >= buf_.size(); }
  size_t pos() const { return pos_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; pos_ < buf_.size() && shift < 64; shift += 7) {
      const uint8_t b = uint8_t(buf_[pos_++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fuzz::property_failed(__FILE__, __LINE__, "cut_model", "bad varint in jamba.model");
  }
  std::string_view field(uint64_t key) {  // the value of a field whose key was just read
    switch (key & 7) {
      case 0:
        varint();
        return {};
      case 1:
        pos_ += 8;
        return {};
      case 5:
        pos_ += 4;
        return {};
      case 2: {
        const uint64_t n = varint();
        const std::string_view v = buf_.substr(pos_, n);
        pos_ += n;
        return v;
      }
    }
    fuzz::property_failed(__FILE__, __LINE__, "cut_model", "wire type in jamba.model");
  }

 private:
  std::string_view buf_;
  size_t pos_ = 0;
};

std::string cut_model(const std::string& in, int max_pieces) {
  std::string out;
  ProtoCursor top(in);
  int pieces = 0;
  while (!top.done()) {
    const size_t start = top.pos();
    const uint64_t key = top.varint();
    const std::string_view value = top.field(key);
    if ((key >> 3) == 1 && pieces++ >= max_pieces) {
      std::string_view text;
      for (ProtoCursor p(value); !p.done();) {
        const uint64_t k = p.varint();
        const std::string_view v = p.field(k);
        if ((k >> 3) == 1) text = v;
      }
      if (text != "\xE2\x96\x81") continue;
    }
    out.append(in, start, top.pos() - start);
  }
  return out;
}

struct Fixture {
  fuzz::ScratchDir dir{"tokmeta"};
  Fixture() {
    const std::string model = fuzz::read_file(JAMBA_SHARED_DIR "/tokenizers/jamba.model");
    fuzz::write_file(dir.file("tokenizer.model"), cut_model(model, 2048));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  static const char* const kFiles[] = {"tokenizer_config.json", "special_tokens_map.json",
                                       "generation_config.json"};
  // Split at the first three NULs: parts 0..2 are the files, part 3 the text.
  std::vector<std::string_view> parts;
  std::string_view rest = fuzz::as_text(data, size);
  while (parts.size() < 3) {
    const size_t nul = rest.find('\0');
    if (nul == std::string_view::npos) break;
    parts.push_back(rest.substr(0, nul));
    rest = rest.substr(nul + 1);
  }
  parts.push_back(rest);
  for (size_t i = 0; i < 3; ++i) {
    std::error_code ec;
    if (i < parts.size())
      fuzz::write_file(fx.dir.file(kFiles[i]), parts[i]);
    else
      fuzz::fs::remove(fx.dir.file(kFiles[i]), ec);
  }
  const std::string_view text = parts.size() == 4 ? parts[3] : std::string_view();
  std::optional<Tokenizer> tok;
  try {
    tok.emplace(Tokenizer::load(fx.dir.path().string()));
  } catch (const Error&) {
    return 0;
  }
  const int32_t V = tok->vocab_size();
  FUZZ_CHECK(tok->bos_id() >= -1 && tok->bos_id() < V, "bos id ", tok->bos_id(), " outside [-1, ",
             V, ")");
  FUZZ_CHECK(!tok->eos_ids().empty(), "no eos id");
  for (int32_t id : tok->eos_ids()) FUZZ_CHECK(id >= 0 && id < V, "eos id ", id);
  for (int32_t id = 0; id < V; ++id) tok->piece(id);
  const bool round_trip = fuzz::valid_utf8(text) && text.find("\xE2\x96\x81") == std::string::npos;
  for (bool parse_special : {false, true}) {
    const std::vector<int32_t> ids = tok->encode(text, true, parse_special);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < V, "encode gave id ", id);
    const size_t first = tok->bos_id() >= 0 ? 1 : 0;
    if (round_trip) {
      const std::string back =
          tok->decode(std::vector<int32_t>(ids.begin() + std::ptrdiff_t(first), ids.end()));
      FUZZ_CHECK(back == text, "decode(encode(x)) != x (parse_special ", parse_special, "): '",
                 text, "' -> '", back, "'");
    }
    for (bool skip : {false, true}) {
      StreamDecoder sd(*tok, skip);
      std::string got;
      for (int32_t id : ids) got += sd.push(id);
      got += sd.flush();
      FUZZ_CHECK(got == tok->decode(ids, skip), "stream != decode (skip_special ", skip, ")");
    }
  }
  return 0;
}
