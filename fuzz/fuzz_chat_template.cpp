// libFuzzer target: chat prompt rendering (detect_chat_format + render_chat, what `jamba chat`,
// `jamba generate --chat` and the server build prompts with), messages taken from the input.
//
// Input: byte 0 = flags, the rest = messages separated by 0x1E, each "role 0x1F content" (no
// 0x1F: the whole record is the role, the content is empty).
//   flags & 3: template 0 = none (""), 1 = a Jamba 1.5 one ("...<|bom|>..."), 2 = a ChatML one
//              ("...<|im_start|>..."), 3 = the first record is the template text itself
//   flags & 4: add_generation_prompt
// Property: the output is exactly the one chat_template.h documents for the family (an oracle
// written from that comment), and an Error (naming the message) exactly when a role is not
// allowed where it stands; detect_chat_format throws only for templates of no known family.
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/chat_template.h"

using namespace jamba;

namespace {

// The documented rendering; returns false (and the failing index) where render_chat must throw.
bool expected(ChatFormat f, const std::vector<ChatMessage>& msgs, bool gen, std::string* out,
              size_t* bad) {
  std::string s;
  if (f == ChatFormat::Jamba15) {
    s = "<|startoftext|>";
    size_t first = 0;
    if (!msgs.empty() && msgs[0].role == "system") {
      s += "<|bom|><|system|> " + msgs[0].content + "<|eom|>";
      first = 1;
    } else {
      s += "<|bom|><|system|> <|eom|>";
    }
    for (size_t i = first; i < msgs.size(); ++i) {
      const std::string& r = msgs[i].role;
      if (r != "user" && r != "assistant" && r != "tool") {
        *bad = i;
        return false;
      }
      s += "<|bom|><|" + r + "|> " + msgs[i].content + "<|eom|>";
    }
    if (gen) s += "<|bom|><|assistant|>";
  } else {
    for (size_t i = 0; i < msgs.size(); ++i) {
      const std::string& r = msgs[i].role;
      if (r != "system" && r != "user" && r != "assistant") {
        *bad = i;
        return false;
      }
      s += "<|im_start|>" + r + "\n" + msgs[i].content + "<|im_end|>\n";
    }
    if (gen) s += "<|im_start|>assistant\n";
  }
  *out = s;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::vector<std::string> records;
  {
    std::string_view rest = fuzz::as_text(data + 1, size - 1);
    while (true) {
      const size_t sep = rest.find('\x1e');
      records.emplace_back(rest.substr(0, sep));
      if (sep == std::string_view::npos) break;
      rest = rest.substr(sep + 1);
    }
  }
  std::string tmpl;
  switch (flags & 3) {
    case 0:
      break;
    case 1:
      tmpl = "{% for m in messages %}<|bom|><|{{ m.role }}|> {{ m.content }}<|eom|>";
      break;
    case 2:
      tmpl = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>";
      break;
    case 3:
      tmpl = records.front();
      records.erase(records.begin());
      break;
  }
  const bool known = tmpl.empty() || tmpl.find("<|bom|>") != std::string::npos ||
                     tmpl.find("<|im_start|>") != std::string::npos;
  ChatFormat format;
  try {
    format = detect_chat_format(tmpl);
    FUZZ_CHECK(known, "detect_chat_format accepted a template of no known family");
  } catch (const Error&) {
    FUZZ_CHECK(!known, "detect_chat_format refused a known template");
    return 0;
  }
  const bool want_jamba = tmpl.empty() || tmpl.find("<|bom|>") != std::string::npos;
  FUZZ_CHECK((format == ChatFormat::Jamba15) == want_jamba, "template family: got ",
             chat_format_name(format));

  std::vector<ChatMessage> msgs;
  for (const std::string& r : records) {
    if (r.empty() && records.size() == 1) break;  // no messages at all
    const size_t sep = r.find('\x1f');
    msgs.push_back({r.substr(0, sep), sep == std::string::npos ? "" : r.substr(sep + 1)});
  }
  const bool gen = flags & 4;
  std::string want;
  size_t bad = 0;
  const bool ok = expected(format, msgs, gen, &want, &bad);
  std::string got;
  try {
    got = render_chat(format, msgs, gen);
  } catch (const Error& e) {
    FUZZ_CHECK(!ok, "render_chat threw for a valid conversation: ", e.what());
    const std::string m = e.what();
    FUZZ_CHECK(m.find("message " + std::to_string(bad)) != std::string::npos,
               "the error does not name message ", bad, ": ", m);
    return 0;
  }
  FUZZ_CHECK(ok, "render_chat accepted role '", msgs[bad].role, "' of message ", bad);
  FUZZ_CHECK(got == want, "render_chat output differs from the documented format:\n", got,
             "\nexpected:\n", want);
  FUZZ_CHECK(template_adds_bos(format) == got.starts_with("<|startoftext|>"),
             "template_adds_bos disagrees with the output");
  return 0;
}
