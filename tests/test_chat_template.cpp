#include "test_util.h"
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"

namespace jamba {
namespace {

using testing_util::error_of;

TEST(ChatTemplate, DetectFamilies) {
  EXPECT_EQ(detect_chat_format(""), ChatFormat::Jamba15);
  EXPECT_EQ(detect_chat_format("{{ bos_token }}{% for m in messages %}{{ '<|bom|>' }}"),
            ChatFormat::Jamba15);
  EXPECT_EQ(detect_chat_format("{% for m in messages %}{{'<|im_start|>' + m['role']}}"),
            ChatFormat::ChatML);
  EXPECT_TRUE(template_adds_bos(ChatFormat::Jamba15));
  EXPECT_FALSE(template_adds_bos(ChatFormat::ChatML));
}

TEST(ChatTemplate, UnknownTemplateThrows) {
  const std::string tmpl =
      "{% for message in messages %}[INST] {{ message['content'] }} [/INST]{% endfor %} and a "
      "long tail that should not appear in the message at all";
  const std::string msg = error_of([&] { detect_chat_format(tmpl); });
  EXPECT_EQ(msg.rfind("chat template not supported: " + tmpl.substr(0, 80) + "...", 0), 0u) << msg;
  EXPECT_EQ(msg.find("should not appear"), std::string::npos) << msg;
}

TEST(ChatTemplate, Jamba15SystemUserGenerationPrompt) {
  const std::vector<ChatMessage> msgs = {{"system", "You are helpful."}, {"user", "Hi!"}};
  EXPECT_EQ(render_chat(ChatFormat::Jamba15, msgs, true),
            "<|startoftext|><|bom|><|system|> You are helpful.<|eom|><|bom|><|user|> Hi!<|eom|>"
            "<|bom|><|assistant|>");
  EXPECT_EQ(render_chat(ChatFormat::Jamba15, msgs, false),
            "<|startoftext|><|bom|><|system|> You are helpful.<|eom|><|bom|><|user|> Hi!<|eom|>");
}

TEST(ChatTemplate, Jamba15NoSystemEmitsEmptySystemTurn) {
  EXPECT_EQ(render_chat(ChatFormat::Jamba15, {{"user", "Hello"}}, true),
            "<|startoftext|><|bom|><|system|> <|eom|><|bom|><|user|> Hello<|eom|>"
            "<|bom|><|assistant|>");
  EXPECT_EQ(render_chat(ChatFormat::Jamba15, {}, true),
            "<|startoftext|><|bom|><|system|> <|eom|><|bom|><|assistant|>");
}

TEST(ChatTemplate, Jamba15MultiTurn) {
  const std::vector<ChatMessage> msgs = {{"system", "S"},
                                         {"user", "2+2?"},
                                         {"assistant", "4"},
                                         {"tool", "{\"ok\": true}"},
                                         {"user", "Thanks"}};
  EXPECT_EQ(render_chat(ChatFormat::Jamba15, msgs, true),
            "<|startoftext|><|bom|><|system|> S<|eom|><|bom|><|user|> 2+2?<|eom|>"
            "<|bom|><|assistant|> 4<|eom|><|bom|><|tool|> {\"ok\": true}<|eom|>"
            "<|bom|><|user|> Thanks<|eom|><|bom|><|assistant|>");
}

TEST(ChatTemplate, ChatML) {
  const std::vector<ChatMessage> msgs = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
  EXPECT_EQ(render_chat(ChatFormat::ChatML, msgs, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_chat(ChatFormat::ChatML, {{"user", "x"}}, false),
            "<|im_start|>user\nx<|im_end|>\n");
}

TEST(ChatTemplate, BadRoleThrows) {
  const std::string msg = error_of([] {
    render_chat(ChatFormat::Jamba15, {{"user", "a"}, {"robot", "b"}}, true);
  });
  EXPECT_NE(msg.find("message 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'robot'"), std::string::npos) << msg;
  const std::string msg2 = error_of([] { render_chat(ChatFormat::ChatML, {{"tool", "b"}}, true); });
  EXPECT_NE(msg2.find("message 0"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("'tool'"), std::string::npos) << msg2;
  // Jamba15 only accepts a system message first.
  const std::string msg3 = error_of([] {
    render_chat(ChatFormat::Jamba15, {{"user", "a"}, {"system", "b"}}, true);
  });
  EXPECT_NE(msg3.find("message 1"), std::string::npos) << msg3;
  EXPECT_THROW(render_chat(ChatFormat::Jamba15, {{"", "b"}}, true), Error);
}

TEST(ChatTemplate, RenderedJambaPromptTokenizesToSpecialIds) {
  const Tokenizer tok = Tokenizer::load(JAMBA_SHARED_DIR "/tokenizers/jamba.model");
  const std::string prompt =
      render_chat(ChatFormat::Jamba15, {{"system", "Be kind."}, {"user", "hello"}}, true);
  // The template supplies <|startoftext|>: encode without another BOS.
  const auto ids = tok.encode(prompt, /*add_bos=*/!template_adds_bos(ChatFormat::Jamba15));
  const int32_t bos = 1, bom = 519, eom = 518, system = 520, user = 521, assistant = 522;
  ASSERT_GE(ids.size(), 10u);
  EXPECT_EQ(ids[0], bos);
  EXPECT_EQ(ids[1], bom);
  EXPECT_EQ(ids[2], system);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), bos), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), bom), 3);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), eom), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), user), 1);
  EXPECT_EQ(ids[ids.size() - 2], bom);
  EXPECT_EQ(ids.back(), assistant);
  // " hello" after <|user|> is the ordinary "▁hello" piece.
  const auto it = std::find(ids.begin(), ids.end(), user);
  ASSERT_NE(it + 1, ids.end());
  EXPECT_EQ(*(it + 1), 27164);
  EXPECT_EQ(tok.decode(ids), prompt);
}

}  // namespace
}  // namespace jamba
