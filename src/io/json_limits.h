// JSON from untrusted sources (checkpoint headers and configs from the internet, session files,
// request bodies): parsed with a bounded nesting depth, and described in error messages by a
// bounded summary instead of the whole value.
//
// Why: nlohmann::json parses iteratively, but dump() and comparisons recurse once per nesting
// level, so ~65k levels of "[[[[..." overflow the stack (a segfault, not an exception) as soon
// as an error message serialises the value. Rejecting deep input at parse time removes the whole
// class; brief() keeps messages short even for huge (shallow) values.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace jamba {

// Deep enough for every real config / header / request (the deepest real one, an OpenAI request
// with tool schemas, nests ~10 levels); shallow enough that recursion over it is harmless.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text`; throws Error "<what>: not valid JSON: ..." (with the position) or, for nesting
// deeper than max_depth, "<what>: JSON nested more than <max_depth> levels deep" (checked on
// the raw text, before any value is built).
nlohmann::json parse_json_limited(std::string_view text, std::string_view what,
                                  int max_depth = kMaxJsonDepth);

// Nesting depth of the JSON text (arrays and objects; brackets inside strings are ignored).
// Stops counting once it exceeds `stop_after` and returns that count.
int json_text_depth(std::string_view text, int stop_after);

// A value for an error message: scalars in full (strings cut at 80 bytes), arrays/objects as
// "[array of N]" / "{object of N}" when their dump would be long or deep.
std::string brief(const nlohmann::json& v);

}  // namespace jamba
