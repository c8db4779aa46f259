// The OpenAI-compatible request schema of `jamba serve`: JSON bodies of /v1/chat/completions and
// /v1/completions parsed and validated into a plain ApiRequest. No HTTP and no model here, so
// this is what the request fuzz target exercises. Bad input throws ApiError carrying the HTTP
// status and OpenAI's error fields ({"error": {"message", "type", "param", "code"}}); the
// message names the field, the expected and the actual value.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "io/chat_template.h"
#include "runtime/sampler.h"

namespace jamba::server {

struct ApiError : std::runtime_error {
  int status;
  std::string type, param, code;
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
};

enum class Endpoint { Chat, Completion };

struct ApiRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;                   // empty: the served model
  std::vector<ChatMessage> messages;   // Chat
  bool prompt_is_ids = false;          // Completion: prompt as token ids
  std::string prompt_text;             // Completion
  std::vector<int32_t> prompt_ids;     // Completion
  std::optional<int64_t> max_tokens;   // max_tokens / max_completion_tokens
  SamplingParams sampling;             // OpenAI defaults: temperature 1, no truncation
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
  int logprobs = -1;                   // -1: off; else the number of top alternatives
};

// Limits of one request, each with its reason.
inline constexpr size_t kMaxStopStrings = 16;      // OpenAI allows 4; llama.cpp more
inline constexpr size_t kMaxStopBytes = 256;       // a stop string is a marker, not a text
inline constexpr size_t kMaxMessages = 4096;       // far beyond any context's worth of turns
inline constexpr int kMaxTopLogprobsChat = 20;     // OpenAI's limit (chat)
inline constexpr int kMaxLogprobsCompletion = 5;   // OpenAI's limit (legacy completions)

// Parses a request body for `ep`. Unknown fields are ignored, as OpenAI's clients send fields
// a server may not know. Throws ApiError (400) for invalid JSON, nesting deeper than
// kMaxJsonDepth, or any invalid field.
ApiRequest parse_api_request(std::string_view body, Endpoint ep);

// A JSON object body of any route, parsed with the limits above (ApiError 400 otherwise; a
// body that is not UTF-8 is refused naming the field that holds the bad bytes).
nlohmann::json parse_body(std::string_view body);

// {"error": {...}} for an ApiError.
std::string error_body(const ApiError& e);

// Checks that `s` is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view s);

}  // namespace jamba::server
