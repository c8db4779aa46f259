// libFuzzer target: request bodies of `jamba serve` (server::parse_api_request, the JSON of
// /v1/chat/completions and /v1/completions), each input parsed for both endpoints, then the chat
// prompt rendered as the server does for a chat request.
//
// Contract (src/server/api.h): a bad body throws ApiError (an HTTP 4xx with OpenAI's error
// fields); nothing else escapes. Properties of a request that parses: the limits of api.h hold
// (messages, stop strings, logprobs), every string is well-formed UTF-8, ids are >= 0, and the
// sampling parameters pass the engine's own validate_sampling_params(). error_body() of every
// ApiError is a JSON object {"error": {"message": ..., "type": ...}}.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/chat_template.h"
#include "runtime/sampler.h"
#include "server/api.h"

using namespace jamba;
using namespace jamba::server;

namespace {

void check_request(const ApiRequest& r, Endpoint ep) {
  auto utf8 = [](const std::string& s, const char* what) {
    FUZZ_CHECK(fuzz::valid_utf8(s), what, " is not valid UTF-8");
  };
  utf8(r.model, "model");
  if (ep == Endpoint::Chat) {
    FUZZ_CHECK(!r.messages.empty() && r.messages.size() <= kMaxMessages, r.messages.size(),
               " messages");
    for (const ChatMessage& m : r.messages) {
      FUZZ_CHECK(
          m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool",
          "role '", m.role, "'");
      utf8(m.content, "content");
    }
    FUZZ_CHECK(r.logprobs >= -1 && r.logprobs <= kMaxTopLogprobsChat, "logprobs ", r.logprobs);
  } else {
    FUZZ_CHECK(r.prompt_is_ids ? !r.prompt_ids.empty() : !r.prompt_text.empty(), "empty prompt");
    for (int32_t id : r.prompt_ids) FUZZ_CHECK(id >= 0, "prompt id ", id);
    utf8(r.prompt_text, "prompt");
    FUZZ_CHECK(r.logprobs >= -1 && r.logprobs <= kMaxLogprobsCompletion, "logprobs ", r.logprobs);
  }
  FUZZ_CHECK(r.stop.size() <= kMaxStopStrings, r.stop.size(), " stop strings");
  for (const std::string& s : r.stop) {
    FUZZ_CHECK(!s.empty() && s.size() <= kMaxStopBytes, "stop string of ", s.size(), " bytes");
    utf8(s, "stop");
  }
  FUZZ_CHECK(!r.max_tokens || *r.max_tokens >= 1, "max_tokens ", *r.max_tokens);
  try {
    validate_sampling_params(r.sampling);
  } catch (const Error& e) {
    FUZZ_CHECK(false, "parsed sampling parameters fail the engine's validation: ", e.what());
  }
  if (ep == Endpoint::Chat) {
    for (ChatFormat f : {ChatFormat::Jamba15, ChatFormat::ChatML}) {
      try {
        render_chat(f, r.messages, true);
      } catch (const Error&) {  // a role the family does not allow there: the server's 400
      }
    }
  }
}

void check_error(const ApiError& e) {
  FUZZ_CHECK(e.status >= 400 && e.status < 500, "status ", e.status, " for a bad body");
  const std::string body = error_body(e);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& x) {
    FUZZ_CHECK(false, "error_body is not JSON: ", x.what());
  }
  FUZZ_CHECK(j.is_object() && j.contains("error") && j["error"].is_object() &&
                 j["error"].contains("message") && j["error"]["message"].is_string() &&
                 j["error"].contains("type") && j["error"]["type"].is_string(),
             "error_body lacks error.message / error.type: ", body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body = fuzz::as_text(data, size);
  for (Endpoint ep : {Endpoint::Chat, Endpoint::Completion}) {
    try {
      check_request(parse_api_request(body, ep), ep);
    } catch (const ApiError& e) {
      check_error(e);
    }
  }
  return 0;
}
