// jamba::cpu kernels against their jamba::ref twins, table-driven: one declarative case struct
// per kernel and a loop over the cases. Sizes are odd on purpose (tails of the BLAS blocks, of the
// 16x128 attention tiles, of the 64-channel conv blocks and of the 16-channel scan groups).
// Input padding (the gap between a row's end and its stride) is NaN, so a kernel reading outside
// its rows poisons its output; output padding is a finite sentinel and must come back unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/kernels.h"
#include "tolerances.h"

namespace jamba {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = -7777.0f;  // output padding: must be left untouched

// Platform-independent uniform floats from a fixed-seed mt19937 (std distributions are
// implementation-defined).
class Rng {
 public:
  explicit Rng(uint32_t seed) : g_(seed) {}
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * float(g_() >> 8) * (1.0f / 16777216.0f);
  }
  int64_t integer(int64_t lo, int64_t hi) { return lo + int64_t(g_() % uint32_t(hi - lo + 1)); }
  bool coin() { return g_() & 1u; }
  template <class T, size_t n>
  T pick(const T (&options)[n]) {
    return options[g_() % n];
  }
  std::vector<float> vec(int64_t n, float lo, float hi) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = uniform(lo, hi);
    return v;
  }
  // rows x cols values in [lo, hi) with row stride ld; the padding holds `pad`.
  std::vector<float> mat(int64_t rows, int64_t cols, int64_t ld, float lo, float hi,
                         float pad = kNaN) {
    std::vector<float> v(static_cast<size_t>(rows * ld), pad);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) v[size_t(r * ld + c)] = uniform(lo, hi);
    return v;
  }

 private:
  std::mt19937 g_;
};

// Elementwise comparison: |got - want| <= abs_tol + rel_tol * |want| (NaN never passes).
struct Diff {
  double max_abs = 0, max_rel = 0, worst_ratio = 0;
  int64_t bad = 0, first_bad = -1;
  float got_bad = 0, want_bad = 0;
};

Diff compare(const std::vector<float>& got, const std::vector<float>& want, float abs_tol,
             float rel_tol) {
  Diff d;
  if (got.size() != want.size()) {
    d.bad = 1;
    return d;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i], e = std::fabs(g - w);
    const double bound = abs_tol + rel_tol * std::fabs(w);
    const bool ok = e <= bound;  // false for NaN
    if (!std::isnan(e)) {
      d.max_abs = std::max(d.max_abs, e);
      if (std::fabs(w) >= 1e-3) d.max_rel = std::max(d.max_rel, e / std::fabs(w));
      d.worst_ratio = std::max(d.worst_ratio, e / bound);
    }
    if (!ok && d.bad++ == 0) {
      d.first_bad = int64_t(i);
      d.got_bad = got[i];
      d.want_bad = want[i];
    }
  }
  return d;
}

std::vector<int64_t> random_chunks(Rng& r, int64_t max_calls, int64_t max_len) {
  std::vector<int64_t> c(size_t(r.integer(1, max_calls)));
  for (int64_t& n : c) n = r.integer(1, max_len);
  return c;
}

// The hand-picked table followed by `n` random shapes drawn with a fixed seed.
template <class Case, size_t n_table, class Gen>
std::vector<Case> with_random(const Case (&table)[n_table], int n, uint32_t seed, Gen gen) {
  std::vector<Case> v(std::begin(table), std::end(table));
  Rng r(seed);
  for (int i = 0; i < n; ++i) v.push_back(gen(r));
  return v;
}

std::string describe(const Diff& d) {
  std::ostringstream s;
  s << "max abs err " << d.max_abs << ", max rel err " << d.max_rel << " (|ref| >= 1e-3), "
    << "worst err/tol " << d.worst_ratio << ", " << d.bad << " bad";
  if (d.bad) s << "; first at [" << d.first_bad << "] got " << d.got_bad << " want " << d.want_bad;
  return s.str();
}

// Accumulates the worst errors of one kernel over all its cases and prints them once.
struct ErrorLog {
  const char* kernel;
  double max_abs = 0, max_rel = 0, worst_ratio = 0;
  void check(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
             float abs_tol = tol::kKernelAbs, float rel_tol = tol::kKernelRel) {
    const Diff d = compare(got, want, abs_tol, rel_tol);
    max_abs = std::max(max_abs, d.max_abs);
    max_rel = std::max(max_rel, d.max_rel);
    worst_ratio = std::max(worst_ratio, d.worst_ratio);
    EXPECT_EQ(d.bad, 0) << kernel << " " << what << ": " << describe(d);
  }
  ~ErrorLog() {
    std::printf("[  errors  ] %s: max abs %.3g, max rel %.3g, worst err/tol %.3g\n", kernel,
                max_abs, max_rel, worst_ratio);
  }
};

// ---------------------------------------------------------------------------------------- gemm

struct GemmCase {
  int64_t M, N, K;
  int64_t pad_a, pad_w, pad_c;  // stride = row length + pad
  bool bias, accumulate;
};

// clang-format off
const GemmCase kGemmCases[] = {
    {1, 257, 131, 0, 0, 0, false, false},  // M = 1: gemv path
    {1, 300, 515, 3, 0, 0, true, false},   // gemv + bias
    {1, 64, 33, 0, 5, 0, true, true},      // gemv + bias + accumulate, strided W
    {1, 2560, 2560, 0, 0, 0, false, true},  // decode-sized gemv, accumulate
    {2, 33, 17, 0, 0, 0, false, false},
    {7, 1, 100, 1, 1, 1, true, false},  // N = 1
    {37, 129, 255, 5, 7, 3, true, true},
    {64, 64, 64, 0, 0, 0, false, false},
    {130, 97, 513, 1, 2, 3, false, true},
    {19, 211, 1031, 0, 9, 0, true, false},
    {5, 9, 0, 0, 0, 0, false, false},  // K = 0: C = 0
    {5, 9, 0, 2, 0, 4, true, false},   // K = 0: C = bias
    {5, 9, 0, 0, 0, 1, true, true},    // K = 0: C += bias
    {5, 9, 0, 0, 0, 0, false, true},   // K = 0: C unchanged
    {1, 9, 0, 0, 0, 0, true, false},   // K = 0 with M = 1
    {0, 9, 5, 0, 0, 0, true, false},   // M = 0: nothing to do
};
// clang-format on

TEST(KernelGemm, CpuMatchesRef) {
  Rng rng(101);
  ErrorLog log{"gemm"};
  const auto cases = with_random(kGemmCases, 30, 11, [](Rng& r) {
    return GemmCase{.M = r.integer(1, 40),
                    .N = r.integer(1, 300),
                    .K = r.integer(0, 600),
                    .pad_a = r.integer(0, 5),
                    .pad_w = r.integer(0, 5),
                    .pad_c = r.integer(0, 5),
                    .bias = r.coin(),
                    .accumulate = r.coin()};
  });
  for (const GemmCase& c : cases) {
    const int64_t lda = c.K + c.pad_a, ldw = c.K + c.pad_w, ldc = c.N + c.pad_c;
    const float ws = c.K > 0 ? 1.0f / std::sqrt(float(c.K)) : 1.0f;  // outputs O(1)
    const auto A = rng.mat(c.M, c.K, lda, -1, 1);
    const auto W = rng.mat(c.N, c.K, ldw, -ws, ws);
    const auto bias = rng.vec(c.N, -1, 1);
    const auto C0 = rng.mat(c.M, c.N, ldc, -1, 1, kSentinel);
    auto Cr = C0, Cc = C0;
    GemmArgs a{.M = c.M,
               .N = c.N,
               .K = c.K,
               .A = A.data(),
               .lda = lda,
               .W = W.data(),
               .ldw = ldw,
               .C = Cr.data(),
               .ldc = ldc,
               .bias = c.bias ? bias.data() : nullptr,
               .accumulate = c.accumulate};
    ref::gemm(a);
    a.C = Cc.data();
    cpu::gemm(a);
    std::ostringstream what;
    what << "M=" << c.M << " N=" << c.N << " K=" << c.K << " lda=" << lda << " ldw=" << ldw
         << " ldc=" << ldc << " bias=" << c.bias << " acc=" << c.accumulate;
    log.check(Cc, Cr, what.str());
  }
}

// ------------------------------------------------------------------------------------- rmsnorm

struct RmsNormCase {
  int64_t M, D;
  int64_t pad_x, pad_y;
  bool inplace;  // y == x (then ldy == ldx)
  float x_scale;
};

// clang-format off
const RmsNormCase kRmsNormCases[] = {
    {1, 1, 0, 0, false, 1.0f},      {3, 7, 0, 0, false, 3.0f},
    {5, 4096, 3, 5, false, 2.0f},   {17, 257, 0, 0, true, 1.0f},
    {9, 1000, 13, 13, true, 1.0f},  // in place, strided rows
    {1, 8192, 0, 0, false, 1.0f},   {40, 2001, 0, 7, false, 1.0f},  // > 32768 values: threaded
    {6, 333, 1, 2, false, 1e-3f},  // mean(x^2) ~ eps
    {4, 515, 0, 0, true, 0.0f},    // zero rows: y = 0
};
// clang-format on

TEST(KernelRmsNorm, CpuMatchesRef) {
  Rng rng(202);
  ErrorLog log{"rmsnorm"};
  const auto cases = with_random(kRmsNormCases, 30, 22, [](Rng& r) {
    const bool inplace = r.coin();
    const int64_t pad = r.integer(0, 4);
    return RmsNormCase{.M = r.integer(1, 20),
                       .D = r.integer(1, 3000),
                       .pad_x = pad,
                       .pad_y = inplace ? pad : r.integer(0, 4),
                       .inplace = inplace,
                       .x_scale = r.uniform(0.01f, 4.0f)};
  });
  for (const RmsNormCase& c : cases) {
    const int64_t ldx = c.D + c.pad_x, ldy = c.inplace ? ldx : c.D + c.pad_y;
    const auto X = rng.mat(c.M, c.D, ldx, -c.x_scale, c.x_scale, c.inplace ? kSentinel : kNaN);
    const auto w = rng.vec(c.D, 0.5f, 1.5f);
    std::ostringstream what;
    what << "M=" << c.M << " D=" << c.D << " ldx=" << ldx << " ldy=" << ldy
         << " inplace=" << c.inplace << " scale=" << c.x_scale;
    if (c.inplace) {
      auto Xr = X, Xc = X;
      ref::rmsnorm({c.M, c.D, Xr.data(), ldx, w.data(), 1e-6f, Xr.data(), ldx});
      cpu::rmsnorm({c.M, c.D, Xc.data(), ldx, w.data(), 1e-6f, Xc.data(), ldx});
      log.check(Xc, Xr, what.str());
    } else {
      std::vector<float> Yr(size_t(c.M * ldy), kSentinel), Yc = Yr;
      ref::rmsnorm({c.M, c.D, X.data(), ldx, w.data(), 1e-6f, Yr.data(), ldy});
      cpu::rmsnorm({c.M, c.D, X.data(), ldx, w.data(), 1e-6f, Yc.data(), ldy});
      log.check(Yc, Yr, what.str());
    }
  }
}

// ----------------------------------------------------------------------------------- attention

enum class Mask { kNone, kLeftPad, kRandom, kAllMasked };

struct AttentionCase {
  int64_t Lq, T, nh, nkv, hd, pos0;
  Mask mask;
  int64_t left_pad;  // kLeftPad: keys [0, left_pad) invalid
  int64_t pad_q, pad_kv;
  float q_scale;  // larger = peakier softmax
};

// clang-format off
const AttentionCase kAttentionCases[] = {
    {37, 37, 4, 4, 64, 0, Mask::kNone, 0, 0, 0, 4.0f},      // MHA (group 1)
    {50, 50, 8, 4, 3, 0, Mask::kNone, 0, 5, 3, 2.0f},       // group 2, hd 3, strided
    {33, 33, 8, 2, 128, 0, Mask::kNone, 0, 0, 0, 4.0f},     // group 4, hd 128
    {17, 17, 8, 1, 4, 0, Mask::kNone, 0, 1, 1, 3.0f},       // MQA (group 8)
    {1, 1, 2, 1, 1, 0, Mask::kNone, 0, 0, 0, 1.0f},         // hd 1, one key
    {1, 300, 8, 2, 64, 299, Mask::kNone, 0, 0, 0, 4.0f},    // decode
    {1, 1000, 8, 1, 128, 999, Mask::kNone, 0, 0, 0, 8.0f},  // decode, MQA, hd 128
    {1, 257, 4, 4, 64, 100, Mask::kNone, 0, 0, 0, 4.0f},    // decode mid-cache (keys > pos0 unused)
    {20, 150, 4, 2, 64, 130, Mask::kNone, 0, 0, 0, 4.0f},   // chunk continuation across a key tile
    {19, 300, 8, 8, 16, 200, Mask::kNone, 0, 2, 7, 4.0f},   // chunk, cache longer than pos0 + Lq
    {130, 130, 4, 2, 64, 0, Mask::kNone, 0, 0, 0, 6.0f},    // query tiles with tail
    {40, 40, 4, 2, 32, 0, Mask::kLeftPad, 7, 0, 0, 4.0f},   // prefill, 7 fully masked query rows
    {1, 200, 4, 1, 64, 199, Mask::kLeftPad, 50, 0, 0, 4.0f},  // decode with left padding
    {23, 160, 8, 2, 64, 137, Mask::kLeftPad, 140, 3, 0, 4.0f},  // chunk, rows 0..2 fully masked
    {16, 16, 4, 2, 8, 0, Mask::kAllMasked, 0, 0, 0, 1.0f},  // every row: uniform average
    {70, 270, 8, 4, 64, 200, Mask::kRandom, 0, 0, 5, 4.0f},  // holes in the mask
    {33, 33, 2, 2, 128, 0, Mask::kRandom, 0, 0, 0, 16.0f},  // very peaky
    // decode split over key chunks of 256 (Lq <= 4, T >= 256)
    {1, 2000, 4, 1, 64, 1999, Mask::kLeftPad, 300, 0, 0, 6.0f},  // chunks 0, 1 fully padded
    {3, 700, 8, 2, 32, 697, Mask::kRandom, 0, 2, 1, 4.0f},       // 3 queries, holes
    {1, 600, 2, 1, 8, 599, Mask::kAllMasked, 0, 0, 0, 1.0f},     // uniform average
    {4, 513, 6, 3, 17, 200, Mask::kNone, 0, 0, 0, 4.0f},         // keys past pos0 unused
    // bf16_dot decode with R = Lq x group <= 8 rows streams K/V (hd 16/32/64/128 vectorised,
    // others scalar); R = 9 goes back to oneDNN. Tails of the 64-key blocks and 1024-key chunks.
    {1, 1100, 16, 4, 64, 1099, Mask::kNone, 0, 1, 2, 4.0f},      // moe1b shape, R 4
    {1, 2085, 8, 1, 128, 2084, Mask::kRandom, 0, 0, 3, 4.0f},    // R 8 (the bound), hd 128
    {2, 1500, 8, 2, 16, 1498, Mask::kLeftPad, 1030, 0, 0, 4.0f},  // 2 queries, chunk 0 padded
    {4, 300, 4, 2, 32, 296, Mask::kNone, 0, 2, 0, 8.0f},         // 4 queries x group 2
    {3, 1025, 6, 3, 48, 1022, Mask::kNone, 0, 0, 1, 4.0f},       // hd 48: scalar stream
    {1, 777, 9, 1, 32, 776, Mask::kLeftPad, 300, 2, 0, 4.0f},    // R 9: oneDNN
};
// clang-format on

// bf16_cache: K and V held as bf16 (k16 / v16); both kernels widen them as they read, and the
// reference on the widened f32 values must give the same bits as the reference on the bf16 ones.
// bf16_dot: a bf16 model's attention (queries and, in the fast kernel, softmax weights rounded
// to bf16; oneDNN bf16 matmuls): within kAttentionBf16Dot of the reference.
void attention_cpu_vs_ref(bool bf16_cache, bool bf16_dot = false) {
  Rng rng(303);
  ErrorLog log{bf16_dot ? "attention, bf16 dot products" : bf16_cache ? "attention, bf16 K/V" : "attention"};
  const auto cases = with_random(kAttentionCases, 40, 33, [](Rng& r) {
    const int64_t nkv = r.integer(1, 3), group = r.pick({1, 2, 4, 8});
    const int64_t Lq = r.coin() ? 1 : r.integer(2, 40), pos0 = r.coin() ? 0 : r.integer(1, 300);
    const int64_t T = pos0 + Lq + (r.coin() ? 0 : r.integer(1, 20));
    const Mask mask = r.pick({Mask::kNone, Mask::kLeftPad, Mask::kRandom, Mask::kAllMasked});
    return AttentionCase{.Lq = Lq,
                         .T = T,
                         .nh = nkv * group,
                         .nkv = nkv,
                         .hd = r.pick({1, 3, 4, 8, 17, 64, 128}),
                         .pos0 = pos0,
                         .mask = mask,
                         .left_pad = r.integer(0, T),
                         .pad_q = r.integer(0, 3),
                         .pad_kv = r.integer(0, 3),
                         .q_scale = r.uniform(0.5f, 8.0f)};
  });
  for (const AttentionCase& c : cases) {
    const int64_t ldq = c.nh * c.hd + c.pad_q, stride = c.T * c.hd + c.pad_kv;
    const auto q = rng.mat(c.Lq, c.nh * c.hd, ldq, -c.q_scale, c.q_scale);
    // Per kv head a [T, hd] block; the gap between blocks is NaN.
    const auto k = rng.mat(c.nkv, c.T * c.hd, stride, -1, 1);
    const auto v = rng.mat(c.nkv, c.T * c.hd, stride, -1, 1);
    std::vector<uint8_t> valid(size_t(c.T), 1);
    for (int64_t j = 0; j < c.T; ++j) {
      if (c.mask == Mask::kLeftPad) valid[size_t(j)] = j >= c.left_pad;
      if (c.mask == Mask::kRandom) valid[size_t(j)] = rng.uniform(0, 1) < 0.7f;
      if (c.mask == Mask::kAllMasked) valid[size_t(j)] = 0;
    }
    std::vector<float> Or(size_t(c.Lq * ldq), kSentinel), Oc = Or;
    AttentionArgs a{.Lq = c.Lq,
                    .T = c.T,
                    .nh = c.nh,
                    .nkv = c.nkv,
                    .hd = c.hd,
                    .pos0 = c.pos0,
                    .q = q.data(),
                    .ldq = ldq,
                    .k = k.data(),
                    .v = v.data(),
                    .kv_head_stride = stride,
                    .key_valid = c.mask == Mask::kNone ? nullptr : valid.data(),
                    .scale = 1.0f / std::sqrt(float(c.hd)),
                    .out = Or.data(),
                    .ldo = ldq};
    std::vector<uint16_t> k16(k.size()), v16(v.size());
    std::vector<float> kw(k.size()), vw(v.size());  // the bf16 values widened
    if (bf16_cache) {
      for (size_t i = 0; i < k.size(); ++i) {
        k16[i] = f32_to_bf16(k[i]), v16[i] = f32_to_bf16(v[i]);
        kw[i] = bf16_to_f32(k16[i]), vw[i] = bf16_to_f32(v16[i]);
      }
      a.k = a.v = nullptr;
      a.k16 = k16.data(), a.v16 = v16.data();
      a.bf16_dot = bf16_dot;
    }
    ref::attention(a);
    if (bf16_cache && !bf16_dot) {
      std::vector<float> Ow = Or;
      AttentionArgs w = a;
      w.k = kw.data(), w.v = vw.data(), w.k16 = w.v16 = nullptr, w.out = Ow.data();
      ref::attention(w);
      ASSERT_EQ(0, std::memcmp(Ow.data(), Or.data(), Or.size() * sizeof(float)))
          << "ref attention on bf16 K/V differs from ref on the same values in f32";
    }
    a.out = Oc.data();
    cpu::attention(a);
    std::ostringstream what;
    what << "Lq=" << c.Lq << " T=" << c.T << " nh=" << c.nh << " nkv=" << c.nkv << " hd=" << c.hd
         << " pos0=" << c.pos0 << " mask=" << int(c.mask) << " left_pad=" << c.left_pad;
    if (bf16_dot)
      log.check(Oc, Or, what.str(), tol::kAttentionBf16Dot, tol::kAttentionBf16Dot);
    else
      log.check(Oc, Or, what.str());
  }
}

TEST(KernelAttention, CpuMatchesRef) { attention_cpu_vs_ref(false); }
TEST(KernelAttention, CpuMatchesRefWithBf16Cache) { attention_cpu_vs_ref(true); }
TEST(KernelAttention, CpuMatchesRefWithBf16DotProducts) { attention_cpu_vs_ref(true, true); }

// ------------------------------------------------------------------------------------- conv1d

struct ConvCase {
  int64_t Din, K;
  std::vector<int64_t> chunks;  // cpu runs these chunk lengths in turn; ref runs their sum at once
  int64_t pad_x, pad_o;
  bool bias, fresh;  // fresh: zero initial state
};

// clang-format off
const ConvCase kConvCases[] = {
    {64, 4, {1}, 0, 0, true, true},                 // L = 1, fresh
    {100, 4, {2}, 0, 0, true, false},               // L < K
    {130, 4, {3, 1, 1, 7, 50}, 3, 5, true, false},  // continuation, L < K chunks and L = 1 steps
    {65, 1, {5, 1}, 0, 0, true, false},             // K = 1
    {7, 2, {1, 1, 3}, 1, 0, false, false},          // K = 2, fewer channels than a block
    {200, 3, {9, 2}, 0, 2, true, true},             // K = 3
    {129, 7, {3, 10, 1, 6}, 2, 0, true, false},     // K = 7
    {1000, 4, {40, 1}, 8, 8, true, false},          // L * Din > 16384: threaded
    {70, 20, {5, 30}, 0, 0, true, false},           // K > 16: heap window path
    {1, 4, {1, 2, 3, 4}, 0, 0, false, false},       // one channel
};
// clang-format on

TEST(KernelConv1dSilu, CpuMatchesRef) {
  Rng rng(404);
  ErrorLog log{"conv1d_silu"};
  const auto cases = with_random(kConvCases, 30, 44, [](Rng& r) {
    return ConvCase{.Din = r.integer(1, 300),
                    .K = r.pick({1, 2, 3, 4, 7}),
                    .chunks = random_chunks(r, 4, 12),
                    .pad_x = r.integer(0, 3),
                    .pad_o = r.integer(0, 3),
                    .bias = r.coin(),
                    .fresh = r.coin()};
  });
  for (const ConvCase& c : cases) {
    int64_t L = 0;
    for (int64_t n : c.chunks) L += n;
    const int64_t ldx = c.Din + c.pad_x, ldo = c.Din + c.pad_o;
    const auto x = rng.mat(L, c.Din, ldx, -2, 2);
    const auto w = rng.vec(c.Din * c.K, -0.5f, 0.5f);
    const auto bias = rng.vec(c.Din, -0.2f, 0.2f);
    const auto S0 =
        c.fresh ? std::vector<float>(size_t(c.Din * c.K), 0.0f) : rng.vec(c.Din * c.K, -2, 2);
    auto Sr = S0, Sc = S0;
    std::vector<float> Or(size_t(L * ldo), kSentinel), Oc = Or;
    const float* b = c.bias ? bias.data() : nullptr;
    ref::conv1d_silu({L, c.Din, c.K, x.data(), ldx, Sr.data(), w.data(), b, Or.data(), ldo});
    int64_t t0 = 0;
    for (int64_t n : c.chunks) {
      cpu::conv1d_silu({n, c.Din, c.K, x.data() + t0 * ldx, ldx, Sc.data(), w.data(), b,
                        Oc.data() + t0 * ldo, ldo});
      t0 += n;
    }
    std::ostringstream what;
    what << "Din=" << c.Din << " K=" << c.K << " L=" << L << " chunks=" << c.chunks.size()
         << " fresh=" << c.fresh;
    log.check(Oc, Or, what.str() + " (out)");
    log.check(Sc, Sr, what.str() + " (state)", 0.0f, 0.0f);  // state is a copy of inputs: exact
  }
}

// ------------------------------------------------------------------------------ selective_scan

struct ScanCase {
  int64_t Din, N;
  int64_t d0, d1;
  std::vector<int64_t> chunks;  // cpu runs these chunk lengths in turn; ref runs their sum at once
  int64_t split;                // > 0: cpu does [d0, d0+split) and [d0+split, d1) separately
  int64_t pad;                  // extra stride on every [L, *] input and the output
  bool fresh;                   // zero initial state
};

// clang-format off
const ScanCase kScanCases[] = {
    {37, 1, 0, 37, {1}, 0, 0, true},                 // N = 1, L = 1
    {50, 5, 3, 45, {7, 1, 20}, 0, 3, false},          // N = 5, continuation
    {300, 16, 17, 290, {64}, 0, 0, false},            // N = 16, odd channel range
    {33, 17, 0, 33, {5, 1}, 0, 1, true},              // N = 17
    {40, 64, 8, 39, {30}, 13, 0, false},              // N = 64 (largest stack path), split
    {40, 65, 1, 33, {25, 1}, 0, 2, false},            // N = 65: heap path
    {20, 130, 0, 20, {50}, 0, 0, true},               // N = 130
    {48, 16, 5, 43, {1000, 1, 1999}, 21, 4, false},   // long L = 3000 in three calls
    {64, 16, 0, 64, {3000}, 0, 0, true},              // long L in one call
    {100, 16, 0, 100, {1, 1, 1, 1}, 37, 0, false},    // decode steps
};
// clang-format on

TEST(KernelSelectiveScan, CpuMatchesRef) {
  Rng rng(505);
  ErrorLog log{"selective_scan"};
  const auto cases = with_random(kScanCases, 30, 55, [](Rng& r) {
    const int64_t Din = r.integer(1, 100), d0 = r.integer(0, Din - 1), d1 = r.integer(d0 + 1, Din);
    return ScanCase{.Din = Din,
                    .N = r.pick({1, 5, 16, 17, 64, 65}),
                    .d0 = d0,
                    .d1 = d1,
                    .chunks = random_chunks(r, 3, 40),
                    .split = r.coin() ? 0 : r.integer(0, d1 - d0),
                    .pad = r.integer(0, 3),
                    .fresh = r.coin()};
  });
  for (const ScanCase& c : cases) {
    int64_t L = 0;
    for (int64_t n : c.chunks) L += n;
    const int64_t Din = c.Din, N = c.N, R = 7;  // R: the dt_rank columns before B, C
    // x and z are the two halves of one in_proj output row; B and C slices of x_proj's.
    const int64_t ldxz = 2 * Din + c.pad, lddt = Din + c.pad + 1, ldbc = R + 2 * N + c.pad;
    const int64_t ldy = Din + c.pad;
    std::vector<float> xz(size_t(L * ldxz), kNaN), dt(size_t(L * lddt), kNaN);
    auto bc = rng.mat(L, 2 * N + R, ldbc, -1, 1);
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t d = 0; d < Din; ++d) {
        xz[size_t(t * ldxz + d)] = rng.uniform(-2, 2);
        xz[size_t(t * ldxz + Din + d)] = rng.uniform(-3, 3);
        dt[size_t(t * lddt + d)] = softplus_scalar(rng.uniform(-6.9f, -1.5f));  // (1e-3, 0.2)
      }
      for (int64_t r = 0; r < R; ++r) bc[size_t(t * ldbc + r)] = kNaN;  // not read
    }
    std::vector<float> A(size_t(Din * N));
    for (int64_t d = 0; d < Din; ++d)
      for (int64_t n = 0; n < N; ++n)
        A[size_t(d * N + n)] = -std::exp(std::log(float(n + 1)) + rng.uniform(-0.1f, 0.1f));
    const auto D = rng.vec(Din, 0.5f, 1.5f);
    const auto H0 = c.fresh ? std::vector<float>(size_t(Din * N), 0.0f) : rng.vec(Din * N, -1, 1);
    auto Hr = H0, Hc = H0;
    std::vector<float> Yr(size_t(L * ldy), kSentinel), Yc = Yr;
    auto args = [&](int64_t t0, int64_t n, int64_t d0, int64_t d1, float* h, float* y) {
      return ScanArgs{.L = n,
                      .Din = Din,
                      .N = N,
                      .d0 = d0,
                      .d1 = d1,
                      .x = xz.data() + t0 * ldxz,
                      .ldx = ldxz,
                      .dt = dt.data() + t0 * lddt,
                      .lddt = lddt,
                      .Bm = bc.data() + t0 * ldbc + R,
                      .ldb = ldbc,
                      .Cm = bc.data() + t0 * ldbc + R + N,
                      .ldc = ldbc,
                      .z = xz.data() + t0 * ldxz + Din,
                      .ldz = ldxz,
                      .A = A.data(),
                      .D = D.data(),
                      .h = h,
                      .y = y + t0 * ldy,
                      .ldy = ldy};
    };
    ref::selective_scan(args(0, L, c.d0, c.d1, Hr.data(), Yr.data()));
    int64_t t0 = 0;
    for (int64_t n : c.chunks) {
      if (c.split > 0) {
        cpu::selective_scan(args(t0, n, c.d0, c.d0 + c.split, Hc.data(), Yc.data()));
        cpu::selective_scan(args(t0, n, c.d0 + c.split, c.d1, Hc.data(), Yc.data()));
      } else {
        cpu::selective_scan(args(t0, n, c.d0, c.d1, Hc.data(), Yc.data()));
      }
      t0 += n;
    }
    std::ostringstream what;
    what << "Din=" << Din << " N=" << N << " d=[" << c.d0 << "," << c.d1 << ") L=" << L
         << " calls=" << c.chunks.size() << " split=" << c.split << " fresh=" << c.fresh;
    log.check(Yc, Yr, what.str() + " (y)");
    log.check(Hc, Hr, what.str() + " (h)");
  }
}

// -------------------------------------------------------------------------------- elementwise

// Values the elementwise kernels must get right besides random ones: 0, the softplus threshold
// (20), the float exp overflow region (88.4 .. 88.8) and beyond (+-90), tiny magnitudes.
std::vector<float> special_values() {
  std::vector<float> v = {0.0f,   -0.0f,  1e-3f,   -1e-3f, 1e-7f,   -1e-7f, 1.0f,
                          -1.0f,  19.99f, 20.0f,   20.01f, -19.99f, -20.0f, -20.01f,
                          30.0f,  -30.0f, 87.0f,   -87.0f, 87.5f,   -87.5f, 88.5f,
                          -88.5f, 88.75f, -88.75f, 90.0f,  -90.0f,  100.0f, -100.0f};
  for (float x = -21.0f; x <= 21.0f; x += 0.125f) v.push_back(x);
  return v;
}

struct ElementwiseCase {
  int64_t n;  // specials first, then random values in (-lo_hi, lo_hi)
  float lo_hi;
};

// clang-format off
const ElementwiseCase kElementwiseCases[] = {
    {1, 1.0f}, {7, 1.0f}, {1001, 30.0f}, {70001, 25.0f},  // > 65536: threaded
};
// clang-format on

TEST(KernelSiluMul, CpuMatchesRef) {
  Rng rng(606);
  ErrorLog log{"silu_mul"};
  const auto specials = special_values();
  for (const ElementwiseCase& c : kElementwiseCases) {
    auto gate = rng.vec(c.n, -c.lo_hi, c.lo_hi);
    for (size_t i = 0; i < specials.size() && i < gate.size(); ++i) gate[i] = specials[i];
    const auto up = rng.vec(c.n, -2, 2);
    std::vector<float> r(size_t(c.n) + 3, kSentinel), o = r;
    ref::silu_mul(gate.data(), up.data(), r.data(), c.n);
    cpu::silu_mul(gate.data(), up.data(), o.data(), c.n);
    log.check(o, r, "n=" + std::to_string(c.n));
  }
}

TEST(KernelSoftplus, CpuMatchesRef) {
  Rng rng(707);
  ErrorLog log{"softplus"};
  const auto specials = special_values();
  for (const ElementwiseCase& c : kElementwiseCases) {
    auto x = rng.vec(c.n, -c.lo_hi, c.lo_hi);
    for (size_t i = 0; i < specials.size() && i < x.size(); ++i) x[i] = specials[i];
    x.resize(x.size() + 3, kSentinel);
    auto r = x, o = x;
    ref::softplus(r.data(), c.n);
    cpu::softplus(o.data(), c.n);
    log.check(o, r, "n=" + std::to_string(c.n));
  }
  // softplus itself (torch semantics): x above 20 passes through, log1p(exp(x)) below.
  EXPECT_EQ(softplus_scalar(20.5f), 20.5f);
  EXPECT_GE(softplus_scalar(-90.0f), 0.0f);
  EXPECT_LT(softplus_scalar(-90.0f), 1e-38f);
  EXPECT_NEAR(softplus_scalar(0.0f), std::log(2.0f), 1e-7f);
  EXPECT_NEAR(softplus_scalar(20.0f), 20.0f, 1e-5f);
}

// exp_fast against exp in double: accurate over its range, clamped (finite, no denormals) outside.
TEST(KernelExpFast, MatchesStdExp) {
  constexpr float kLo = -87.3f, kHi = 88.37f;  // vec_math.h clamp points
  double max_rel = 0;
  float worst_x = 0;
  int64_t bad_out = 0;
  float bad_out_x = 0;
  auto out_of_range_ok = [&](float x, float e) {
    if (x < kLo) return e > 0 && e <= float(std::exp(double(kLo))) * (1 + tol::kExpFastRel);
    return std::isfinite(e) && e >= float(std::exp(double(kHi))) * (1 - tol::kExpFastRel);
  };
  auto one = [&](float x) {
    const float e = cpu::exp_fast(x);
    if (x >= kLo && x <= kHi) {
      const double want = std::exp(double(x));
      const double rel = std::fabs(double(e) - want) / want;
      if (!(rel <= max_rel)) {
        max_rel = std::isnan(rel) ? INFINITY : rel;
        worst_x = x;
      }
    } else if (!out_of_range_ok(x, e) && bad_out++ == 0) {
      bad_out_x = x;
    }
  };
  constexpr int64_t kSteps = 1900000;
  for (int64_t i = 0; i <= kSteps; ++i) one(-100.0f + 190.0f * float(i) / float(kSteps));
  for (float x : {kLo, kHi, 0.0f, -0.0f, 1e-30f, -1e-30f, 88.5f, 88.7f, 88.72f, 88.75f, 89.0f,
                  -87.5f, -88.0f, -103.0f, 0.5f * 0.693147f, -0.5f * 0.693147f})
    one(x);
  std::printf("[  errors  ] exp_fast: max rel %.3g at x=%g\n", max_rel, worst_x);
  EXPECT_LE(max_rel, tol::kExpFastRel) << "worst at x=" << worst_x << ": exp_fast "
                                       << cpu::exp_fast(worst_x) << " vs " << std::exp(worst_x);
  EXPECT_EQ(bad_out, 0) << "clamped region: first bad x=" << bad_out_x << " exp_fast "
                        << cpu::exp_fast(bad_out_x);
}

// ------------------------------------------------------------------ reference hand-checked values

// The reference is the truth for everything above, so pin its semantics on cases worked by hand.
TEST(KernelRefSemantics, HandWorkedValues) {
  {  // gemm: [1 2; 3 4] @ [5 6; 7 8]^T + [1, -1]
    const float A[] = {1, 2, 3, 4}, W[] = {5, 6, 7, 8}, b[] = {1, -1};
    float C[4];
    ref::gemm({2, 2, 2, A, 2, W, 2, C, 2, b, false});
    EXPECT_EQ(std::vector<float>(C, C + 4), (std::vector<float>{18, 22, 40, 52}));
  }
  {  // rmsnorm of (3, 4) with eps 0: rms = sqrt(12.5)
    const float x[] = {3, 4}, w[] = {1, 2};
    float y[2];
    ref::rmsnorm({1, 2, x, 2, w, 0.0f, y, 2});
    EXPECT_NEAR(y[0], 3 / std::sqrt(12.5f), 1e-6f);
    EXPECT_NEAR(y[1], 8 / std::sqrt(12.5f), 1e-6f);
  }
  {  // attention, hd 1, values 1, 2, 6: all masked -> uniform mean 3; one valid key -> its value;
     // causal: query at position 0 sees only key 0.
    const float q[] = {1, 1}, k[] = {0.5f, -1, 2}, v[] = {1, 2, 6};
    const uint8_t none[] = {0, 0, 0}, only1[] = {0, 1, 0};
    float o[2];
    ref::attention({1, 3, 1, 1, 1, 2, q, 1, k, v, 3, none, 1.0f, o, 1});
    EXPECT_NEAR(o[0], 3.0f, 1e-6f);
    ref::attention({1, 3, 1, 1, 1, 2, q, 1, k, v, 3, only1, 1.0f, o, 1});
    EXPECT_EQ(o[0], 2.0f);
    ref::attention({2, 3, 1, 1, 1, 0, q, 1, k, v, 3, nullptr, 1.0f, o, 1});
    EXPECT_EQ(o[0], 1.0f);
    const double e0 = std::exp(0.5), e1 = std::exp(-1.0);  // query 1 sees keys 0, 1
    EXPECT_NEAR(o[1], (e0 * 1 + e1 * 2) / (e0 + e1), 1e-6);
  }
  {  // conv K=3, one channel, state (1, 2, 3), taps (0.5, 0, 1), no bias: out_t = silu(x_t +
     // 0.5 x_{t-2}); new state = last 3 inputs.
    float st[] = {1, 2, 3}, out[2];
    const float x[] = {10, 20}, w[] = {0.5f, 0, 1};
    ref::conv1d_silu({2, 1, 3, x, 1, st, w, nullptr, out, 1});
    EXPECT_NEAR(out[0], silu_scalar(10 + 0.5f * 2), 1e-5f);
    EXPECT_NEAR(out[1], silu_scalar(20 + 0.5f * 3), 1e-5f);
    EXPECT_EQ(std::vector<float>(st, st + 3), (std::vector<float>{3, 10, 20}));
  }
  {  // scan N=1, A=-1, dt=ln 2 (decay 1/2), B=C=1, x=2, D=0.5, h0=4, z large (silu(z) ~ z):
     // h1 = 2 + ln2*2, y1 = (h1 + 1) * silu(z).
    const float x = 2, dt = std::log(2.0f), B = 1, Cc = 1, z = 30, A = -1, D = 0.5f;
    float h = 4, y = 0;
    ref::selective_scan({1, 1, 1, 0, 1, &x, 1, &dt, 1, &B, 1, &Cc, 1, &z, 1, &A, &D, &h, &y, 1});
    const float h1 = 2 + std::log(2.0f) * 2;
    EXPECT_NEAR(h, h1, 1e-6f);
    EXPECT_NEAR(y, (h1 + 1) * silu_scalar(30), 1e-5f);
  }
}

}  // namespace
}  // namespace jamba
