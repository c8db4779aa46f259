#include "io/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "io/json_limits.h"

namespace jamba {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// sentencepiece ModelProto.SentencePiece.Type
enum PieceType : uint8_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

std::string read_whole_file(const fs::path& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("tokenizer: cannot open ", what, " ", path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("tokenizer: error reading ", what, " ", path.string());
  return ss.str();
}

// Minimal protobuf walk over a serialized sentencepiece ModelProto: returns the type of every
// piece (field 1, repeated message; inside it field 3 is the type enum, default NORMAL). The
// installed libsentencepiece exposes no IsUserDefined(), and USER_DEFINED pieces matter here.
class ProtoReader {
 public:
  ProtoReader(std::string_view buf, const std::string& path) : buf_(buf), path_(path) {}
  bool done() const { return pos_ >= buf_.size(); }
  size_t pos() const { return pos_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= buf_.size()) bad();
      const uint8_t b = static_cast<uint8_t>(buf_[pos_++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad();
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > buf_.size() - pos_) bad();
    std::string_view s = buf_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        return;
      case 1:
        advance(8);
        return;
      case 2:
        bytes();
        return;
      case 5:
        advance(4);
        return;
      default:
        bad();
    }
  }

 private:
  void advance(size_t n) {
    if (n > buf_.size() - pos_) bad();
    pos_ += n;
  }
  [[noreturn]] void bad() const {
    fail("tokenizer: malformed SentencePiece model ", path_, " (protobuf parse error at byte ",
         pos_, ")");
  }
  std::string_view buf_;
  const std::string& path_;
  size_t pos_ = 0;
};

struct PieceTypes {
  std::vector<uint8_t> types;
  // Byte offset in the model of each piece's (one-byte) type value; npos if not serialized so.
  std::vector<size_t> type_offsets;
};

PieceTypes parse_piece_types(std::string_view model, const std::string& path) {
  PieceTypes out;
  ProtoReader r(model, path);
  while (!r.done()) {
    const uint64_t key = r.varint();
    if ((key >> 3) != 1 || (key & 7) != 2) {
      r.skip(static_cast<int>(key & 7));
      continue;
    }
    const std::string_view piece = r.bytes();
    const size_t base = size_t(piece.data() - model.data());
    ProtoReader p(piece, path);
    uint8_t type = kNormal;
    size_t offset = std::string_view::npos;
    while (!p.done()) {
      const uint64_t k = p.varint();
      if ((k >> 3) == 3 && (k & 7) == 0) {
        const size_t at = p.pos();
        type = static_cast<uint8_t>(p.varint());
        offset = p.pos() == at + 1 ? base + at : std::string_view::npos;
      } else {
        p.skip(static_cast<int>(k & 7));
      }
    }
    out.types.push_back(type);
    out.type_offsets.push_back(offset);
  }
  return out;
}

bool looks_like_tag(std::string_view s) {
  return s.size() >= 3 && s.front() == '<' && s.back() == '>';
}

std::optional<json> read_json_if_present(const std::optional<fs::path>& dir, const char* name) {
  if (!dir) return std::nullopt;
  const fs::path p = *dir / name;
  std::error_code ec;
  if (!fs::exists(p, ec)) return std::nullopt;
  return parse_json_limited(read_whole_file(p, name), "tokenizer: " + p.string());
}

// A token in HF configs is a string, or an AddedToken object {"content": ...}, or null.
std::optional<std::string> token_text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::string path;
  int32_t n_sp = 0;     // pieces in the sentencepiece model
  int32_t n_vocab = 0;  // n_sp plus added tokens appended after it
  std::vector<uint8_t> types;
  std::vector<int16_t> byte_values;
  std::vector<bool> special;
  // Ids written verbatim by decode (special tokens, added tokens) and their text.
  std::unordered_map<int32_t, std::string> verbatim;
  // Strings split out of the text by encode(), longest first.
  StringToId split_tokens;
  std::vector<size_t> split_lengths;  // distinct lengths, descending
  std::array<bool, 256> split_first_byte{};
  int32_t bos = -1;
  std::vector<int32_t> eos;
  bool add_bos = true;
  std::string chat_template;
  // encode(parse_special = false): sentencepiece itself matches USER_DEFINED pieces in the text,
  // so "<|eom|>" written literally would become the special id. `plain_model` is the model with
  // the special USER_DEFINED pieces turned into CONTROL pieces (which sentencepiece never matches
  // in text; ids and every other piece unchanged): literal markup then encodes as the ordinary
  // pieces of its characters. Empty if the model has no such piece; loaded on first use.
  std::string plain_model;
  mutable std::once_flag plain_once;
  mutable std::unique_ptr<sentencepiece::SentencePieceProcessor> plain_sp;

  int32_t lookup(std::string_view piece) const {
    if (auto it = split_tokens.find(piece); it != split_tokens.end()) return it->second;
    const int id = sp.PieceToId(piece);
    if (id < 0 || id >= n_sp) return -1;
    if (id == sp.unk_id() && sp.IdToPiece(id) != piece) return -1;
    return id;
  }

  void add_split_token(const std::string& text, int32_t id) {
    if (text.empty()) return;
    split_tokens.emplace(text, id);
  }

  void mark_special(int32_t id) {
    if (id < 0 || id >= n_vocab) return;
    special[id] = true;
    if (!verbatim.count(id)) verbatim[id] = sp.IdToPiece(id);
  }

  void load_metadata(const std::optional<fs::path>& dir);
  void finish_split_table();
  void make_plain_model(const std::string& bytes, const std::vector<size_t>& type_offsets);
  const sentencepiece::SentencePieceProcessor& plain() const;
};

void Tokenizer::Impl::make_plain_model(const std::string& bytes,
                                       const std::vector<size_t>& type_offsets) {
  plain_model.clear();
  for (int32_t id = 0; id < n_sp; ++id) {
    if (types[id] != kUserDefined || !special[id]) continue;
    const size_t at = type_offsets[id];
    if (at == std::string_view::npos || at >= bytes.size() || uint8_t(bytes[at]) != kUserDefined)
      fail("tokenizer: ", path, ": cannot locate the type of USER_DEFINED piece ", id, " '",
           sp.IdToPiece(id), "'");
    if (plain_model.empty()) plain_model = bytes;
    plain_model[at] = char(kControl);  // same one-byte varint: no length changes
  }
}

const sentencepiece::SentencePieceProcessor& Tokenizer::Impl::plain() const {
  if (plain_model.empty()) return sp;
  std::call_once(plain_once, [&] {
    auto p = std::make_unique<sentencepiece::SentencePieceProcessor>();
    try {
      if (const auto st = p->LoadFromSerializedProto(plain_model); !st.ok())
        fail("tokenizer: ", path, ": cannot load the plain-text copy of the model: ",
             st.ToString());
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail("tokenizer: ", path, ": cannot load the plain-text copy of the model: ", e.what());
    }
    plain_sp = std::move(p);
  });
  return *plain_sp;
}

void Tokenizer::Impl::load_metadata(const std::optional<fs::path>& dir) {
  const auto cfg = read_json_if_present(dir, "tokenizer_config.json");
  const auto stm = read_json_if_present(dir, "special_tokens_map.json");
  const auto gen = read_json_if_present(dir, "generation_config.json");
  const std::string cfg_path = dir ? (*dir / "tokenizer_config.json").string() : "";

  if (cfg && cfg->contains("added_tokens_decoder")) {
    const json& added = (*cfg)["added_tokens_decoder"];
    if (!added.is_object())
      fail("tokenizer: ", cfg_path, ": added_tokens_decoder is not an object");
    // Added tokens past the sentencepiece vocabulary extend it; they must be contiguous.
    std::vector<std::pair<int32_t, std::pair<std::string, bool>>> entries;
    for (const auto& [key, val] : added.items()) {
      int32_t id = -1;
      try {
        id = std::stoi(key);
      } catch (const std::exception&) {
        fail("tokenizer: ", cfg_path, ": added_tokens_decoder key '", key, "' is not an id");
      }
      const auto text = token_text(val);
      if (id < 0 || !text)
        fail("tokenizer: ", cfg_path, ": bad added_tokens_decoder entry for id ", key);
      const bool is_special = val.is_object() && val.value("special", false);
      entries.push_back({id, {*text, is_special}});
    }
    std::sort(entries.begin(), entries.end());
    for (const auto& [id, e] : entries) {
      if (id > n_vocab)
        fail("tokenizer: ", cfg_path, ": added token id ", id, " leaves a gap after vocab size ",
             n_vocab);
      if (id == n_vocab) {
        ++n_vocab;
        types.push_back(kUserDefined);
        byte_values.push_back(-1);
        special.push_back(false);
      }
      const auto& [text, is_special] = e;
      // A new text for a piece that plain text encodes to (normal, byte or user-defined) would
      // make decode(encode(x)) differ from x and let plain text produce that token: only pieces
      // encoding never yields (control, unused, unknown) may be renamed.
      if (id < n_sp && text != sp.IdToPiece(id) && types[id] != kControl && types[id] != kUnused &&
          types[id] != kUnknown)
        fail("tokenizer: ", cfg_path, ": added_tokens_decoder gives id ", id, " the text ",
             brief(json(text)), ", but ", path, " has the piece ", brief(json(sp.IdToPiece(id))),
             " there, which plain text encodes to (expected the same text, or an id of a "
             "control, unused or unknown piece)");
      add_split_token(text, id);
      if (id >= n_sp || text != sp.IdToPiece(id)) verbatim[id] = text;
      if (is_special) mark_special(id);
    }
  }

  auto resolve = [&](const json& j) -> int32_t {
    const auto text = token_text(j);
    return text ? lookup(*text) : -1;
  };
  for (const auto* m : {&cfg, &stm}) {
    if (!*m) continue;
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"})
      if ((*m)->contains(key)) mark_special(resolve((**m)[key]));
    if ((*m)->contains("additional_special_tokens") &&
        (**m)["additional_special_tokens"].is_array()) {
      for (const json& t : (**m)["additional_special_tokens"]) {
        const int32_t id = resolve(t);
        mark_special(id);
        if (id >= 0) add_split_token(*token_text(t), id);
      }
    }
  }

  // Token ids in generation_config.json: integers in [0, n_vocab) (null: not set).
  const std::string gen_path = dir ? (*dir / "generation_config.json").string() : "";
  auto gen_id = [&](const json& v, const char* field) -> int32_t {
    if (!v.is_number_integer())
      fail("tokenizer: ", gen_path, ": field '", field, "' must be an integer token id, got ",
           brief(v));
    const bool in_range = v.is_number_unsigned()
                              ? v.get<uint64_t>() < uint64_t(n_vocab)
                              : v.get<int64_t>() >= 0 && v.get<int64_t>() < n_vocab;
    if (!in_range)
      fail("tokenizer: ", gen_path, ": field '", field, "' value ", brief(v),
           " is outside the vocabulary [0, ", n_vocab, ")");
    return static_cast<int32_t>(v.get<int64_t>());
  };
  std::optional<int32_t> gen_bos;
  if (gen && gen->contains("bos_token_id") && !(*gen)["bos_token_id"].is_null())
    gen_bos = gen_id((*gen)["bos_token_id"], "bos_token_id");
  std::vector<int32_t> gen_eos;
  if (gen && gen->contains("eos_token_id") && !(*gen)["eos_token_id"].is_null()) {
    const json& e = (*gen)["eos_token_id"];
    if (e.is_array()) {
      for (const json& x : e) gen_eos.push_back(gen_id(x, "eos_token_id"));
    } else {
      gen_eos.push_back(gen_id(e, "eos_token_id"));
    }
  }

  if (cfg && cfg->contains("bos_token")) {
    if (const int32_t id = resolve((*cfg)["bos_token"]); id >= 0) bos = id;
  } else if (gen_bos) {
    bos = *gen_bos;
  }
  if (cfg && cfg->contains("add_bos_token") && (*cfg)["add_bos_token"].is_boolean())
    add_bos = (*cfg)["add_bos_token"].get<bool>();

  auto add_eos = [&](int32_t id) {
    if (id < 0 || id >= n_vocab) return;
    if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  };
  for (const int32_t id : gen_eos) add_eos(id);
  if (cfg && cfg->contains("eos_token")) add_eos(resolve((*cfg)["eos_token"]));
  if (eos.empty()) add_eos(sp.eos_id());

  std::error_code ec;
  if (dir && fs::exists(*dir / "chat_template.jinja", ec)) {
    chat_template = read_whole_file(*dir / "chat_template.jinja", "chat template");
  } else if (cfg && cfg->contains("chat_template")) {
    const json& t = (*cfg)["chat_template"];
    if (t.is_string()) {
      chat_template = t.get<std::string>();
    } else if (t.is_array() && !t.empty()) {
      const json* pick = &t[0];
      for (const json& e : t)
        if (e.is_object() && e.value("name", "") == "default") pick = &e;
      if (!pick->is_object() || !(*pick).contains("template") || !(*pick)["template"].is_string())
        fail("tokenizer: ", cfg_path, ": chat_template list entries need a string 'template'");
      chat_template = (*pick)["template"].get<std::string>();
    } else if (!t.is_null()) {
      fail("tokenizer: ", cfg_path, ": chat_template must be a string or a list");
    }
  }
}

void Tokenizer::Impl::finish_split_table() {
  split_lengths.clear();
  split_first_byte.fill(false);
  for (const auto& [text, id] : split_tokens) {
    split_lengths.push_back(text.size());
    split_first_byte[static_cast<uint8_t>(text[0])] = true;
  }
  std::sort(split_lengths.begin(), split_lengths.end(), std::greater<>());
  split_lengths.erase(std::unique(split_lengths.begin(), split_lengths.end()), split_lengths.end());
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& model_dir_or_file) {
  const fs::path in(model_dir_or_file);
  std::error_code ec;
  if (!fs::exists(in, ec)) fail("tokenizer: path does not exist: ", model_dir_or_file);
  fs::path model_path = in;
  std::optional<fs::path> meta_dir;
  if (fs::is_directory(in, ec)) {
    model_path = in / "tokenizer.model";
    if (!fs::exists(model_path, ec))
      fail("tokenizer: no tokenizer.model in directory ", model_dir_or_file);
    meta_dir = in;
  } else if (in.filename() == "tokenizer.model") {
    meta_dir = in.parent_path().empty() ? fs::path(".") : in.parent_path();
  }

  auto impl = std::make_unique<Impl>();
  impl->path = model_path.string();
  const std::string bytes = read_whole_file(model_path, "SentencePiece model");
  if (bytes.empty()) fail("tokenizer: SentencePiece model ", impl->path, " is empty");
  // sentencepiece reports most problems by status, but some by its own exceptions (darts-clone's
  // trie builder, protobuf): all become an Error naming the file.
  try {
    if (const auto st = impl->sp.LoadFromSerializedProto(bytes); !st.ok())
      fail("tokenizer: cannot load SentencePiece model ", impl->path, ": ", st.ToString());
    impl->n_sp = impl->sp.GetPieceSize();
    impl->n_vocab = impl->n_sp;
    PieceTypes pt = parse_piece_types(bytes, impl->path);
    impl->types = std::move(pt.types);
    if (static_cast<int32_t>(impl->types.size()) != impl->n_sp)
      fail("tokenizer: ", impl->path, ": parsed ", impl->types.size(), " piece types, model has ",
           impl->n_sp, " pieces");

    impl->byte_values.assign(impl->n_sp, -1);
    impl->special.assign(impl->n_sp, false);
    for (int32_t id = 0; id < impl->n_sp; ++id) {
      const std::string& p = impl->sp.IdToPiece(id);
      const uint8_t t = impl->types[id];
      if (t == kByte && p.size() == 6 && p.starts_with("<0x") && p.back() == '>' &&
          std::isxdigit(static_cast<unsigned char>(p[3])) &&
          std::isxdigit(static_cast<unsigned char>(p[4]))) {
        impl->byte_values[id] = static_cast<int16_t>(std::stoi(p.substr(3, 2), nullptr, 16));
      }
      if (t == kControl || t == kUnknown || (t == kUserDefined && looks_like_tag(p))) {
        impl->mark_special(id);
        impl->add_split_token(p, id);
      }
    }
    impl->bos = impl->sp.bos_id();
    impl->load_metadata(meta_dir);
    impl->finish_split_table();
    impl->make_plain_model(bytes, pt.type_offsets);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("tokenizer: cannot load SentencePiece model ", impl->path, ": ", e.what());
  }
  return Tokenizer(std::move(impl));
}

void Tokenizer::check_id(int32_t id, const char* op) const {
  if (id < 0 || id >= impl_->n_vocab)
    fail("tokenizer ", op, ": token id ", id, " is out of range [0, ", impl_->n_vocab, ")");
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  if (add_bos && m.bos >= 0) out.push_back(m.bos);
  std::vector<int> ids;
  auto encode_with = [&](const sentencepiece::SentencePieceProcessor& sp, std::string_view seg) {
    if (seg.empty()) return;
    try {
      if (const auto st = sp.Encode(seg, &ids); !st.ok())
        fail("tokenizer encode (", m.path, "): sentencepiece failed: ", st.ToString());
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail("tokenizer encode (", m.path, "): sentencepiece failed: ", e.what());
    }
    out.insert(out.end(), ids.begin(), ids.end());
  };
  auto encode_segment = [&](std::string_view seg) { encode_with(m.sp, seg); };
  if (!parse_special) {
    // Literal markup stays text: no special or markup USER_DEFINED id can come out.
    encode_with(m.plain(), text);
    return out;
  }
  size_t seg_start = 0, i = 0;
  while (i < text.size()) {
    bool matched = false;
    if (m.split_first_byte[static_cast<uint8_t>(text[i])]) {
      for (const size_t len : m.split_lengths) {
        if (len > text.size() - i) continue;
        const auto it = m.split_tokens.find(text.substr(i, len));
        if (it == m.split_tokens.end()) continue;
        encode_segment(text.substr(seg_start, i - seg_start));
        out.push_back(it->second);
        i += len;
        seg_start = i;
        matched = true;
        break;
      }
    }
    if (!matched) ++i;
  }
  encode_segment(text.substr(seg_start));
  return out;
}

std::string Tokenizer::decode_span(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string out, text;
  std::vector<int> run;
  auto flush_run = [&] {
    if (run.empty()) return;
    try {
      if (const auto st = m.sp.Decode(run, &text); !st.ok())
        fail("tokenizer decode (", m.path, "): sentencepiece failed: ", st.ToString());
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail("tokenizer decode (", m.path, "): sentencepiece failed: ", e.what());
    }
    out += text;
    run.clear();
  };
  for (const int32_t id : ids) {
    check_id(id, "decode");
    if (skip_special && m.special[id]) continue;  // skipped ids do not split the run (as HF)
    if (const auto it = m.verbatim.find(id); it != m.verbatim.end()) {
      flush_run();
      out += it->second;
    } else {
      run.push_back(id);
    }
  }
  flush_run();
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  return decode_span(ids, skip_special);
}

std::string Tokenizer::piece(int32_t id) const {
  check_id(id, "piece");
  if (id >= impl_->n_sp) return impl_->verbatim.at(id);
  return impl_->sp.IdToPiece(id);
}

int32_t Tokenizer::piece_to_id(std::string_view piece) const {
  return impl_->lookup(piece);
}
int32_t Tokenizer::vocab_size() const {
  return impl_->n_vocab;
}
int32_t Tokenizer::bos_id() const {
  return impl_->bos;
}
const std::vector<int32_t>& Tokenizer::eos_ids() const {
  return impl_->eos;
}
bool Tokenizer::is_eos(int32_t id) const {
  return std::find(impl_->eos.begin(), impl_->eos.end(), id) != impl_->eos.end();
}
bool Tokenizer::add_bos_default() const {
  return impl_->add_bos;
}
const std::string& Tokenizer::chat_template() const {
  return impl_->chat_template;
}

bool Tokenizer::is_special(int32_t id) const {
  check_id(id, "is_special");
  return impl_->special[id];
}

int Tokenizer::byte_value(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab ? impl_->byte_values[id] : -1;
}

// ---------------------------------------------------------------------------------------------
// StreamDecoder: decode the window [prefix_offset_, end) and emit what follows the decode of the
// already-emitted part [prefix_offset_, read_offset_). decode() is prefix-stable (a prefix of the
// ids decodes to a prefix of the text) except for an unfinished UTF-8 character at the end, which
// sentencepiece turns into U+FFFD: those trailing byte pieces are held back.

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

void StreamDecoder::reset() {
  ids_.clear();
  kept_.clear();
  prefix_offset_ = read_offset_ = 0;
}

size_t StreamDecoder::incomplete_tail() const {
  // Walk back over at most 3 trailing byte pieces looking for the lead byte of the last character.
  const size_t n = kept_.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    const int b = tok_->byte_value(kept_[n - k]);
    if (b < 0) return 0;               // a normal piece ends the byte run: nothing is pending
    if ((b & 0xC0) == 0x80) continue;  // continuation byte
    const size_t need = (b & 0xE0) == 0xC0   ? 2
                        : (b & 0xF0) == 0xE0 ? 3
                        : (b & 0xF8) == 0xF0 ? 4
                                             : 1;
    return need > k ? k : 0;
  }
  return 0;
}

std::string StreamDecoder::emit_up_to(size_t end) {
  if (end <= read_offset_) return {};
  const std::span<const int32_t> all(kept_);
  const std::string prefix =
      tok_->decode_span(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string text =
      tok_->decode_span(all.subspan(prefix_offset_, end - prefix_offset_), skip_special_);
  prefix_offset_ = read_offset_;
  read_offset_ = end;
  // Cannot happen for sentencepiece models (see above); never re-emit text if it somehow does.
  if (text.size() <= prefix.size()) return {};
  return text.substr(prefix.size());
}

std::string StreamDecoder::push(int32_t id) {
  tok_->check_id(id, "StreamDecoder::push");
  ids_.push_back(id);
  // Dropped before decoding, as decode() does: a skipped id between the byte pieces of one
  // character must not end the byte run (which would emit U+FFFD where decode() joins them).
  if (skip_special_ && tok_->is_special(id)) return {};
  kept_.push_back(id);
  return emit_up_to(kept_.size() - incomplete_tail());
}

std::string StreamDecoder::flush() {
  return emit_up_to(kept_.size());
}

}  // namespace jamba
