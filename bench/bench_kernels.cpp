// Kernel micro-benchmarks: jamba::cpu (production sizes) and jamba::ref (small sizes; the
// reference is scalar double-accumulating code). Where a ref benchmark exists, a cpu benchmark of
// the same shape sits next to it (cpu_small_* next to ref_small_*) so the speedup is a ratio
// of two lines. Filter with --benchmark_filter=cpu_ or =ref_; OMP_NUM_THREADS=1 for one core.
// Counters are rates over wall time (UseRealTime: the cpu kernels run OpenMP threads):
//   FLOP/s  — useful floating-point operations (exp counted as one);
//   B/s     — bytes that must cross memory at least once (weights / KV cache / activations);
//   tok/s   — tokens (rows of L) per second.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/threads.h"
#include "kernels/kernels.h"
#include "kernels/scan_blocked.h"

namespace jamba {
namespace {

enum class Impl { kRef, kCpu };

std::vector<float> random_vec(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = lo + (hi - lo) * float(g() >> 8) * (1.0f / 16777216.0f);
  return v;
}

void set_rates(benchmark::State& st, double flops, double bytes, double tokens = 0) {
  const double it = double(st.iterations());
  st.counters["FLOP/s"] = benchmark::Counter(flops * it, benchmark::Counter::kIsRate);
  st.counters["B/s"] = benchmark::Counter(bytes * it, benchmark::Counter::kIsRate);
  if (tokens > 0)
    st.counters["tok/s"] = benchmark::Counter(tokens * it, benchmark::Counter::kIsRate);
}

// ---------------------------------------------------------------------------------------- gemm

void bm_gemm(benchmark::State& st, Impl impl, int64_t M, int64_t N, int64_t K) {
  const auto A = random_vec(M * K, -1, 1, 1);
  const auto W = random_vec(N * K, -0.02f, 0.02f, 2);
  std::vector<float> C(size_t(M * N));
  const GemmArgs a{M, N, K, A.data(), K, W.data(), K, C.data(), N};
  for (auto _ : st) {
    impl == Impl::kCpu ? cpu::gemm(a) : ref::gemm(a);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  set_rates(st, 2.0 * M * N * K, 4.0 * (N * K + M * K + M * N), double(M));
}

// ------------------------------------------------------------------------------------- rmsnorm

void bm_rmsnorm(benchmark::State& st, Impl impl, int64_t M, int64_t D) {
  const auto x = random_vec(M * D, -2, 2, 3);
  const auto w = random_vec(D, 0.5f, 1.5f, 4);
  std::vector<float> y(size_t(M * D));
  const RmsNormArgs a{M, D, x.data(), D, w.data(), 1e-6f, y.data(), D};
  for (auto _ : st) {
    impl == Impl::kCpu ? cpu::rmsnorm(a) : ref::rmsnorm(a);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rates(st, 4.0 * M * D, 4.0 * (2 * M * D + D), double(M));
}

// ----------------------------------------------------------------------------------- attention

// Lq queries at positions [T - Lq, T) against a cache of T keys (a prefill chunk ending at T, or
// decode with Lq = 1).
// bf16: the K/V cache held as bf16 (--kv-dtype bf16), widened as read; dot: a bf16 model's
// attention on it (bf16 dot products, AttentionArgs::bf16_dot).
void bm_attention(benchmark::State& st, Impl impl, int64_t Lq, int64_t T, int64_t nh, int64_t nkv,
                  int64_t hd, bool bf16 = false, bool dot = false) {
  const int64_t pos0 = T - Lq;
  const auto q = random_vec(Lq * nh * hd, -2, 2, 5);
  const auto k = random_vec(nkv * T * hd, -1, 1, 6);
  const auto v = random_vec(nkv * T * hd, -1, 1, 7);
  std::vector<uint16_t> k16, v16;
  if (bf16) {
    for (float x : k) k16.push_back(f32_to_bf16(x));
    for (float x : v) v16.push_back(f32_to_bf16(x));
  }
  std::vector<float> out(size_t(Lq * nh * hd));
  const AttentionArgs a{.Lq = Lq,
                        .T = T,
                        .nh = nh,
                        .nkv = nkv,
                        .hd = hd,
                        .pos0 = pos0,
                        .q = q.data(),
                        .ldq = nh * hd,
                        .k = k.data(),
                        .v = v.data(),
                        .kv_head_stride = T * hd,
                        .key_valid = nullptr,
                        .scale = 1.0f / std::sqrt(float(hd)),
                        .out = out.data(),
                        .ldo = nh * hd,
                        .k16 = bf16 ? k16.data() : nullptr,
                        .v16 = bf16 ? v16.data() : nullptr,
                        .bf16_dot = dot};
  for (auto _ : st) {
    impl == Impl::kCpu ? cpu::attention(a) : ref::attention(a);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  double keys = 0;  // (query, key) pairs allowed by the causal mask
  for (int64_t i = 0; i < Lq; ++i) keys += double(std::min(T, pos0 + i + 1));
  set_rates(st, 4.0 * hd * nh * keys, (bf16 ? 2.0 : 4.0) * 2 * nkv * T * hd + 4.0 * 2 * Lq * nh * hd,
            double(Lq));
}

// The fp32 FMA peak of this machine with the current OpenMP threads: per thread 16 independent
// chains of 16-wide FMAs (enough to cover the FMA latency on two ports), counted as 2 FLOPs per
// lane. The attention rows above are read against this.
void bm_fma_peak(benchmark::State& st) {
  constexpr int kChains = 16, kLanes = 16;
  constexpr int64_t kIters = 1 << 16;
  float sink = 0;
  for (auto _ : st) {
#pragma omp parallel reduction(+ : sink)
    {
      typedef float v16 __attribute__((vector_size(kLanes * 4)));
      v16 acc[kChains];
      const v16 m = v16{} + 0.999999f, c = v16{} + 1e-7f;
      for (int i = 0; i < kChains; ++i) acc[i] = v16{} + float(i + omp_get_thread_num());
      for (int64_t it = 0; it < kIters; ++it)
        for (int i = 0; i < kChains; ++i) {
          acc[i] = acc[i] * m + c;
          __asm__ volatile("" : "+v"(acc[i]));  // keep the chains in registers, not folded
        }
      for (int i = 0; i < kChains; ++i) sink += acc[i][0];
    }
  }
  benchmark::DoNotOptimize(sink);
  const double flops = 2.0 * kLanes * kChains * double(kIters) * omp_get_max_threads();
  set_rates(st, flops, 0);
}

// -------------------------------------------------------------------------------------- conv1d

void bm_conv(benchmark::State& st, Impl impl, int64_t L, int64_t Din, int64_t K) {
  const auto x = random_vec(L * Din, -2, 2, 8);
  const auto w = random_vec(Din * K, -0.5f, 0.5f, 9);
  const auto bias = random_vec(Din, -0.1f, 0.1f, 10);
  const auto state0 = random_vec(Din * K, -1, 1, 11);
  std::vector<float> state = state0, out(size_t(L * Din));
  const ConvArgs a{L, Din, K, x.data(), Din, state.data(), w.data(), bias.data(), out.data(), Din};
  for (auto _ : st) {
    std::copy(state0.begin(), state0.end(), state.begin());  // same work every iteration
    impl == Impl::kCpu ? cpu::conv1d_silu(a) : ref::conv1d_silu(a);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // 2K multiply-adds + bias + silu (~4) per output.
  set_rates(st, double(L * Din) * (2 * K + 5), 4.0 * (2 * L * Din + 2 * Din * K), double(L));
}

// ------------------------------------------------------------------------------ selective_scan

// One sequence of L tokens, all Din channels. threads = false: one call over [0, Din) (what a
// single worker does); true: channel blocks of 256 across OpenMP threads (how the model calls it).
void bm_scan(benchmark::State& st, Impl impl, int64_t L, int64_t Din, int64_t N, bool threads) {
  const auto x = random_vec(L * Din, -2, 2, 12);
  const auto z = random_vec(L * Din, -3, 3, 13);
  auto dt = random_vec(L * Din, -6.9f, -1.5f, 14);
  for (float& d : dt) d = softplus_scalar(d);  // (1e-3, 0.2)
  const auto B = random_vec(L * N, -1, 1, 15);
  const auto C = random_vec(L * N, -1, 1, 16);
  std::vector<float> A(size_t(Din * N));
  for (int64_t d = 0; d < Din; ++d)
    for (int64_t n = 0; n < N; ++n) A[size_t(d * N + n)] = -float(n + 1);
  const auto D = random_vec(Din, 0.5f, 1.5f, 17);
  std::vector<float> h(size_t(Din * N), 0.0f), y(size_t(L * Din));
  auto args = [&](int64_t d0, int64_t d1) {
    return ScanArgs{.L = L,
                    .Din = Din,
                    .N = N,
                    .d0 = d0,
                    .d1 = d1,
                    .x = x.data(),
                    .ldx = Din,
                    .dt = dt.data(),
                    .lddt = Din,
                    .Bm = B.data(),
                    .ldb = N,
                    .Cm = C.data(),
                    .ldc = N,
                    .z = z.data(),
                    .ldz = Din,
                    .A = A.data(),
                    .D = D.data(),
                    .h = h.data(),
                    .y = y.data(),
                    .ldy = Din};
  };
  constexpr int64_t kBlock = 256;
  for (auto _ : st) {
    std::fill(h.begin(), h.end(), 0.0f);
    if (impl == Impl::kRef) {
      ref::selective_scan(args(0, Din));
    } else if (!threads) {
      cpu::selective_scan(args(0, Din));
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t d0 = 0; d0 < Din; d0 += kBlock)
        cpu::selective_scan(args(d0, std::min(Din, d0 + kBlock)));
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  // Per (t, d, n): dt*A, exp, dA*h, (dt*x)*B + ., h*C + . = 7; per (t, d): skip + gate ~ 8.
  const double flops = double(L) * Din * (7.0 * N + 8.0);
  set_rates(st, flops, 4.0 * (4.0 * L * Din + 2.0 * L * N + 2.0 * Din * N), double(L));
}

// ---------------------------------------------------- selective scan: sequential vs time-blocked

// One sequence of L tokens over all Din channels with the OpenMP threads (OMP_NUM_THREADS), as
// the model runs it. kChannels: the sequential scan in channel blocks across the threads
// (mamba_forward's blocks; the training backward's 16-channel blocks, each with its own dB / dC
// partial); kTime: the time-blocked kernel with one block per thread (what the dispatch picks;
// at least 2 blocks, so one thread shows the extra work the blocking costs).
// Forward and backward (the training backward's scan step, dt gradient before softplus').
enum class ScanPath { kChannels, kTime };

struct ScanBenchData {
  int64_t L, Din, N;
  std::vector<float> x, z, dt, B, C, A, D, h, y, dy, dx, ddt, dz, dA, dD;
  ScanBenchData(int64_t L_, int64_t Din_, int64_t N_) : L(L_), Din(Din_), N(N_) {
    x = random_vec(L * Din, -2, 2, 12);
    z = random_vec(L * Din, -3, 3, 13);
    dt = random_vec(L * Din, -6.9f, -1.5f, 14);
    for (float& d : dt) d = softplus_scalar(d);  // (1e-3, 0.2)
    B = random_vec(L * N, -1, 1, 15);
    C = random_vec(L * N, -1, 1, 16);
    A.resize(size_t(Din * N));
    for (int64_t d = 0; d < Din; ++d)
      for (int64_t n = 0; n < N; ++n) A[size_t(d * N + n)] = -float(n + 1);
    D = random_vec(Din, 0.5f, 1.5f, 17);
    h.assign(size_t(Din * N), 0.0f);
    y.resize(size_t(L * Din));
    dy = random_vec(L * Din, -1, 1, 18);
    dx.resize(size_t(L * Din));
    ddt = dz = dx;
    dA.resize(size_t(Din * N));
    dD.resize(size_t(Din));
  }
  ScanArgs fwd(int64_t d0, int64_t d1) {
    return ScanArgs{.L = L, .Din = Din, .N = N, .d0 = d0, .d1 = d1, .x = x.data(), .ldx = Din,
                    .dt = dt.data(), .lddt = Din, .Bm = B.data(), .ldb = N, .Cm = C.data(),
                    .ldc = N, .z = z.data(), .ldz = Din, .A = A.data(), .D = D.data(),
                    .h = h.data(), .y = y.data(), .ldy = Din};
  }
  ScanBackwardArgs bwd(int64_t d0, int64_t d1, float* dbc) {
    return ScanBackwardArgs{.L = L, .Din = Din, .N = N, .d0 = d0, .d1 = d1, .x = x.data(),
                            .ldx = Din, .dt = dt.data(), .lddt = Din, .Bm = B.data(), .ldb = N,
                            .Cm = C.data(), .ldc = N, .z = z.data(), .ldz = Din, .A = A.data(),
                            .D = D.data(), .h0 = nullptr, .dy = dy.data(), .lddy = Din,
                            .dhL = nullptr, .dx = dx.data(), .lddx = Din, .ddt = ddt.data(),
                            .ldddt = Din, .dz = dz.data(), .lddz = Din, .dB = dbc, .lddB = 2 * N,
                            .dC = dbc + N, .lddC = 2 * N, .dA = dA.data(), .dD = dD.data()};
  }
};

void bm_scan_path(benchmark::State& st, ScanPath path, bool backward, int64_t L, int64_t Din,
                  int64_t N) {
  ScanBenchData s(L, Din, N);
  const int64_t nthr = omp_get_max_threads();
  // mamba_forward's channel blocks / mamba_train_backward's (16 channels).
  const int64_t block =
      backward ? 16 : std::max<int64_t>(16, (Din / std::max<int64_t>(1, 4 * nthr)) / 16 * 16);
  const int64_t nblk = (Din + block - 1) / block, n_time = std::max<int64_t>(2, nthr);
  std::vector<float> dbc(size_t((path == ScanPath::kTime ? 1 : nblk) * L * 2 * N));
  for (auto _ : st) {
    if (!backward) {
      std::fill(s.h.begin(), s.h.end(), 0.0f);
      if (path == ScanPath::kTime) {
        cpu::selective_scan_blocked(s.fwd(0, Din), n_time);
      } else {
#pragma omp parallel for schedule(dynamic)
        for (int64_t b = 0; b < nblk; ++b)
          cpu::selective_scan(s.fwd(b * block, std::min(Din, (b + 1) * block)));
      }
    } else {
      std::fill(dbc.begin(), dbc.end(), 0.0f);
      if (path == ScanPath::kTime) {
        cpu::selective_scan_backward_blocked(s.bwd(0, Din, dbc.data()), n_time);
      } else {
#pragma omp parallel for schedule(dynamic)
        for (int64_t b = 0; b < nblk; ++b)
          cpu::selective_scan_backward(
              s.bwd(b * block, std::min(Din, (b + 1) * block), dbc.data() + b * L * 2 * N));
      }
    }
    benchmark::DoNotOptimize(s.y.data());
    benchmark::DoNotOptimize(s.dx.data());
    benchmark::ClobberMemory();
  }
  st.counters["threads"] = double(nthr);
  st.counters["chan_blocks"] = double(nblk);
  // Useful work of the sequential scan (the blocked one does more): as bm_scan; the backward
  // recomputes the states (7 per (t, d, n)) and runs the reverse step (~12).
  const double flops = double(L) * Din * ((backward ? 19.0 : 7.0) * N + 8.0);
  set_rates(st, flops, 4.0 * (4.0 * L * Din + 2.0 * L * N + 2.0 * Din * N), double(L));
}

// ---------------------------------------------------------------------------------- registry

#define JAMBA_BENCH(...) \
  BENCHMARK_CAPTURE(__VA_ARGS__)->UseRealTime()->Unit(benchmark::kMillisecond)

// gemm (a Jamba-mini-like 2560 x 2560 projection): prefill M = 512, decode M = 1 (gemv path).
JAMBA_BENCH(bm_gemm, cpu_prefill_M512_K2560_N2560, Impl::kCpu, 512, 2560, 2560);
JAMBA_BENCH(bm_gemm, cpu_decode_M1_K2560_N2560, Impl::kCpu, 1, 2560, 2560);
JAMBA_BENCH(bm_gemm, ref_decode_M1_K2560_N2560, Impl::kRef, 1, 2560, 2560);
JAMBA_BENCH(bm_gemm, cpu_small_M16_K1024_N1024, Impl::kCpu, 16, 1024, 1024);
JAMBA_BENCH(bm_gemm, ref_small_M16_K1024_N1024, Impl::kRef, 16, 1024, 1024);

// selective scan: L = 512 tokens, Din = 5120 channels, N = 16 states.
JAMBA_BENCH(bm_scan, cpu_L512_D5120_N16_1thread, Impl::kCpu, 512, 5120, 16, false);
JAMBA_BENCH(bm_scan, cpu_L512_D5120_N16_omp, Impl::kCpu, 512, 5120, 16, true);
JAMBA_BENCH(bm_scan, cpu_small_L128_D1024_N16, Impl::kCpu, 128, 1024, 16, false);
JAMBA_BENCH(bm_scan, ref_small_L128_D1024_N16, Impl::kRef, 128, 1024, 16, false);

// Selective scan, sequential (channel blocks over threads) vs time-blocked, one sequence,
// N = 16: few channels (the case the blocked scan is for) and many; run with OMP_NUM_THREADS=1
// and 2 (docs/ARCHITECTURE.md, "Selective scan: sequential vs time-blocked").
#define JAMBA_SCAN_PATHS(L, Din)                                                            \
  JAMBA_BENCH(bm_scan_path, fwd_chan_L##L##_D##Din, ScanPath::kChannels, false, L, Din, 16); \
  JAMBA_BENCH(bm_scan_path, fwd_time_L##L##_D##Din, ScanPath::kTime, false, L, Din, 16);     \
  JAMBA_BENCH(bm_scan_path, bwd_chan_L##L##_D##Din, ScanPath::kChannels, true, L, Din, 16);  \
  JAMBA_BENCH(bm_scan_path, bwd_time_L##L##_D##Din, ScanPath::kTime, true, L, Din, 16)
JAMBA_SCAN_PATHS(128, 16);
JAMBA_SCAN_PATHS(512, 16);
JAMBA_SCAN_PATHS(8192, 16);
JAMBA_SCAN_PATHS(512, 48);
JAMBA_SCAN_PATHS(8192, 48);
JAMBA_SCAN_PATHS(512, 64);
JAMBA_SCAN_PATHS(8192, 64);
JAMBA_SCAN_PATHS(512, 256);
JAMBA_SCAN_PATHS(8192, 256);
JAMBA_SCAN_PATHS(512, 2048);
JAMBA_SCAN_PATHS(512, 4096);
JAMBA_SCAN_PATHS(2048, 4096);

// attention, hd = 128, GQA: a 128-query prefill chunk ending at T = 4096 and decode at T = 4096
// (32 query heads / 8 kv heads); small shapes for the ref comparison.
JAMBA_BENCH(bm_attention, cpu_prefill_Lq128_T4096_h32_kv8, Impl::kCpu, 128, 4096, 32, 8, 128);
// Long key ranges, read against fma_peak: a 512-token prefill chunk at depth 32K / 128K and decode
// at 256K of the moe1b shape (16 heads, 4 KV heads of 64) and the r3b shape (20 heads, 1 KV head
// of 128), f32 and bf16 caches.
BENCHMARK(bm_fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);
JAMBA_BENCH(bm_attention, moe1b_Lq512_T32768_f32, Impl::kCpu, 512, 32768, 16, 4, 64, false);
JAMBA_BENCH(bm_attention, moe1b_Lq512_T32768_bf16, Impl::kCpu, 512, 32768, 16, 4, 64, true);
JAMBA_BENCH(bm_attention, moe1b_Lq512_T32768_bf16dot, Impl::kCpu, 512, 32768, 16, 4, 64, true, true);
JAMBA_BENCH(bm_attention, moe1b_Lq512_T131072_bf16dot, Impl::kCpu, 512, 131072, 16, 4, 64, true, true);
JAMBA_BENCH(bm_attention, moe1b_decode_T262144_f32, Impl::kCpu, 1, 262144, 16, 4, 64, false);
JAMBA_BENCH(bm_attention, moe1b_decode_T262144_bf16, Impl::kCpu, 1, 262144, 16, 4, 64, true);
JAMBA_BENCH(bm_attention, moe1b_decode_T262144_bf16dot, Impl::kCpu, 1, 262144, 16, 4, 64, true, true);
JAMBA_BENCH(bm_attention, r3b_Lq512_T32768_bf16, Impl::kCpu, 512, 32768, 20, 1, 128, true);
JAMBA_BENCH(bm_attention, r3b_Lq512_T32768_bf16dot, Impl::kCpu, 512, 32768, 20, 1, 128, true, true);
JAMBA_BENCH(bm_attention, r3b_decode_T262144_bf16, Impl::kCpu, 1, 262144, 20, 1, 128, true);
JAMBA_BENCH(bm_attention, r3b_decode_T262144_bf16dot, Impl::kCpu, 1, 262144, 20, 1, 128, true, true);
JAMBA_BENCH(bm_attention, tiny_Lq1000_T32768_hd16, Impl::kCpu, 1000, 32768, 4, 2, 16, false);
JAMBA_BENCH(bm_attention, cpu_decode_T4096_h32_kv8, Impl::kCpu, 1, 4096, 32, 8, 128);
JAMBA_BENCH(bm_attention, cpu_small_prefill_Lq16_T512_h8_kv2, Impl::kCpu, 16, 512, 8, 2, 128);
JAMBA_BENCH(bm_attention, ref_small_prefill_Lq16_T512_h8_kv2, Impl::kRef, 16, 512, 8, 2, 128);
JAMBA_BENCH(bm_attention, cpu_small_decode_T1024_h8_kv2, Impl::kCpu, 1, 1024, 8, 2, 128);
JAMBA_BENCH(bm_attention, ref_small_decode_T1024_h8_kv2, Impl::kRef, 1, 1024, 8, 2, 128);

// conv1d + SiLU, K = 4: prefill L = 512 and decode L = 1 over Din = 5120.
JAMBA_BENCH(bm_conv, cpu_prefill_L512_D5120_K4, Impl::kCpu, 512, 5120, 4);
JAMBA_BENCH(bm_conv, cpu_decode_L1_D5120_K4, Impl::kCpu, 1, 5120, 4);
JAMBA_BENCH(bm_conv, cpu_small_L64_D1024_K4, Impl::kCpu, 64, 1024, 4);
JAMBA_BENCH(bm_conv, ref_small_L64_D1024_K4, Impl::kRef, 64, 1024, 4);

// rmsnorm over D = 2560 rows.
JAMBA_BENCH(bm_rmsnorm, cpu_prefill_M512_D2560, Impl::kCpu, 512, 2560);
JAMBA_BENCH(bm_rmsnorm, cpu_decode_M1_D2560, Impl::kCpu, 1, 2560);
JAMBA_BENCH(bm_rmsnorm, cpu_small_M64_D2560, Impl::kCpu, 64, 2560);
JAMBA_BENCH(bm_rmsnorm, ref_small_M64_D2560, Impl::kRef, 64, 2560);

}  // namespace
}  // namespace jamba

// The settings the jamba binary runs with (OpenMP spinning, OpenBLAS kernels for this CPU).
int main(int argc, char** argv) {
  jamba::restart_with_runtime_settings(argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
