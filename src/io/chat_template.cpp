#include "io/chat_template.h"

#include "core/error.h"

namespace jamba {

ChatFormat detect_chat_format(const std::string& tmpl) {
  if (tmpl.empty() || tmpl.find("<|bom|>") != std::string::npos) return ChatFormat::Jamba15;
  if (tmpl.find("<|im_start|>") != std::string::npos) return ChatFormat::ChatML;
  const bool cut = tmpl.size() > 80;
  fail("chat template not supported: ", tmpl.substr(0, 80), cut ? "..." : "",
       " (known families: Jamba 1.5+ '<|bom|>', ChatML '<|im_start|>')");
}

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::Jamba15:
      return "jamba-1.5";
    case ChatFormat::ChatML:
      return "chatml";
  }
  return "?";
}

bool template_adds_bos(ChatFormat format) {
  return format == ChatFormat::Jamba15;
}

namespace {

[[noreturn]] void bad_role(ChatFormat format, size_t i, const std::string& role, const char* why) {
  fail("render_chat (", chat_format_name(format), "): message ", i, " has role '", role,
       "': ", why);
}

std::string render_jamba15(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out = "<|startoftext|>";
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    out += "<|bom|><|system|> " + messages[0].content + "<|eom|>";
    first = 1;
  } else {
    out += "<|bom|><|system|> <|eom|>";
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system")
      bad_role(ChatFormat::Jamba15, i, m.role, "a system message must be the first message");
    if (m.role != "user" && m.role != "assistant" && m.role != "tool")
      bad_role(ChatFormat::Jamba15, i, m.role, "expected system, user, assistant or tool");
    out += "<|bom|><|" + m.role + "|> " + m.content + "<|eom|>";
  }
  if (add_generation_prompt) out += "<|bom|><|assistant|>";
  return out;
}

std::string render_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      bad_role(ChatFormat::ChatML, i, m.role, "expected system, user or assistant");
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace

std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  switch (format) {
    case ChatFormat::Jamba15:
      return render_jamba15(messages, add_generation_prompt);
    case ChatFormat::ChatML:
      return render_chatml(messages, add_generation_prompt);
  }
  fail("render_chat: unknown chat format ", static_cast<int>(format));
}

}  // namespace jamba
