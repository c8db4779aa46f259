#include "server/api.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_limits.h"

namespace jamba::server {

using json = nlohmann::json;

namespace {
std::string type_for(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    case 429:
    case 503: return "server_overloaded";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

[[noreturn]] void bad(const std::string& param, const std::string& msg) {
  throw ApiError(400, "'" + param + "' " + msg, param);
}

const char* kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

double number(const json& j, const char* name, double lo, double hi) {
  const json& v = j.at(name);
  if (!v.is_number()) bad(name, std::string("must be a number, got ") + kind(v));
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    bad(name, "must be in [" + brief(json(lo)) + ", " + brief(json(hi)) + "], got " + brief(v));
  return x;
}

int64_t integer(const json& j, const char* name, int64_t lo, int64_t hi) {
  const json& v = j.at(name);
  if (v.is_number_float()) {  // 16.0 is an integer; 16.5 is not
    const double d = v.get<double>();
    if (d != std::floor(d) || !(d >= double(lo) && d <= double(hi)))
      bad(name, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                    "], got " + brief(v));
    return int64_t(d);
  }
  if (!v.is_number_integer()) bad(name, std::string("must be an integer, got ") + kind(v));
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    bad(name, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  "], got " + brief(v));
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad(name, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  "], got " + std::to_string(x));
  return x;
}

bool boolean(const json& j, const char* name) {
  const json& v = j.at(name);
  if (!v.is_boolean()) bad(name, std::string("must be a boolean, got ") + kind(v));
  return v.get<bool>();
}

// present and not null
bool has(const json& j, const char* name) { return j.contains(name) && !j.at(name).is_null(); }

std::string message_content(const json& m, size_t i) {
  const std::string where = "messages[" + std::to_string(i) + "].content";
  if (!m.contains("content") || m.at("content").is_null()) return "";
  const json& c = m.at("content");
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {  // content parts: only text parts are supported
    std::string out;
    for (size_t k = 0; k < c.size(); ++k) {
      const json& p = c[k];
      const std::string pw = where + "[" + std::to_string(k) + "]";
      if (!p.is_object() || !p.contains("type") || !p.at("type").is_string())
        bad(pw, "must be an object with a string 'type'");
      if (p.at("type").get<std::string>() != "text")
        bad(pw + ".type", "must be \"text\" (this model reads text only), got " + brief(p.at("type")));
      if (!p.contains("text") || !p.at("text").is_string())
        bad(pw + ".text", "must be a string");
      out += p.at("text").get<std::string>();
    }
    return out;
  }
  bad(where, std::string("must be a string or an array of text parts, got ") + kind(c));
}
}  // namespace

ApiError::ApiError(int status_, std::string message, std::string param_, std::string code_)
    : std::runtime_error(std::move(message)),
      status(status_),
      type(type_for(status_)),
      param(std::move(param_)),
      code(std::move(code_)) {}

std::string error_body(const ApiError& e) {
  json err = {{"message", e.what()},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return json{{"error", err}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) { ++i; continue; }
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + size_t(len) > n) return false;
    for (int k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + size_t(k)]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += size_t(len);
  }
  return true;
}

namespace {
// Byte offset of the first invalid UTF-8 sequence (npos if none) and its length.
size_t first_invalid_utf8(std::string_view s, size_t* len) {
  size_t i = 0;
  while (i < s.size()) {
    size_t n = 1;
    while (i + n <= s.size() && n <= 4 && !valid_utf8(s.substr(i, n))) ++n;
    if (n > 4 || i + n > s.size()) {
      *len = 1;
      return i;
    }
    i += n;
  }
  return std::string_view::npos;
}

// Path ("messages[1].content") of the first string (or key) containing `marker`, or "".
std::string path_of(const json& j, const std::string& marker, const std::string& here) {
  if (j.is_string()) return j.get_ref<const std::string&>().find(marker) != std::string::npos ? here : "";
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      std::string p = path_of(j[i], marker, here + "[" + std::to_string(i) + "]");
      if (!p.empty()) return p;
    }
  } else if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      const std::string sub = here.empty() ? k : here + "." + k;
      if (k.find(marker) != std::string::npos) return sub;
      std::string p = path_of(v, marker, sub);
      if (!p.empty()) return p;
    }
  }
  return "";
}
}  // namespace

json parse_body(std::string_view body) {
  if (!valid_utf8(body)) {
    // Name the field that holds the bad bytes: parse a copy with each invalid byte replaced
    // by a private-use character, then find that character.
    static const std::string kMark = "\xf3\xb0\x80\x80";  // U+F0000
    std::string fixed;
    size_t pos = 0, len = 0, first = std::string::npos;
    for (;;) {
      const size_t at = first_invalid_utf8(body.substr(pos), &len);
      if (at == std::string_view::npos) break;
      if (first == std::string::npos) first = pos + at;
      fixed.append(body.substr(pos, at));
      fixed += kMark;
      pos += at + len;
    }
    fixed.append(body.substr(pos));
    std::string field;
    try {
      field = path_of(parse_json_limited(fixed, "request body"), kMark, "");
    } catch (const Error&) {
    }
    for (size_t at; (at = field.find(kMark)) != std::string::npos;) field.replace(at, kMark.size(), "\xef\xbf\xbd");
    const std::string where = " (byte " + std::to_string(first) + " of the body)";
    if (!field.empty()) throw ApiError(400, "'" + field + "' is not valid UTF-8" + where, field);
    throw ApiError(400, "the request body is not valid UTF-8" + where);
  }
  try {
    return parse_json_limited(body, "request body");
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
}

ApiRequest parse_api_request(std::string_view body, Endpoint ep) {
  json j = parse_body(body);
  if (!j.is_object())
    throw ApiError(400, std::string("the request body must be a JSON object, got ") + kind(j));
  ApiRequest r;
  r.endpoint = ep;
  r.sampling = SamplingParams{.temperature = 1.0f, .penalty_last_n = -1};

  if (has(j, "model")) {
    if (!j["model"].is_string()) bad("model", std::string("must be a string, got ") + kind(j["model"]));
    r.model = j["model"].get<std::string>();
  }
  if (has(j, "n") && integer(j, "n", std::numeric_limits<int64_t>::min(),
                             std::numeric_limits<int64_t>::max()) != 1)
    throw ApiError(400, "'n' must be 1: one choice per request is supported, got " +
                            brief(j["n"]), "n");
  if (has(j, "best_of")) (void)integer(j, "best_of", 1, 1);

  if (ep == Endpoint::Chat) {
    if (!j.contains("messages")) bad("messages", "is required");
    const json& ms = j["messages"];
    if (!ms.is_array()) bad("messages", std::string("must be an array, got ") + kind(ms));
    if (ms.empty()) bad("messages", "must not be empty");
    if (ms.size() > kMaxMessages)
      bad("messages", "has " + std::to_string(ms.size()) + " entries, at most " +
                          std::to_string(kMaxMessages) + " are accepted");
    for (size_t i = 0; i < ms.size(); ++i) {
      const json& m = ms[i];
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) bad(where, std::string("must be an object, got ") + kind(m));
      if (!m.contains("role") || !m["role"].is_string()) bad(where + ".role", "must be a string");
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";  // OpenAI's newer name for the system role
      if (role != "system" && role != "user" && role != "assistant" && role != "tool")
        bad(where + ".role", "must be one of system, developer, user, assistant, tool; got " +
                                 brief(m["role"]));
      r.messages.push_back({role, message_content(m, i)});
    }
  } else {
    if (!j.contains("prompt")) bad("prompt", "is required");
    json p = j["prompt"];
    // OpenAI accepts a list of prompts (a batch); one prompt per request is supported, written
    // as a string, a list of token ids, or a one-element list of either.
    if (p.is_array() && p.size() == 1 && (p[0].is_string() || p[0].is_array())) p = json(p[0]);
    if (p.is_string()) {
      r.prompt_text = p.get<std::string>();
      if (r.prompt_text.empty()) bad("prompt", "must not be empty");
    } else if (p.is_array()) {
      if (p.empty()) bad("prompt", "must not be empty");
      r.prompt_is_ids = true;
      for (size_t i = 0; i < p.size(); ++i) {
        if (!p[i].is_number_integer())
          bad("prompt", "must be a string or a list of token ids; element " + std::to_string(i) +
                            " is " + brief(p[i]));
        const int64_t id = p[i].get<int64_t>();
        if (id < 0 || id > std::numeric_limits<int32_t>::max())
          bad("prompt", "token id " + std::to_string(id) + " at position " + std::to_string(i) +
                            " is out of range");
        r.prompt_ids.push_back(int32_t(id));
      }
    } else {
      bad("prompt", std::string("must be a string or a list of token ids, got ") + kind(p));
    }
  }

  const int64_t kMaxTok = int64_t(1) << 40;
  if (has(j, "max_completion_tokens")) r.max_tokens = integer(j, "max_completion_tokens", 1, kMaxTok);
  else if (has(j, "max_tokens")) r.max_tokens = integer(j, "max_tokens", 1, kMaxTok);
  SamplingParams& sp = r.sampling;
  if (has(j, "temperature")) sp.temperature = float(number(j, "temperature", 0.0, 2.0));
  if (has(j, "top_p")) {
    sp.top_p = float(number(j, "top_p", 0.0, 1.0));
    if (sp.top_p <= 0.0f) bad("top_p", "must be in (0, 1], got 0");
  }
  if (has(j, "top_k")) sp.top_k = int(integer(j, "top_k", 0, std::numeric_limits<int>::max()));
  if (has(j, "min_p")) sp.min_p = float(number(j, "min_p", 0.0, 1.0));
  if (has(j, "presence_penalty")) sp.presence_penalty = float(number(j, "presence_penalty", -2.0, 2.0));
  if (has(j, "frequency_penalty"))
    sp.frequency_penalty = float(number(j, "frequency_penalty", -2.0, 2.0));
  if (has(j, "repetition_penalty"))
    sp.repetition_penalty = float(number(j, "repetition_penalty", 1e-3, 100.0));
  if (has(j, "seed")) {
    sp.seed = uint64_t(integer(j, "seed", std::numeric_limits<int64_t>::min(),
                               std::numeric_limits<int64_t>::max()));
    r.seed_given = true;
  }
  if (has(j, "stop")) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > kMaxStopStrings)
        bad("stop", "has " + std::to_string(s.size()) + " strings, at most " +
                        std::to_string(kMaxStopStrings) + " are accepted");
      for (const json& e : s) {
        if (!e.is_string()) bad("stop", "must be a string or a list of strings; got an element " + brief(e));
        r.stop.push_back(e.get<std::string>());
      }
    } else {
      bad("stop", std::string("must be a string or a list of strings, got ") + kind(s));
    }
    for (const std::string& st : r.stop) {
      if (st.empty()) bad("stop", "must not contain an empty string");
      if (st.size() > kMaxStopBytes)
        bad("stop", "strings must be at most " + std::to_string(kMaxStopBytes) + " bytes, got " +
                        std::to_string(st.size()));
    }
  }
  if (has(j, "stream")) r.stream = boolean(j, "stream");
  if (has(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) bad("stream_options", std::string("must be an object, got ") + kind(so));
    if (has(so, "include_usage")) {
      if (!so["include_usage"].is_boolean()) bad("stream_options.include_usage", "must be a boolean");
      r.include_usage = so["include_usage"].get<bool>();
    }
  }
  if (ep == Endpoint::Chat) {
    const bool lp = has(j, "logprobs") && boolean(j, "logprobs");
    if (has(j, "top_logprobs")) {
      const int64_t k = integer(j, "top_logprobs", 0, kMaxTopLogprobsChat);
      if (!lp) bad("top_logprobs", "requires 'logprobs': true");
      r.logprobs = int(k);
    } else if (lp) {
      r.logprobs = 0;
    }
  } else if (has(j, "logprobs")) {
    r.logprobs = int(integer(j, "logprobs", 0, kMaxLogprobsCompletion));
  }
  if (ep == Endpoint::Completion && has(j, "echo") && boolean(j, "echo"))
    bad("echo", "is not supported (must be false)");
  if (ep == Endpoint::Completion && has(j, "suffix"))
    bad("suffix", "is not supported (insertion needs a fill-in-the-middle model)");
  return r;
}

}  // namespace jamba::server
