#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace jamba {

namespace {
struct DTypeInfo {
  DType t;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kInfo[] = {
    {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::F64, "F64", 8}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2}, {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1}};
}  // namespace

size_t dtype_size(DType t) {
  for (const auto& i : kInfo)
    if (i.t == t) return i.size;
  return 0;
}
std::string_view dtype_name(DType t) {
  for (const auto& i : kInfo)
    if (i.t == t) return i.name;
  return "?";
}
bool dtype_from_name(std::string_view name, DType* out) {
  for (const auto& i : kInfo)
    if (name == i.name) {
      *out = i.t;
      return true;
    }
  return false;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ffu;
  float f;
  if (exp == 0) {  // zero / subnormal
    f = std::ldexp(float(man), -24);
    return sign ? -f : f;
  }
  uint32_t u;
  if (exp == 31)
    u = sign | 0x7f800000u | (man << 13);
  else
    u = sign | ((exp + 112) << 23) | (man << 13);
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;           // rounds to inf
  if (a < 6.103515625e-05f) {                        // subnormal half
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));  // a / 2^-24
  }
  uint32_t au = u & 0x7fffffffu;
  au += 0xfffu + ((au >> 13) & 1u);  // round to nearest even at bit 13
  return sign | uint16_t(((au >> 23) - 112) << 10 | ((au >> 13) & 0x3ffu));
}

namespace {
// Element i of type T at `src`, which may be misaligned for T (file data sits at any offset the
// safetensors format allows): a memcpy load, which compiles to a plain unaligned load.
template <typename T>
T load_at(const void* src, size_t i) {
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(src) + i * sizeof(T), sizeof(T));
  return v;
}
}  // namespace

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::F32:
      // src / dst of an empty tensor may be null, which memcpy does not allow even for 0 bytes.
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_at<uint16_t>(src, i));
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_at<uint16_t>(src, i));
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load_at<double>(src, i));
      return;
    default:
      fail("convert_to_f32: unsupported source dtype ", dtype_name(t));
  }
}

}  // namespace jamba
