// Quantized weight formats (docs/QUANT.md): the row layouts, and the row quantizers /
// dequantizers shared by the loader, `jamba quantize` and both kernel implementations.
//
// int8: one weight row [K] -> K int8 values q in [-127, 127] and one f32 scale
//       s = max|w| / 127; w ~= s * q.
// q4:   one weight row [K] -> ceil(K / 32) groups of 32 values; a group is 16 bytes (byte j holds
//       value j in its low nibble and value j + 16 in its high nibble, each stored as q + 8 with
//       q in [-8, 7]) and one bf16 scale s = bf16(m / -8), m the group's element of largest
//       magnitude (sign kept; it gets q = -8); w ~= s * q with q = clamp(round(w / s), -8, 7).
//       4.5 bits per weight. A last partial group is padded with q = 0 (nibble 8): any K is
//       accepted. (Format version 1 held the scales in f32: 5 bits per weight.)
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace jamba {

constexpr int64_t kQ4Group = 32;       // values per q4 group (one scale each)
constexpr int64_t kQ4GroupBytes = 16;  // bytes per q4 group

inline int64_t q4_groups(int64_t K) {
  return (K + kQ4Group - 1) / kQ4Group;
}
inline int64_t q4_row_bytes(int64_t K) {
  return q4_groups(K) * kQ4GroupBytes;
}

// w [K] -> q [K], *scale. A zero row gets scale 0 and q = 0.
void quantize_row_int8(const float* w, int64_t K, int8_t* q, float* scale);
// w [K] -> q [q4_row_bytes(K)], scales [q4_groups(K)] (bf16 bits).
void quantize_row_q4(const float* w, int64_t K, uint8_t* q, uint16_t* scales);

// Activations of a q4 product (kernels.h, GemmQ4Args): x [K] -> q [q4_groups(K) * 32] (padding
// 0), d [q4_groups(K)], per group of 32 d = max|x| / 127 and q = nearest-even(x / d) in
// [-127, 127] (all 0 for a zero group).
void quantize_act_q4(const float* x, int64_t K, int8_t* q, float* d);

// Activations of an int8 product (kernels.h, GemmQ8Args): x [K] -> q [K], *d, one scale per row
// d = max|x| / 32767 and q = nearest-even(x * (32767 / max|x|)) in [-32767, 32767] (all 0 when
// x is 0). 16-bit steps of the row's largest magnitude: ~4e-4 of bf16's relative step at it.
void quantize_act_int16(const float* x, int64_t K, int16_t* q, float* d);

// Activations of the large-M q4 product (kernels.h, GemmQ4Args): x [K] -> q [K], *d, one scale
// per row d = max|x| / 127 and q = nearest-even(x * (127 / max|x|)) in [-127, 127] (all 0 when
// x is 0): the rounding of quantize_act_int16 with 8-bit steps.
void quantize_act_int8(const float* x, int64_t K, int8_t* q, float* d);

// A q4 row [q4_row_bytes(K)] with its group scales rounded again to int8 with one scale per row,
// for the large-M q4 product (kernels.h, GemmQ4Args): with amax = 8 * max_g |s[g]| (the largest
// |s[g] * q|: each group's largest element is q = -8), *scale = amax / 127 and out[k] =
// nearest-even(q[k] * (s[g] * (127 / amax))) in [-127, 127] (0 for a zero row).
void requantize_row_q4_int8(const uint8_t* q, const uint16_t* scales, int64_t K, int8_t* out,
                            float* scale);

// The exact inverse used by the reference kernels: out[k] = s * q (float arithmetic).
void dequantize_row_int8(const int8_t* q, float scale, int64_t K, float* out);
void dequantize_row_q4(const uint8_t* q, const uint16_t* scales, int64_t K, float* out);

// The stored q of value k of a q4 row (in [-8, 7]).
inline int q4_value(const uint8_t* row, int64_t k) {
  const uint8_t b = row[(k / kQ4Group) * kQ4GroupBytes + (k % kQ4Group) % kQ4GroupBytes];
  return int((k % kQ4Group) < kQ4GroupBytes ? (b & 0x0F) : (b >> 4)) - 8;
}

}  // namespace jamba
