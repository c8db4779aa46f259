// Small helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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

// max |a - b| over rows of width w whose mask entry (if any) is nonzero; NaN counts as inf.
template <typename MaskT = uint8_t>
float max_row_diff(const std::vector<float>& a, const std::vector<float>& b, int64_t w,
                   const std::vector<MaskT>& mask = {}) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size()) return INFINITY;
  float m = 0;
  for (size_t r = 0; r * size_t(w) < a.size(); ++r) {
    if (!mask.empty() && !mask[r]) continue;
    for (int64_t i = 0; i < w; ++i) {
      const float d = std::fabs(a[r * size_t(w) + size_t(i)] - b[r * size_t(w) + size_t(i)]);
      if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
    }
  }
  return m;
}

}  // namespace jamba::testing_util
