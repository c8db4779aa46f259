// libFuzzer target: the real Jamba 1.5+ tokenizer (../shared/tokenizers/jamba.model) on
// untrusted text and untrusted token ids: Tokenizer::encode / decode and StreamDecoder, as
// `jamba tokenize`, the chat loop and the server use them.
//
// Input: byte 0 = flags, the rest = payload.
//   flags & 3: 0 = encode(payload, parse_special = false)   (untrusted text, training data)
//              1 = encode(payload, parse_special = true)    (prompts with markup)
//              2 = payload as u16 little-endian ids          (any id of the 65536)
//              3 = payload as (tag, value) byte pairs: even tag -> byte piece <0xVV>, odd tag ->
//                  id VV (pad/bos/eos/unk and the control tokens): byte pieces split by specials
//   flags & 4: add_bos (encode)
//   flags & 8: skip_special (decode and the stream decoder)
// Properties:
//   - ids from encode are in [0, V); with parse_special = false none is a special token (only the
//     BOS that add_bos asked for);
//   - decode(encode(x)) == x for well-formed UTF-8 x (with and without special parsing), except
//     for text holding U+2581 "▁", the marker SentencePiece writes for a space;
//   - the concatenation of StreamDecoder::push() results and flush() equals decode(ids, skip)
//     (tokenizer.h), and again after reset().
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/tokenizer.h"

using namespace jamba;

namespace {

const Tokenizer& tokenizer() {
  static const Tokenizer tok = Tokenizer::load(JAMBA_SHARED_DIR "/tokenizers/jamba.model");
  return tok;
}

int32_t byte_piece(const Tokenizer& tok, int v) {
  static std::vector<int32_t> table = [&] {
    std::vector<int32_t> t(256, -1);
    char buf[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      t[size_t(b)] = tok.piece_to_id(buf);
    }
    return t;
  }();
  return table[size_t(v)];
}

std::string stream(StreamDecoder& sd, const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) out += sd.push(id);
  out += sd.flush();
  return out;
}

void check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  const std::string want = tok.decode(ids, skip);
  StreamDecoder sd(tok, skip);
  const std::string got = stream(sd, ids);
  FUZZ_CHECK(got == want, "StreamDecoder (skip_special ", skip, ") gives '", got,
             "', decode() gives '", want, "' for ", ids.size(), " ids");
  sd.reset();
  FUZZ_CHECK(stream(sd, ids) == want, "StreamDecoder differs after reset()");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tok = tokenizer();
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::string_view payload = fuzz::as_text(data + 1, size - 1);
  const bool add_bos = flags & 4, skip = flags & 8;
  const int32_t V = tok.vocab_size();
  std::vector<int32_t> ids;
  switch (flags & 3) {
    case 0:
    case 1: {
      const bool parse_special = flags & 1;
      try {
        ids = tok.encode(payload, add_bos, parse_special);
      } catch (const Error&) {
        return 0;  // sentencepiece refused the text (it reports; nothing to check)
      }
      size_t first = 0;
      if (add_bos && tok.bos_id() >= 0) {
        FUZZ_CHECK(!ids.empty() && ids[0] == tok.bos_id(), "add_bos: no BOS first");
        first = 1;
      }
      for (size_t i = 0; i < ids.size(); ++i) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < V, "encode gave id ", ids[i]);
        FUZZ_CHECK(parse_special || i < first || !tok.is_special(ids[i]),
                   "encode(parse_special = false) gave the special id ", ids[i], " '",
                   tok.piece(ids[i]), "'");
      }
      if (fuzz::valid_utf8(payload) && payload.find("\xE2\x96\x81") == std::string_view::npos) {
        const std::vector<int32_t> body(ids.begin() + std::ptrdiff_t(first), ids.end());
        const std::string back = tok.decode(body);
        FUZZ_CHECK(back == payload, "decode(encode(x)) != x (parse_special ", parse_special, "): '",
                   payload, "' -> '", back, "'");
      }
      break;
    }
    case 2:
      for (size_t i = 0; i + 1 < payload.size(); i += 2)
        ids.push_back(int32_t(uint8_t(payload[i])) | int32_t(uint8_t(payload[i + 1])) << 8);
      break;
    case 3:
      for (size_t i = 0; i + 1 < payload.size(); i += 2) {
        const int v = uint8_t(payload[i + 1]);
        ids.push_back((payload[i] & 1) ? v : byte_piece(tok, v));
      }
      break;
  }
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < V, "id ", id, " outside [0, ", V, ")");
  check_stream(tok, ids, skip);
  return 0;
}
