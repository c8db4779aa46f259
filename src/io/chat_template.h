// Chat prompt rendering for the known Jamba chat-template families. This is not a Jinja engine:
// the checkpoint's template text is only used to recognise its family, which is rendered natively.
//
//   Jamba15 (template contains "<|bom|>"; Jamba 1.5 / 1.6 / 1.7, Jamba-tiny-dev):
//     <|startoftext|><|bom|><|system|> {system}<|eom|><|bom|><|user|> {user}<|eom|>
//     <|bom|><|assistant|> {assistant}<|eom|> ... and, with add_generation_prompt,
//     <|bom|><|assistant|>   (no trailing space). An empty system turn "<|bom|><|system|> <|eom|>"
//     is emitted when the conversation has no system message; a system message is only allowed as
//     the first message. Roles: system, user, assistant, tool (<|tool|>). The prompt begins with
//     <|startoftext|>, so callers must not add another BOS (template_adds_bos()).
//     Tools / documents (rendered inside the system turn by the real template) are not supported.
//   ChatML (template contains "<|im_start|>"; Jamba Reasoning 3B):
//     <|im_start|>{role}\n{content}<|im_end|>\n per message, <|im_start|>assistant\n as the
//     generation prompt. Roles: system, user, assistant. No BOS.
//   An empty template (checkpoint without one) is treated as Jamba15.
#pragma once
#include <string>
#include <vector>

namespace jamba {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant" (| "tool" for Jamba15)
  std::string content;
};

enum class ChatFormat { Jamba15, ChatML };

// Recognises the template family; throws Error "chat template not supported: ..." otherwise.
ChatFormat detect_chat_format(const std::string& tmpl);
const char* chat_format_name(ChatFormat format);
// Whether render_chat()'s output already starts with the BOS token.
bool template_adds_bos(ChatFormat format);
// Throws Error naming the message index and role for an unknown or misplaced role.
std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

}  // namespace jamba
