// Errors: one exception type; library code never exits. Messages name the op/file/tensor/field,
// the expected and the actual value.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace jamba {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// cat("a", 1, "b") -> "a1b"
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

// "[2,64,128]"
template <typename T>
std::string shape_str(const std::vector<T>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << ']';
  return os.str();
}

}  // namespace jamba

#define JAMBA_CHECK(cond, ...)                      \
  do {                                              \
    if (!(cond)) ::jamba::fail(__VA_ARGS__);        \
  } while (0)
