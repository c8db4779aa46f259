// Checked integer arithmetic for sizes that come from files (config fields, tensor shapes):
// a product or sum that would overflow int64 throws Error naming what was computed, instead of
// wrapping (signed overflow is undefined behaviour) into a small or negative size.
#pragma once
#include <cstdint>
#include <string_view>

#include "core/error.h"

namespace jamba {

// a * b; throws "<what>: a * b overflows int64".
inline int64_t checked_mul(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fail(what, ": ", a, " * ", b, " overflows int64");
  return r;
}

// a + b; throws "<what>: a + b overflows int64".
inline int64_t checked_add(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) fail(what, ": ", a, " + ", b, " overflows int64");
  return r;
}

// ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b.
constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return a / b + (a % b != 0);
}

}  // namespace jamba
