#include "io/json_limits.h"

#include "core/error.h"

namespace jamba {

int json_text_depth(std::string_view text, int stop_after) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // skip the escaped character (\" in particular)
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) max_depth = depth;
      if (max_depth > stop_after) return max_depth;
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
  return max_depth;
}

nlohmann::json parse_json_limited(std::string_view text, std::string_view what, int max_depth) {
  const int depth = json_text_depth(text, max_depth);
  if (depth > max_depth)
    fail(what, ": JSON nested more than ", max_depth, " levels deep (refused)");
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    fail(what, ": not valid JSON: ", e.what());
  }
}

namespace {
bool short_and_shallow(const nlohmann::json& v, int depth) {
  if (depth > 2) return false;
  if (v.is_string()) return v.get_ref<const std::string&>().size() <= 80;
  if (!v.is_structured()) return true;
  if (v.size() > 8) return false;
  for (const auto& e : v)
    if (!short_and_shallow(e, depth + 1)) return false;
  return true;
}
}  // namespace

std::string brief(const nlohmann::json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() <= 80) return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return nlohmann::json(s.substr(0, 80)).dump(-1, ' ', false,
                                                nlohmann::json::error_handler_t::replace) +
           "... (" + std::to_string(s.size()) + " bytes)";
  }
  if (short_and_shallow(v, 0))
    return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (v.is_array()) return "[array of " + std::to_string(v.size()) + "]";
  if (v.is_object()) return "{object of " + std::to_string(v.size()) + "}";
  return "<value>";
}

}  // namespace jamba
