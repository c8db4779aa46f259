// bf16-weight GEMM: fast kernel against the plain reference over odd sizes and tails.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/kernels.h"
#include "tolerances.h"

namespace jamba {
namespace {

struct Bf16Case {
  int64_t M, N, K;
  int64_t pad_a, pad_w, pad_c;  // extra row stride
  bool bias, accumulate;
};

// Worst |got - want| of the M x N results, relative to the sum of |terms| (sqrt(K) scale for
// random data); the padding columns past N must keep their values (C0).
float worst_scaled_error(const Bf16Case& c, int64_t ldc, const std::vector<float>& C0,
                         const std::vector<float>& want, const std::vector<float>& got) {
  float worst = 0;
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < ldc; ++n) {
      const size_t i = static_cast<size_t>(m * ldc + n);
      if (n >= c.N) {
        EXPECT_EQ(got[i], C0[i]) << "padding column written";
        continue;
      }
      worst = std::max(worst, std::fabs(got[i] - want[i]) / (std::sqrt(float(c.K)) + 1.0f));
    }
  return worst;
}

void check_gemm_bf16(bool bf16_activations) {
  const Bf16Case cases[] = {
      {1, 1, 1, 0, 0, 0, false, false},   {1, 37, 15, 0, 0, 0, true, false},
      {1, 64, 16, 0, 0, 0, false, false}, {2, 129, 33, 3, 1, 5, true, true},
      {3, 7, 200, 0, 0, 0, false, true},  {5, 300, 47, 1, 2, 3, true, false},
      {8, 130, 64, 0, 0, 0, false, false}, {9, 129, 31, 0, 0, 0, true, false},
      {17, 257, 65, 2, 3, 1, true, true}, {64, 200, 128, 0, 0, 0, false, false},
      {33, 1, 5, 0, 0, 0, true, false},   {4, 0, 8, 0, 0, 0, false, false},
      // one row over threads (streams of rows per thread): full streams plus a tail, fewer rows
      // per thread than streams, exactly one pass
      {1, 1031, 97, 2, 3, 1, true, true}, {1, 5, 20011, 0, 0, 0, true, false},
      {1, 9, 8000, 0, 1, 0, false, true}, {1, 16, 4200, 0, 0, 0, false, false},
      // prefill shapes (oneDNN with bf16 activations), odd tails in every dimension
      {100, 67, 257, 3, 5, 7, true, true}, {513, 130, 96, 0, 0, 0, false, false},
      {40, 33, 1000, 0, 0, 2, true, false}, {37, 64, 31, 1, 0, 0, false, true},
      // decode batches: several k blocks with a tail, more weight rows than one chunk per thread
      {8, 500, 1100, 1, 3, 2, true, true}, {6, 401, 1537, 0, 0, 0, false, true},
      {4, 263, 777, 2, 0, 1, true, false}, {3, 390, 513, 0, 1, 0, false, false},
  };
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Bf16Case& c : cases) {
    const int64_t lda = c.K + c.pad_a, ldw = c.K + c.pad_w, ldc = c.N + c.pad_c;
    std::vector<float> A(static_cast<size_t>(c.M * lda)), bias(static_cast<size_t>(c.N));
    std::vector<uint16_t> W(static_cast<size_t>(std::max<int64_t>(c.N, 1) * ldw));
    for (float& x : A) x = nd(rng);
    for (uint16_t& w : W) w = f32_to_bf16(nd(rng));
    for (float& b : bias) b = nd(rng);
    std::vector<float> C0(static_cast<size_t>(c.M * ldc));
    for (float& x : C0) x = nd(rng);
    std::vector<float> want = C0, got = C0;
    GemmBf16Args a{.M = c.M, .N = c.N, .K = c.K, .A = A.data(), .lda = lda, .W = W.data(),
                   .ldw = ldw, .C = want.data(), .ldc = ldc,
                   .bias = c.bias ? bias.data() : nullptr, .accumulate = c.accumulate,
                   .bf16_activations = bf16_activations};
    ref::gemm_bf16(a);
    a.C = got.data();
    cpu::gemm_bf16(a);
    const float worst = worst_scaled_error(c, ldc, C0, want, got);
    EXPECT_LE(worst, tol::kKernelRel) << "M=" << c.M << " N=" << c.N << " K=" << c.K
                                      << " bf16_activations=" << bf16_activations;
  }
}

TEST(KernelGemmBf16, MatchesReference) { check_gemm_bf16(false); }

// W used untransposed ([K, N], training's dX = dY W): oneDNN (or widened row blocks) against
// the plain loops, odd sizes and strides, accumulate, more than one 256-row block of W.
TEST(KernelGemmBf16, KnLayoutMatchesReference) {
  const Bf16Case cases[] = {
      {1, 1, 1, 0, 0, 0, false, false},    {1, 37, 15, 0, 0, 0, false, true},
      {3, 7, 200, 1, 2, 3, false, false},  {17, 257, 65, 2, 3, 1, false, true},
      {100, 67, 257, 3, 5, 7, false, true}, {513, 130, 96, 0, 0, 0, false, false},
      {64, 300, 600, 0, 1, 0, false, false}, {5, 0, 8, 0, 0, 0, false, false},
      {9, 33, 0, 0, 0, 0, false, false},
  };
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Bf16Case& c : cases) {
    const int64_t lda = c.K + c.pad_a, ldw = c.N + c.pad_w, ldc = c.N + c.pad_c;
    std::vector<float> A(static_cast<size_t>(c.M * lda));
    std::vector<uint16_t> W(static_cast<size_t>(std::max<int64_t>(c.K, 1) * ldw));
    for (float& x : A) x = nd(rng);
    for (uint16_t& w : W) w = f32_to_bf16(nd(rng));
    std::vector<float> C0(static_cast<size_t>(c.M * ldc));
    for (float& x : C0) x = nd(rng);
    std::vector<float> want = C0, got = C0;
    GemmBf16KnArgs a{.M = c.M, .N = c.N, .K = c.K, .A = A.data(), .lda = lda, .W = W.data(),
                     .ldw = ldw, .C = want.data(), .ldc = ldc, .accumulate = c.accumulate};
    ref::gemm_bf16_kn(a);
    a.C = got.data();
    cpu::gemm_bf16_kn(a);
    const float worst = worst_scaled_error(c, ldc, C0, want, got);
    EXPECT_LE(worst, tol::kKernelRel) << "M=" << c.M << " N=" << c.N << " K=" << c.K;
  }
}

// Rounded activations: the reference rounds each A element to bf16 too, so fast and plain
// kernels compute the same products (exact in f32) and differ only in summation order.
// Both large-M routes (oneDNN's bf16 matmul, f32 panels + sgemm), whichever this machine picks.
TEST(KernelGemmBf16, Bf16ActivationsMatchReference) {
  for (const cpu::Bf16Route r : {cpu::Bf16Route::kOneDnn, cpu::Bf16Route::kF32Panels}) {
    SCOPED_TRACE(r == cpu::Bf16Route::kOneDnn ? "oneDNN" : "f32 panels");
    cpu::set_bf16_route(r);
    check_gemm_bf16(true);
  }
  cpu::set_bf16_route(cpu::Bf16Route::kAuto);
}

// kAuto measures both routes once and keeps one of them, with its measured rates.
TEST(KernelGemmBf16, Bf16RouteIsMeasuredOnce) {
  cpu::set_bf16_route(cpu::Bf16Route::kAuto);
  const cpu::Bf16RouteChoice c = cpu::bf16_route(), again = cpu::bf16_route();
  EXPECT_NE(c.route, cpu::Bf16Route::kAuto);
  EXPECT_EQ(c.route, again.route);
  EXPECT_EQ(c.onednn_gflops, again.onednn_gflops);
  if (cpu::have_dnnl()) {
    EXPECT_GT(c.onednn_gflops, 0.0);
    EXPECT_GT(c.panels_gflops, 0.0);
    EXPECT_EQ(c.route, c.onednn_gflops * 1.1 < c.panels_gflops ? cpu::Bf16Route::kF32Panels
                                                                : cpu::Bf16Route::kOneDnn);
  } else {
    EXPECT_EQ(c.route, cpu::Bf16Route::kF32Panels);
  }
}

// The rounding is real: with bf16 activations the result differs from the f32-activation one by
// about the bf16 step (2^-9 relative per element), far above summation noise.
TEST(KernelGemmBf16, Bf16ActivationsRoundTheInputs) {
  const int64_t M = 64, N = 32, K = 256;
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> A(static_cast<size_t>(M * K)), C32(static_cast<size_t>(M * N)), C16 = C32;
  std::vector<uint16_t> W(static_cast<size_t>(N * K));
  for (float& x : A) x = nd(rng);
  for (uint16_t& w : W) w = f32_to_bf16(nd(rng));
  GemmBf16Args a{.M = M, .N = N, .K = K, .A = A.data(), .lda = K, .W = W.data(), .ldw = K,
                 .C = C32.data(), .ldc = N};
  cpu::gemm_bf16(a);
  a.C = C16.data();
  a.bf16_activations = true;
  cpu::gemm_bf16(a);
  float worst = 0;
  for (size_t i = 0; i < C32.size(); ++i) worst = std::max(worst, std::fabs(C32[i] - C16[i]));
  EXPECT_GT(worst / std::sqrt(float(K)), 10 * tol::kKernelRel);
}

// float32 activations, up to 32 rows (batched decode): every row's result is bitwise the one it
// gets alone, whatever the other rows, so a server's answers do not depend on the batch.
TEST(KernelGemmBf16, F32RowsAreBatchInvariant) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int64_t K : {1, 15, 16, 300, 1037}) {
    const int64_t N = 37, Mmax = 32;
    std::vector<float> A(static_cast<size_t>(Mmax * K));
    std::vector<uint16_t> W(static_cast<size_t>(N * K));
    for (float& x : A) x = nd(rng);
    for (uint16_t& w : W) w = f32_to_bf16(nd(rng));
    std::vector<float> alone(static_cast<size_t>(Mmax * N));
    for (int64_t m = 0; m < Mmax; ++m) {
      GemmBf16Args a{.M = 1, .N = N, .K = K, .A = A.data() + m * K, .lda = K, .W = W.data(),
                     .ldw = K, .C = alone.data() + m * N, .ldc = N};
      cpu::gemm_bf16(a);
    }
    for (const int64_t M : {2, 7, 8, 9, 16, 17, 31, 32}) {
      std::vector<float> C(static_cast<size_t>(M * N));
      GemmBf16Args a{.M = M, .N = N, .K = K, .A = A.data(), .lda = K, .W = W.data(), .ldw = K,
                     .C = C.data(), .ldc = N};
      cpu::gemm_bf16(a);
      for (int64_t i = 0; i < M * N; ++i)
        ASSERT_EQ(C[size_t(i)], alone[size_t(i)]) << "K=" << K << " M=" << M << " i=" << i;
    }
  }
}

}  // namespace
}  // namespace jamba
