// SentencePiece tokenizer with Hugging Face checkpoint metadata (special tokens, eos ids, chat
// template), plus an incremental UTF-8-safe detokenizer for streaming output.
//
// Special tokens. The set of special ids is: sentencepiece CONTROL and UNKNOWN pieces, USER_DEFINED
// pieces that look like markup tags ("<...>", e.g. "<|bom|>", "<documents>"; a user-defined piece
// such as "," is an ordinary token), and tokens marked "special": true in tokenizer_config.json
// `added_tokens_decoder` or named in special_tokens_map.json.
//
// encode(): special-token strings written literally in the text ("<|startoftext|>", "<|im_start|>",
// ...) become their single id: the text is split on them (longest match, left to right) and each
// segment between them is encoded by sentencepiece on its own, as is. Consequence for models with
// `add_dummy_prefix` (not the Jamba 1.5+ tokenizer, which has it off): every segment gets its own
// leading "▁". Pass parse_special = false to encode untrusted text with no special-token parsing:
// then no special id comes out at all, not even for the USER_DEFINED markup pieces ("<|eom|>")
// that sentencepiece would match by itself: literal markup becomes the ordinary pieces of its
// characters, and decode(encode(text, false, false)) == text.
//
// decode(): special ids are written as their text ("<|startoftext|>hello"), or dropped when
// skip_special; runs of ordinary ids between them are decoded by sentencepiece.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace jamba {

class Tokenizer {
 public:
  // `model_dir_or_file`: a checkpoint directory holding tokenizer.model (plus optional
  // tokenizer_config.json, special_tokens_map.json, generation_config.json, chat_template.jinja),
  // or the path of a SentencePiece model file. For a file named exactly "tokenizer.model" the
  // optional metadata files are also read from its directory. Throws Error naming the path.
  static Tokenizer load(const std::string& model_dir_or_file);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  std::string piece(int32_t id) const;                // the vocabulary entry ("▁hello", "<0x0A>")
  int32_t piece_to_id(std::string_view piece) const;  // -1 if not in the vocabulary
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 if the model has none
  // Stop ids for generation: generation_config.json eos_token_id (int or list), then
  // tokenizer_config.json eos_token, deduplicated; sentencepiece's eos if neither is present.
  const std::vector<int32_t>& eos_ids() const;
  bool is_eos(int32_t id) const;
  bool add_bos_default() const;  // tokenizer_config.json add_bos_token; true if absent
  // chat_template.jinja if present, else tokenizer_config.json "chat_template" (a string, or a list
  // of {name, template}: the one named "default", else the first); empty if none.
  const std::string& chat_template() const;
  bool is_special(int32_t id) const;
  // decode(), piece(), is_special() and StreamDecoder::push() throw Error for an id outside
  // [0, vocab_size()), naming the id and the vocabulary size.

 private:
  friend class StreamDecoder;
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  void check_id(int32_t id, const char* op) const;
  std::string decode_span(std::span<const int32_t> ids, bool skip_special) const;
  int byte_value(int32_t id) const;  // 0..255 for byte-fallback pieces "<0xNN>", else -1

  std::unique_ptr<Impl> impl_;
};

// Incremental detokenizer: push ids one at a time; each call returns the text that became final.
// The concatenation of all push() results and flush() equals tok.decode(all ids, skip_special).
// With skip_special, decode() drops the special ids and then decodes the rest (a skipped id does
// not split the bytes of a character around it); the stream does the same: a special id is
// dropped when pushed, and only the remaining ids are decoded.
// Never returns part of a UTF-8 character: byte-fallback pieces (<0xE2> ...) are held until the
// character completes (or is known to be invalid, which then decodes as U+FFFD like decode()).
// Cost per push is O(tokens since the previous emit), not O(all tokens). The Tokenizer must
// outlive the decoder and stay where it is (the decoder keeps a pointer to it). flush() is meant
// for the end of the stream; reset() starts a new one.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false);
  std::string push(int32_t id);
  std::string flush();  // emits anything held back (an incomplete character decodes as U+FFFD)
  void reset();
  const std::vector<int32_t>& ids() const { return ids_; }  // every id pushed

 private:
  std::string emit_up_to(size_t end);
  size_t incomplete_tail() const;  // trailing byte pieces forming an unfinished UTF-8 character

  const Tokenizer* tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  std::vector<int32_t> kept_;  // the ids decoded: ids_ less the skipped special ids
  size_t prefix_offset_ = 0;   // start of the decode window in kept_ (already emitted context)
  size_t read_offset_ = 0;     // kept_ ids before this are emitted
};

}  // namespace jamba
