// Tokenizer tests against the real Jamba 1.5+ SentencePiece model (shared/tokenizers/jamba.model).
#include "test_util.h"
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/tokenizer.h"

namespace jamba {
namespace {

namespace fs = std::filesystem;

const std::string kModel = JAMBA_SHARED_DIR "/tokenizers/jamba.model";

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(kModel);
  return t;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t n = b < 0x80             ? 1
               : (b & 0xE0) == 0xC0 ? 2
               : (b & 0xF0) == 0xE0 ? 3
               : (b & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

// A fresh temporary directory, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("jamba_tok_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
  }
};

using testing_util::error_of;

TEST(Tokenizer, VocabularyMatchesReferenceVectors) {
  EXPECT_EQ(tok().vocab_size(), 65536);
  EXPECT_EQ(tok().piece_to_id("▁hello"), 27164);
  EXPECT_EQ(tok().piece_to_id("▁world"), 2620);
  EXPECT_EQ(tok().piece_to_id("hello"), 26928);
  EXPECT_EQ(tok().piece_to_id("▁Hello"), 22560);
  EXPECT_EQ(tok().piece_to_id("<|unk|>"), 3);
  EXPECT_EQ(tok().piece_to_id("definitely-not-a-piece"), -1);
  EXPECT_EQ(tok().piece(27164), "▁hello");
  EXPECT_EQ(tok().piece(1554), "<0x0A>");
  EXPECT_EQ(tok().bos_id(), 1);
  EXPECT_EQ(tok().eos_ids(), std::vector<int32_t>{2});
  EXPECT_TRUE(tok().is_eos(2));
  EXPECT_FALSE(tok().is_eos(518));
  EXPECT_TRUE(tok().add_bos_default());
  EXPECT_EQ(tok().chat_template(), "");  // a bare .model file has no metadata
}

TEST(Tokenizer, SpecialTokenClassification) {
  for (int32_t id : {0, 1, 2, 3, 4, 517, 518, 519, 520, 521, 522, 523, 524, 533, 534})
    EXPECT_TRUE(tok().is_special(id)) << id << " " << tok().piece(id);
  // "," is a USER_DEFINED piece but an ordinary token; byte and normal pieces are not special.
  for (int32_t id : {1543, 1554, 27164, 62934}) EXPECT_FALSE(tok().is_special(id)) << id;
  EXPECT_EQ(tok().piece(518), "<|eom|>");
  EXPECT_EQ(tok().piece(519), "<|bom|>");
}

TEST(Tokenizer, EncodeDecodeHelloWorld) {
  const auto ids = tok().encode("Hello world!", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{13654, 2620, 63028}));
  EXPECT_EQ(tok().decode(ids), "Hello world!");
  const auto with_bos = tok().encode("Hello world!", true);
  ASSERT_EQ(with_bos.size(), ids.size() + 1);
  EXPECT_EQ(with_bos[0], 1);
  EXPECT_EQ(tok().decode(with_bos), "<|startoftext|>Hello world!");
  EXPECT_EQ(tok().decode(with_bos, /*skip_special=*/true), "Hello world!");
}

TEST(Tokenizer, DecodeSpecialTokens) {
  EXPECT_EQ(tok().decode({1, 26928}), "<|startoftext|>hello");
  EXPECT_EQ(tok().decode({1, 26928}, true), "hello");
  EXPECT_EQ(tok().decode({26928, 2620}), "hello world");
  EXPECT_EQ(tok().decode({2620}), " world");  // add_dummy_prefix is off: no space is stripped
  EXPECT_EQ(tok().decode({26928, 518, 2620}, true), "hello world");
  EXPECT_EQ(tok().decode({}), "");
}

TEST(Tokenizer, RoundTrips) {
  const std::vector<std::string> texts = {
      "naïve café 日本語 Ελληνικά",
      "👍🏽🚀",
      "🦩 ᚠ 龘 𝔘",  // byte-fallback characters
      "int main() {\n\treturn 0;\n}\n",
      "a    b\n\n\tc",
      "  leading and trailing  ",
      "x, y; z: 1,234.5e-6 % $ # @ ~ ` | \\ \" '",
      "",
  };
  for (const auto& t : texts) {
    const auto ids = tok().encode(t, false);
    EXPECT_EQ(tok().decode(ids), t) << "text: " << t;
    for (int32_t id : ids) EXPECT_FALSE(tok().is_special(id)) << "text: " << t;
  }
}

TEST(Tokenizer, ByteFallbackPieces) {
  const auto ids = tok().encode("ᚠ", false);  // U+16A0 = E1 9A A0
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(tok().piece(ids[0]), "<0xE1>");
  EXPECT_EQ(tok().piece(ids[1]), "<0x9A>");
  EXPECT_EQ(tok().piece(ids[2]), "<0xA0>");
  EXPECT_EQ(tok().encode("\n", false), std::vector<int32_t>{1554});
}

TEST(Tokenizer, SpecialTokensInTextAreSingleIds) {
  const std::vector<std::pair<std::string, int32_t>> specials = {
      {"<|startoftext|>", 1}, {"<|endoftext|>", 2},    {"<|pad|>", 0},    {"<|unk|>", 3},
      {"<|mask_3|>", 7},      {"<|eom|>", 518},        {"<|bom|>", 519},  {"<|system|>", 520},
      {"<|user|>", 521},      {"<|assistant|>", 522},  {"<|tool|>", 523}, {"<documents>", 524},
      {"</tool_calls>", 533}, {"<|reserved_18|>", 534}};
  for (const auto& [text, id] : specials) {
    EXPECT_EQ(tok().piece_to_id(text), id) << text;
    EXPECT_EQ(tok().encode(text, false), std::vector<int32_t>{id}) << text;
    const auto ids = tok().encode("hello" + text + " world", false);
    EXPECT_EQ(ids, (std::vector<int32_t>{26928, id, 2620})) << text;
    EXPECT_EQ(tok().decode(ids), "hello" + text + " world");
    EXPECT_EQ(tok().decode(ids, true), "hello world");
  }
  // Adjacent specials, and text that only resembles one.
  EXPECT_EQ(tok().encode("<|bom|><|user|>", false), (std::vector<int32_t>{519, 521}));
  const auto near = tok().encode("<|bom|<|user|>", false);
  EXPECT_EQ(near.back(), 521);
  EXPECT_GT(near.size(), 2u);
  // parse_special = false: the text is encoded as plain characters.
  const auto plain = tok().encode("<|startoftext|>", false, /*parse_special=*/false);
  EXPECT_GT(plain.size(), 1u);
  for (int32_t id : plain) EXPECT_NE(id, 1);
  EXPECT_EQ(tok().decode(plain), "<|startoftext|>");
}

TEST(Tokenizer, OutOfRangeIdsThrow) {
  const std::string msg = error_of([] { tok().decode({5, 65536}); });
  EXPECT_NE(msg.find("65536"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 65536)"), std::string::npos) << msg;
  EXPECT_THROW(tok().decode({-1}), Error);
  EXPECT_THROW(tok().piece(65536), Error);
  EXPECT_THROW(tok().piece(-7), Error);
  EXPECT_THROW(tok().is_special(70000), Error);
}

TEST(Tokenizer, MissingFileThrows) {
  const std::string path = "/nonexistent/dir/tokenizer.model";
  const std::string msg = error_of([&] { Tokenizer::load(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  TempDir dir("missing");
  const std::string msg2 = error_of([&] { Tokenizer::load(dir.path.string()); });
  EXPECT_NE(msg2.find("no tokenizer.model"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find(dir.path.string()), std::string::npos) << msg2;
}

TEST(Tokenizer, CorruptFileThrows) {
  TempDir dir("corrupt");
  const char junk[] = "\xff\xfe this is not a sentencepiece model \x01\x02";
  dir.write("garbage.model", std::string(junk, sizeof(junk) - 1));
  const std::string path = (dir.path / "garbage.model").string();
  const std::string msg = error_of([&] { Tokenizer::load(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  dir.write("empty.model", "");
  EXPECT_THROW(Tokenizer::load((dir.path / "empty.model").string()), Error);
  // A truncated real model.
  std::ifstream in(kModel, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  dir.write("truncated.model", bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(Tokenizer::load((dir.path / "truncated.model").string()), Error);
}

TEST(Tokenizer, CheckpointDirectoryMetadata) {
  TempDir dir("ckpt");
  fs::copy_file(kModel, dir.path / "tokenizer.model");
  dir.write("tokenizer_config.json", R"({
    "add_bos_token": false,
    "bos_token": "<|startoftext|>",
    "eos_token": {"content": "<|eom|>", "special": true},
    "added_tokens_decoder": {
      "519": {"content": "<|bom|>", "special": true},
      "65536": {"content": "<|extra|>", "special": true},
      "65537": {"content": "<plain_added>", "special": false}
    },
    "chat_template": [{"name": "tool_use", "template": "TOOLS"},
                      {"name": "default", "template": "{{ '<|bom|>' }}"}]
  })");
  dir.write("generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [2, 518]})");
  const Tokenizer t = Tokenizer::load(dir.path.string());
  EXPECT_FALSE(t.add_bos_default());
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{2, 518}));
  EXPECT_EQ(t.chat_template(), "{{ '<|bom|>' }}");
  EXPECT_EQ(t.vocab_size(), 65538);
  EXPECT_EQ(t.piece_to_id("<|extra|>"), 65536);
  EXPECT_EQ(t.piece(65537), "<plain_added>");
  EXPECT_TRUE(t.is_special(65536));
  EXPECT_FALSE(t.is_special(65537));
  const auto ids = t.encode("a<|extra|>b<plain_added>", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{t.piece_to_id("a"), 65536, t.piece_to_id("b"), 65537}));
  EXPECT_EQ(t.decode(ids), "a<|extra|>b<plain_added>");
  EXPECT_EQ(t.decode(ids, true), "ab<plain_added>");

  // chat_template.jinja wins over tokenizer_config.json; the model file path finds the metadata.
  dir.write("chat_template.jinja", "{{ '<|im_start|>' }}");
  const Tokenizer t2 = Tokenizer::load((dir.path / "tokenizer.model").string());
  EXPECT_EQ(t2.chat_template(), "{{ '<|im_start|>' }}");
  EXPECT_EQ(t2.vocab_size(), 65538);

  dir.write("tokenizer_config.json", "{ not json");
  const std::string msg = error_of([&] { Tokenizer::load(dir.path.string()); });
  EXPECT_NE(msg.find("tokenizer_config.json"), std::string::npos) << msg;
}

TEST(Tokenizer, ChatTemplateAsString) {
  TempDir dir("tmplstr");
  fs::copy_file(kModel, dir.path / "tokenizer.model");
  dir.write("tokenizer_config.json", R"({"chat_template": "X<|bom|>Y"})");
  EXPECT_EQ(Tokenizer::load(dir.path.string()).chat_template(), "X<|bom|>Y");
}

// StreamDecoder ------------------------------------------------------------------------------

std::string stream_all(const std::vector<int32_t>& ids, bool skip_special,
                       std::vector<std::string>* chunks = nullptr) {
  StreamDecoder sd(tok(), skip_special);
  std::string out;
  for (int32_t id : ids) {
    std::string c = sd.push(id);
    EXPECT_TRUE(valid_utf8(c)) << "chunk is not valid UTF-8 after id " << id;
    if (chunks) chunks->push_back(c);
    out += c;
  }
  out += sd.flush();
  return out;
}

TEST(TokenizerStream, MatchesFullDecode) {
  const std::vector<std::string> texts = {
      "Hello world! 👍🏽🚀 and 🦩🫠 𝔘 ᚠ龘, naïve café",
      " leading space",
      "a    b\n\n\tc",
      "🦩",
  };
  for (const auto& t : texts) {
    const auto ids = tok().encode(t, true);
    for (bool skip : {false, true}) {
      EXPECT_EQ(stream_all(ids, skip), tok().decode(ids, skip)) << t;
    }
  }
}

TEST(TokenizerStream, HoldsBackPartialCharacters) {
  const auto ids = tok().encode("🦩x", false);  // <0xF0> <0x9F> <0xA6> <0xA9> x
  ASSERT_EQ(ids.size(), 5u);
  std::vector<std::string> chunks;
  EXPECT_EQ(stream_all(ids, false, &chunks), "🦩x");
  EXPECT_EQ(chunks, (std::vector<std::string>{"", "", "", "🦩", "x"}));
}

TEST(TokenizerStream, SpecialTokensAndSpaces) {
  const std::vector<int32_t> ids = {1, 26928, 518, 2620, 1554};
  std::vector<std::string> chunks;
  EXPECT_EQ(stream_all(ids, false, &chunks), "<|startoftext|>hello<|eom|> world\n");
  EXPECT_EQ(chunks,
            (std::vector<std::string>{"<|startoftext|>", "hello", "<|eom|>", " world", "\n"}));
  EXPECT_EQ(stream_all(ids, true), "hello world\n");
}

TEST(TokenizerStream, InvalidBytesAndFlush) {
  // A lead byte followed by an ordinary piece cannot complete: it decodes as U+FFFD, like decode().
  const int32_t e2 = tok().piece_to_id("<0xE2>");
  ASSERT_GE(e2, 0);
  const std::vector<int32_t> ids = {26928, e2, 2620};
  EXPECT_EQ(stream_all(ids, false), tok().decode(ids));
  // An unfinished character at the end is released by flush().
  StreamDecoder sd(tok());
  EXPECT_EQ(sd.push(26928), "hello");
  EXPECT_EQ(sd.push(e2), "");
  const std::string rest = sd.flush();
  EXPECT_EQ("hello" + rest, tok().decode({26928, e2}));
  EXPECT_TRUE(valid_utf8(rest));
  EXPECT_THROW(sd.push(65536), Error);
  sd.reset();
  EXPECT_EQ(sd.push(2620), " world");
}

}  // namespace
}  // namespace jamba
