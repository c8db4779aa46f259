// Small helpers shared by the test files.
#pragma once
#include <functional>
#include <string>

#include "core/error.h"

namespace jamba::testing_util {

// The message of the jamba::Error that f() throws, or "" if it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace jamba::testing_util
