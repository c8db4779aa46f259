// Quantized-weight GEMM benchmarks (registered into bench_kernels.cpp's main): the same shapes
// with bf16, int8 and q4 weights. B/s counts the weight bytes in their stored format (scales
// included) plus activations and outputs: decode (M = 1, 8) is memory-bound, so B/s against the
// machine's bandwidth is the figure of merit; prefill (M = 512) is compute-bound (FLOP/s).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba {
namespace {

enum class WType { kBf16, kBf16Act, kInt8, kQ4 };  // kBf16Act: bf16 weights, bf16 activations

void bm_gemm_w(benchmark::State& st, WType wt, int64_t M, int64_t N, int64_t K) {
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> A(static_cast<size_t>(M * K)), C(static_cast<size_t>(M * N)),
      row(static_cast<size_t>(K));
  for (float& x : A) x = nd(g);
  std::vector<uint16_t> w16;
  std::vector<uint8_t> wq;
  std::vector<float> sc;      // int8: f32 per row
  std::vector<uint16_t> sc4;  // q4: bf16 per group
  const int64_t rb = wt == WType::kQ4 ? q4_row_bytes(K) : K,
                ns = wt == WType::kQ4 ? q4_groups(K) : 1;
  const bool bf16 = wt == WType::kBf16 || wt == WType::kBf16Act;
  if (bf16) {
    w16.resize(size_t(N * K));
    for (auto& x : w16) x = f32_to_bf16(nd(g));
  } else {
    wq.resize(size_t(N * rb));
    sc.resize(size_t(N));
    sc4.resize(size_t(N * ns));
    for (int64_t n = 0; n < N; ++n) {
      for (float& x : row) x = nd(g);
      if (wt == WType::kInt8)
        quantize_row_int8(row.data(), K, reinterpret_cast<int8_t*>(wq.data() + n * rb),
                          &sc[size_t(n)]);
      else
        quantize_row_q4(row.data(), K, wq.data() + n * rb, sc4.data() + n * ns);
    }
  }
  for (auto _ : st) {
    if (bf16)
      cpu::gemm_bf16({.M = M,
                      .N = N,
                      .K = K,
                      .A = A.data(),
                      .lda = K,
                      .W = w16.data(),
                      .ldw = K,
                      .C = C.data(),
                      .ldc = N,
                      .bf16_activations = wt == WType::kBf16Act});
    else if (wt == WType::kInt8)
      cpu::gemm_q8({.M = M,
                    .N = N,
                    .K = K,
                    .A = A.data(),
                    .lda = K,
                    .W = reinterpret_cast<const int8_t*>(wq.data()),
                    .ldw = K,
                    .scale = sc.data(),
                    .C = C.data(),
                    .ldc = N});
    else
      cpu::gemm_q4({.M = M,
                    .N = N,
                    .K = K,
                    .A = A.data(),
                    .lda = K,
                    .W = wq.data(),
                    .ldw = rb,
                    .scale = sc4.data(),
                    .lds = ns,
                    .C = C.data(),
                    .ldc = N});
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  const double wbytes = bf16 ? 2.0 * N * K
                             : double(N * rb) + (wt == WType::kQ4 ? 2.0 * double(N * ns) : 4.0 * N);
  const double it = double(st.iterations());
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * M * N * K * it, benchmark::Counter::kIsRate);
  st.counters["B/s"] =
      benchmark::Counter((wbytes + 4.0 * (M * K + M * N)) * it, benchmark::Counter::kIsRate);
}

// Training through a frozen bf16 base: the forward GEMM x W^T (bf16 activations) and the
// backward's dX = dY W (W used untransposed, cpu::gemm_bf16_kn) of the same [N, K] matrix.
void bm_gemm_bf16_train(benchmark::State& st, bool backward, int64_t M, int64_t N, int64_t K) {
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t in = backward ? N : K, out = backward ? K : N;  // W [out, in]
  std::vector<float> A(static_cast<size_t>(M * K)), C(static_cast<size_t>(M * N));
  for (float& x : A) x = nd(g);
  std::vector<uint16_t> w16(static_cast<size_t>(out * in));
  for (auto& x : w16) x = f32_to_bf16(nd(g));
  for (auto _ : st) {
    if (backward)
      cpu::gemm_bf16_kn({.M = M, .N = N, .K = K, .A = A.data(), .lda = K, .W = w16.data(),
                         .ldw = N, .C = C.data(), .ldc = N});
    else
      cpu::gemm_bf16({.M = M, .N = N, .K = K, .A = A.data(), .lda = K, .W = w16.data(), .ldw = K,
                      .C = C.data(), .ldc = N, .bf16_activations = true});
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  st.counters["FLOP/s"] =
      benchmark::Counter(2.0 * M * N * K * double(st.iterations()), benchmark::Counter::kIsRate);
}

#define JAMBA_QBENCH(...) \
  BENCHMARK_CAPTURE(__VA_ARGS__)->UseRealTime()->Unit(benchmark::kMillisecond)

// Decode: a 16384 x 4096 matrix (128 MiB in bf16, 64 in int8, 36 in q4).
JAMBA_QBENCH(bm_gemm_w, bf16_decode_M1_N16384_K4096, WType::kBf16, 1, 16384, 4096);
JAMBA_QBENCH(bm_gemm_w, int8_decode_M1_N16384_K4096, WType::kInt8, 1, 16384, 4096);
JAMBA_QBENCH(bm_gemm_w, q4_decode_M1_N16384_K4096, WType::kQ4, 1, 16384, 4096);
JAMBA_QBENCH(bm_gemm_w, bf16_decode_M8_N16384_K4096, WType::kBf16, 8, 16384, 4096);
JAMBA_QBENCH(bm_gemm_w, bf16act_decode_M1_N16384_K4096, WType::kBf16Act, 1, 16384, 4096);
JAMBA_QBENCH(bm_gemm_w, bf16act_decode_M8_N16384_K4096, WType::kBf16Act, 8, 16384, 4096);
JAMBA_QBENCH(bm_gemm_w, int8_decode_M8_N16384_K4096, WType::kInt8, 8, 16384, 4096);
JAMBA_QBENCH(bm_gemm_w, q4_decode_M8_N16384_K4096, WType::kQ4, 8, 16384, 4096);
// Prefill: M = 512 over a 2560 x 2560 projection.
JAMBA_QBENCH(bm_gemm_w, bf16_prefill_M512_N2560_K2560, WType::kBf16, 512, 2560, 2560);
JAMBA_QBENCH(bm_gemm_w, bf16act_prefill_M512_N2560_K2560, WType::kBf16Act, 512, 2560, 2560);
JAMBA_QBENCH(bm_gemm_w, int8_prefill_M512_N2560_K2560, WType::kInt8, 512, 2560, 2560);
JAMBA_QBENCH(bm_gemm_w, q4_prefill_M512_N2560_K2560, WType::kQ4, 512, 2560, 2560);
// r3b's in_proj [10240, 2560] at a 1024-token training sequence: forward and dX.
JAMBA_QBENCH(bm_gemm_bf16_train, bf16act_train_fwd_M1024_N10240_K2560, false, 1024, 10240, 2560);
JAMBA_QBENCH(bm_gemm_bf16_train, bf16kn_train_dx_M1024_N2560_K10240, true, 1024, 2560, 10240);
// The largest M the streaming kernels take (kernels.h), for the rate they reach on a matrix
// that stays in L2 per thread block.
JAMBA_QBENCH(bm_gemm_w, int8_stream_M32_N2560_K2560, WType::kInt8, 32, 2560, 2560);
JAMBA_QBENCH(bm_gemm_w, q4_stream_M32_N2560_K2560, WType::kQ4, 32, 2560, 2560);

}  // namespace
}  // namespace jamba
