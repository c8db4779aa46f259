// Quantized-weight GEMMs (int8 per-row, q4 groups of 32): the row quantizers' error bounds and
// the fast kernels against the plain references over odd sizes, tails and partial q4 groups.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "tolerances.h"

namespace jamba {
namespace {

TEST(QuantRows, Int8RoundTripWithinHalfStep) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t K : {1, 5, 16, 33, 100}) {
    std::vector<float> w(static_cast<size_t>(K)), back(w.size());
    for (float& x : w) x = nd(rng);
    std::vector<int8_t> q(w.size());
    float s = 0;
    quantize_row_int8(w.data(), K, q.data(), &s);
    dequantize_row_int8(q.data(), s, K, back.data());
    float amax = 0;
    for (float x : w) amax = std::max(amax, std::fabs(x));
    EXPECT_FLOAT_EQ(s, amax / 127.0f);
    for (int64_t k = 0; k < K; ++k) {
      EXPECT_LE(std::fabs(back[size_t(k)] - w[size_t(k)]), 0.5001f * s) << "K=" << K << " k=" << k;
      EXPECT_GE(q[size_t(k)], -127);
    }
  }
  std::vector<float> zero(7, 0.0f);
  std::vector<int8_t> q(7, 1);
  float s = 1;
  quantize_row_int8(zero.data(), 7, q.data(), &s);
  EXPECT_EQ(s, 0.0f);
  for (int8_t v : q) EXPECT_EQ(v, 0);
}

// The load-time row quantizers (vectorised 16 values at a time) against their formulas in
// scalar code (division by the scale, std::round's ties away from zero, q4's first element of
// largest magnitude): random rows with values on exact half steps, a zero group, and a group
// whose two extremes tie in magnitude with opposite signs.
TEST(QuantRows, RowQuantizersMatchScalarFormula) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int64_t K : {1, 15, 16, 17, 31, 32, 33, 64, 95, 96, 128, 1037}) {
    std::vector<float> w(static_cast<size_t>(K));
    for (float& v : w) v = nd(rng);
    // int8: max 127 -> s = 1, so x.5 values are ties
    std::vector<float> w8 = w;
    w8[0] = 127.0f;
    for (int64_t k = 1; k < K; k += 3) w8[size_t(k)] = float(int(k % 200) - 100) + 0.5f;
    std::vector<int8_t> q8(static_cast<size_t>(K));
    float s8 = 0;
    quantize_row_int8(w8.data(), K, q8.data(), &s8);
    EXPECT_EQ(s8, 127.0f / 127.0f);
    for (int64_t k = 0; k < K; ++k) {
      EXPECT_EQ(q8[size_t(k)], int8_t(std::clamp(std::round(w8[size_t(k)] / s8), -127.0f, 127.0f)))
          << "K=" << K << " k=" << k;
    }
    // q4: group extreme -2 -> s = 0.25 (exact in bf16), values on half steps
    for (int64_t g = 0; g < q4_groups(K); ++g) {
      w[size_t(g * kQ4Group)] = -2.0f;
      for (int64_t k = g * kQ4Group + 2; k < std::min(K, (g + 1) * kQ4Group); k += 4)
        w[size_t(k)] = float(int(k % 15) - 7) * 0.25f + 0.125f;
    }
    if (K >= 64) std::fill_n(w.begin() + 32, 32, 0.0f);
    if (K >= 96) {
      w[64 + 3] = 3.0f;
      w[64 + 10] = -3.0f;
    }
    const int64_t G = q4_groups(K);
    std::vector<uint8_t> q(static_cast<size_t>(q4_row_bytes(K)));
    std::vector<uint16_t> sc(static_cast<size_t>(G));
    quantize_row_q4(w.data(), K, q.data(), sc.data());
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * kQ4Group, n = std::min(kQ4Group, K - k0);
      float m = 0.0f;
      for (int64_t j = 0; j < n; ++j)
        if (std::fabs(w[size_t(k0 + j)]) > std::fabs(m)) m = w[size_t(k0 + j)];
      ASSERT_EQ(sc[size_t(g)], f32_to_bf16(m / -8.0f)) << "K=" << K << " g=" << g;
      const float sg = bf16_to_f32(sc[size_t(g)]);
      for (int64_t j = 0; j < kQ4Group; ++j) {
        const float v = (j < n && sg != 0.0f) ? std::round(w[size_t(k0 + j)] / sg) : 0.0f;
        EXPECT_EQ(q4_value(q.data(), k0 + j), int(std::clamp(v, -8.0f, 7.0f)))
            << "K=" << K << " k=" << k0 + j;
      }
    }
    if (K >= 96) {
      EXPECT_EQ(bf16_to_f32(sc[2]), -0.375f);  // the first of the tied extremes
    }
  }
}

// A per-row activation rounding (vectorised for 16 values at a time) against its formula in
// scalar code: nearest-even of x * kMax / max|x|, over tails of every length and exact ties; an
// all-zero row gives zeros and scale 0.
template <typename T, int kMax>
void check_act_row(void (*quantize)(const float*, int64_t, T*, float*), unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int64_t K : {1, 2, 15, 16, 17, 31, 33, 100, 1037}) {
    std::vector<float> x(static_cast<size_t>(K));
    for (float& v : x) v = nd(rng);
    x[size_t(K / 2)] = -4.0f;  // the maximum: inv = kMax / 4, so k / 8 lands on halves
    for (int64_t k = 0; k < K; k += 3) x[size_t(k)] = float(k % 50) * 0.5f / float(kMax) * 4.0f;
    std::vector<T> q(static_cast<size_t>(K));
    float d = 0;
    quantize(x.data(), K, q.data(), &d);
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    EXPECT_EQ(d, amax / float(kMax));
    const float inv = float(kMax) / amax;
    for (int64_t k = 0; k < K; ++k) {
      const float want = std::clamp(std::nearbyint(x[size_t(k)] * inv), -float(kMax), float(kMax));
      EXPECT_EQ(q[size_t(k)], T(want)) << "K=" << K << " k=" << k << " x=" << x[size_t(k)];
    }
  }
  std::vector<float> z(40, 0.0f);
  std::vector<T> q(40, 1);
  float d = 1;
  quantize(z.data(), 40, q.data(), &d);
  EXPECT_EQ(d, 0.0f);
  for (T v : q) EXPECT_EQ(v, 0);
}

// The int8 product's activations (int16 per row).
TEST(QuantRows, ActInt16MatchesScalarFormula) { check_act_row<int16_t, 32767>(quantize_act_int16, 5); }

// The large-M q4 product's activations (int8 per row: the int16 code with 8-bit steps).
TEST(QuantRows, ActInt8MatchesScalarFormula) { check_act_row<int8_t, 127>(quantize_act_int8, 6); }

// Decode's per-group int8 rounding of q4 activations (vectorised per full group) against its
// formula in scalar code: partial last groups, a zero group, exact ties (nearest even).
TEST(QuantRows, ActQ4MatchesScalarFormula) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int64_t K : {1, 17, 31, 32, 33, 64, 95, 128, 1037}) {
    std::vector<float> x(static_cast<size_t>(K));
    for (float& v : x) v = nd(rng);
    for (int64_t g = 0; g < q4_groups(K); ++g) {  // max 2 in each group: steps of 2/127
      x[size_t(g * kQ4Group)] = 2.0f;
      for (int64_t k = g * kQ4Group + 5; k < std::min(K, (g + 1) * kQ4Group); k += 7)
        x[size_t(k)] = float(k % 9) * 0.5f * (2.0f / 127.0f);  // halves of a step
    }
    if (K >= 64) std::fill_n(x.begin() + 32, 32, 0.0f);  // a zero group
    const int64_t G = q4_groups(K);
    std::vector<int8_t> q(static_cast<size_t>(G * kQ4Group), 99);
    std::vector<float> d(static_cast<size_t>(G));
    quantize_act_q4(x.data(), K, q.data(), d.data());
    for (int64_t g = 0; g < G; ++g) {
      float amax = 0;
      for (int64_t k = g * kQ4Group; k < std::min(K, (g + 1) * kQ4Group); ++k)
        amax = std::max(amax, std::fabs(x[size_t(k)]));
      const float s = amax / 127.0f;
      EXPECT_EQ(d[size_t(g)], s) << "K=" << K << " g=" << g;
      for (int64_t j = 0; j < kQ4Group; ++j) {
        const int64_t k = g * kQ4Group + j;
        const float want =
            k < K && s > 0.0f ? std::clamp(std::nearbyint(x[size_t(k)] / s), -127.0f, 127.0f) : 0.0f;
        EXPECT_EQ(q[size_t(k)], int8_t(want)) << "K=" << K << " k=" << k;
      }
    }
  }
}

// The large-M q4 product's requantization (tables per group, vectorised per 4 full groups)
// against its formula in scalar code, over partial last groups and group counts that are not a
// multiple of 4; and its step is the int8 one of the q4 values.
TEST(QuantRows, Q4RequantizeToInt8MatchesScalarFormula) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int64_t K : {1, 31, 32, 33, 64, 95, 128, 200, 288, 1037}) {
    std::vector<float> w(static_cast<size_t>(K));
    for (float& v : w) v = nd(rng);
    std::vector<uint8_t> q(static_cast<size_t>(q4_row_bytes(K)));
    std::vector<uint16_t> sc(static_cast<size_t>(q4_groups(K)));
    quantize_row_q4(w.data(), K, q.data(), sc.data());
    std::vector<int8_t> out(static_cast<size_t>(K));
    float s8 = 0;
    requantize_row_q4_int8(q.data(), sc.data(), K, out.data(), &s8);
    std::vector<float> v(static_cast<size_t>(K));
    dequantize_row_q4(q.data(), sc.data(), K, v.data());
    float amax = 0;
    for (float x : v) amax = std::max(amax, std::fabs(x));
    EXPECT_EQ(s8, amax / 127.0f) << "K=" << K;
    const float inv = 127.0f / amax;
    for (int64_t k = 0; k < K; ++k) {
      const float f = bf16_to_f32(sc[size_t(k / kQ4Group)]) * inv;
      const float want = std::clamp(std::nearbyint(float(q4_value(q.data(), k)) * f), -127.0f, 127.0f);
      EXPECT_EQ(out[size_t(k)], int8_t(want)) << "K=" << K << " k=" << k;
      EXPECT_LE(std::fabs(s8 * float(out[size_t(k)]) - v[size_t(k)]), 0.5001f * s8);
    }
  }
}

TEST(QuantRows, Q4RoundTripWithinHalfStepAndPadsTail) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t K : {1, 17, 31, 32, 33, 64, 95}) {
    std::vector<float> w(static_cast<size_t>(K)), back(w.size());
    for (float& x : w) x = nd(rng);
    std::vector<uint8_t> q(static_cast<size_t>(q4_row_bytes(K)));
    std::vector<uint16_t> s(static_cast<size_t>(q4_groups(K)));
    quantize_row_q4(w.data(), K, q.data(), s.data());
    dequantize_row_q4(q.data(), s.data(), K, back.data());
    // Half a step, except values beyond +7.5 steps (opposite in sign to the group's largest
    // element) which clamp to 7: at most one step, plus 8 times the bf16 scale's relative
    // rounding (2^-9 at most) for a value as large as the largest: 1.016 steps.
    for (int64_t k = 0; k < K; ++k) {
      const float step = std::fabs(bf16_to_f32(s[size_t(k / kQ4Group)]));
      const float bound = std::fabs(w[size_t(k)]) > 7.5f * step ? 1.017f : 0.5001f;
      EXPECT_LE(std::fabs(back[size_t(k)] - w[size_t(k)]), bound * step) << "K=" << K;
    }
    // Each group's scale is bf16(m / -8), m its element of largest magnitude, which gets q = -8.
    for (int64_t g = 0; g < q4_groups(K); ++g) {
      float m = 0;
      int64_t km = 0;
      for (int64_t k = g * kQ4Group; k < std::min(K, (g + 1) * kQ4Group); ++k)
        if (std::fabs(w[size_t(k)]) > std::fabs(m)) m = w[size_t(km = k)];
      EXPECT_EQ(s[size_t(g)], f32_to_bf16(m / -8.0f));
      EXPECT_EQ(q4_value(q.data(), km), -8);
    }
    // Padding of the last group: q = 0.
    for (int64_t k = K; k < q4_groups(K) * kQ4Group; ++k) EXPECT_EQ(q4_value(q.data(), k), 0);
  }
}

struct QCase {
  int64_t M, N, K;
  int64_t pad_a, pad_w, pad_c;  // extra row stride (pad_w in bytes for q8, whole groups for q4)
  bool bias, accumulate;
};

const QCase kCases[] = {
    {1, 1, 1, 0, 0, 0, false, false},      {1, 37, 15, 0, 0, 0, true, false},
    {1, 64, 32, 0, 0, 0, false, false},    {1, 300, 47, 1, 2, 3, true, false},
    {2, 129, 33, 3, 1, 5, true, true},     {3, 7, 200, 0, 0, 0, false, true},
    {5, 300, 95, 1, 2, 3, true, false},    {8, 130, 64, 0, 0, 0, false, false},
    {9, 129, 31, 0, 0, 0, true, false},    {17, 257, 65, 2, 3, 1, true, true},
    {32, 70, 48, 0, 0, 0, false, false},   {33, 1, 5, 0, 0, 0, true, false},
    {64, 200, 128, 0, 0, 0, false, false}, {40, 131, 77, 1, 1, 2, true, true},
    {4, 0, 8, 0, 0, 0, false, false},
    // long rows: int8's int32 sums move to f32 every 4096 inputs (tails after the last move)
    {1, 40, 9000, 0, 3, 0, true, false},    {8, 33, 4100, 2, 0, 1, false, true},
    {3, 20, 8193, 0, 0, 0, false, false},
    // q4 quads of 4 groups: a last quad of 3 full groups (+ a partial group), of 3 exactly
    {2, 45, 230, 1, 1, 0, true, true},      {8, 19, 480, 0, 0, 0, false, false},
    // M > 32: cached panels of weight rows (a last partial panel; one panel wider than N),
    // every activation row passing 8 at a time with a tail of 5 / 4 / 7 rows
    {45, 300, 4100, 1, 2, 3, true, true},   {100, 9, 2100, 0, 0, 0, true, false},
    {39, 70, 230, 0, 1, 0, false, true},
};

// Runs ref and cpu through `run(C)` on the same C0 and compares per element, relative to
// sqrt(K) * max|w| (the scale of a sum of K random products).
template <typename Run>
void compare(const QCase& c, int64_t ldc, float wmax, std::mt19937& rng, Run run) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> C0(static_cast<size_t>(c.M * ldc));
  for (float& x : C0) x = nd(rng);
  std::vector<float> want = C0, got = C0;
  run(want.data(), true);
  run(got.data(), false);
  float worst = 0;
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < ldc; ++n) {
      const size_t i = static_cast<size_t>(m * ldc + n);
      if (n >= c.N) {
        EXPECT_EQ(got[i], C0[i]) << "padding column written";
        continue;
      }
      const float scale = (std::sqrt(float(c.K)) + 1.0f) * std::max(wmax, 1.0f);
      worst = std::max(worst, std::fabs(got[i] - want[i]) / scale);
    }
  EXPECT_LE(worst, tol::kKernelRel) << "M=" << c.M << " N=" << c.N << " K=" << c.K;
}

TEST(KernelGemmQ8, MatchesReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const QCase& c : kCases) {
    const int64_t lda = c.K + c.pad_a, ldw = c.K + c.pad_w, ldc = c.N + c.pad_c;
    std::vector<float> A(static_cast<size_t>(c.M * lda)), bias(static_cast<size_t>(c.N)),
        row(static_cast<size_t>(c.K)), scale(static_cast<size_t>(c.N));
    std::vector<int8_t> W(static_cast<size_t>(std::max<int64_t>(c.N, 1) * ldw));
    for (float& x : A) x = nd(rng);
    for (float& b : bias) b = nd(rng);
    for (int64_t n = 0; n < c.N; ++n) {
      for (float& x : row) x = nd(rng);
      quantize_row_int8(row.data(), c.K, W.data() + n * ldw, &scale[size_t(n)]);
    }
    compare(c, ldc, 4.0f, rng, [&](float* C, bool reference) {
      const GemmQ8Args a{.M = c.M,
                         .N = c.N,
                         .K = c.K,
                         .A = A.data(),
                         .lda = lda,
                         .W = W.data(),
                         .ldw = ldw,
                         .scale = scale.data(),
                         .C = C,
                         .ldc = ldc,
                         .bias = c.bias ? bias.data() : nullptr,
                         .accumulate = c.accumulate};
      reference ? ref::gemm_q8(a) : cpu::gemm_q8(a);
    });
  }
}

// Largest products in every lane (all weights 127, every activation its row's max): without the
// periodic move to f32 a lane of the K = 16384 row would reach 4.3e9 and wrap in int32.
// Every activation at the row maximum (q = 32767 = 256 * 127 + 255: the largest high and low
// bytes of the large-M split) or its negative (-32767 = 256 * -128 + 1), weights at +-127: the
// integer sums reach their largest magnitudes, in the streaming (M = 2) and large-M (M = 40) paths.
TEST(KernelGemmQ8, LongRowsOfLargestValuesDoNotOverflow) {
  for (const int64_t M : {2, 40})
    for (const float sign : {1.0f, -1.0f}) {
      const int64_t N = 3, K = 16384;
      std::vector<float> A(static_cast<size_t>(M * K), sign), scale(N, 1.0f / 127.0f);
      std::vector<int8_t> W(static_cast<size_t>(N * K), 127);
      for (int64_t k = 0; k < K; ++k) W[size_t(2 * K + k)] = -127;  // row 2: all -127
      std::vector<float> want(static_cast<size_t>(M * N)), got = want;
      GemmQ8Args a{.M = M, .N = N, .K = K, .A = A.data(), .lda = K, .W = W.data(), .ldw = K,
                   .scale = scale.data(), .C = want.data(), .ldc = N};
      ref::gemm_q8(a);
      a.C = got.data();
      cpu::gemm_q8(a);
      for (size_t i = 0; i < got.size(); ++i) {
        const float expect = sign * float(K) * (i % size_t(N) == 2 ? -1.0f : 1.0f);
        EXPECT_NEAR(want[i], expect, 1e-3f * K);
        EXPECT_NEAR(got[i], want[i], 1e-5f * K) << "M=" << M << " sign " << sign << " i " << i;
      }
    }
}

TEST(KernelGemmQ4, MatchesReference) {
  std::mt19937 rng(8);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const QCase& c : kCases) {
    const int64_t G = q4_groups(c.K);
    const int64_t lda = c.K + c.pad_a, ldw = q4_row_bytes(c.K) + c.pad_w * kQ4GroupBytes,
                  lds = G + c.pad_w, ldc = c.N + c.pad_c;
    std::vector<float> A(static_cast<size_t>(c.M * lda)), bias(static_cast<size_t>(c.N)),
        row(static_cast<size_t>(c.K));
    std::vector<uint16_t> scale(static_cast<size_t>(std::max<int64_t>(c.N, 1) * lds));
    std::vector<uint8_t> W(static_cast<size_t>(std::max<int64_t>(c.N, 1) * ldw));
    for (float& x : A) x = nd(rng);
    for (float& b : bias) b = nd(rng);
    for (int64_t n = 0; n < c.N; ++n) {
      for (float& x : row) x = nd(rng);
      quantize_row_q4(row.data(), c.K, W.data() + n * ldw, scale.data() + n * lds);
    }
    compare(c, ldc, 4.0f, rng, [&](float* C, bool reference) {
      const GemmQ4Args a{.M = c.M,
                         .N = c.N,
                         .K = c.K,
                         .A = A.data(),
                         .lda = lda,
                         .W = W.data(),
                         .ldw = ldw,
                         .scale = scale.data(),
                         .lds = lds,
                         .C = C,
                         .ldc = ldc,
                         .bias = c.bias ? bias.data() : nullptr,
                         .accumulate = c.accumulate};
      reference ? ref::gemm_q4(a) : cpu::gemm_q4(a);
    });
  }
}

}  // namespace
}  // namespace jamba
