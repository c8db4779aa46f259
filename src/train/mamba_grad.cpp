// Mamba mixer: training backward (spec §2.5, HF slow path semantics, fp32 state).
// The backward of the selective scan is a reverse-time recurrence per channel (the kernels of
// kernels/scan_blocked.h): the forward states h_t are recomputed per (channel, sequence, time
// block) into a [T, N] buffer, so nothing of size [M, Din, N] is ever stored.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/threads.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/scan_blocked.h"
#include "train/blocks_grad.h"

namespace jamba {

namespace {

struct Dims {
  int64_t D, Din, N, R, K, S, M;
  float eps;
};

Dims dims(const JambaConfig& cfg, int64_t B, int64_t T) {
  const int64_t R = cfg.mamba_dt_rank, N = cfg.mamba_d_state;
  return {cfg.hidden_size, cfg.d_inner(), N, R, cfg.mamba_d_conv, R + 2 * N, B * T,
          float(cfg.rms_norm_eps)};
}

// Channel blocks for the per-channel loops (scan, conv): enough tasks for the threads.
constexpr int64_t kChannelBlock = 16;

// Pre-activation of the causal depthwise conv at (row of sequence b, time t, channel d).
inline float conv_pre(const float* xz, int64_t ld, const float* w, const float* bias, int64_t K,
                      int64_t row0, int64_t t, int64_t d) {
  float acc = bias ? bias[d] : 0.0f;
  for (int64_t j = 0; j < K; ++j) {
    const int64_t src = t - (K - 1) + j;
    if (src >= 0) acc += w[d * K + j] * xz[(row0 + src) * ld + d];
  }
  return acc;
}

}  // namespace

void mamba_train_backward(const JambaConfig& cfg, const MambaWeights& w, int64_t B, int64_t T,
                          const float* x, const MambaTape& c, const float* dout, float* dx,
                          Grads& G) {
  const Dims s = dims(cfg, B, T);
  const int64_t Din = s.Din, N = s.N, R = s.R, S = s.S, M = s.M, K = s.K;
  // 6. out_proj: dyg [M, Din] = dout [M, D] @ W [D, Din]
  std::vector<float> dyg(static_cast<size_t>(M * Din));
  linear_bwd(w.out_proj, c.yg.data(), Din, dout, s.D, M, dyg.data(), Din, false, G);

  // 5. scan backward (kernels/scan_blocked.h) per sequence from a zero state: channel blocks in
  // parallel (each owns its A / D gradient rows; dB, dC are summed over channels: per-block
  // partials [M, 2N], reduced below), or, when there are too few channel blocks for the
  // threads, each sequence time-blocked over all threads (cpu::scan_time_blocks).
  std::vector<float> dxz(static_cast<size_t>(M * 2 * Din));  // [M, 2Din] d(x pre-conv) | dz
  std::vector<float> dxc(static_cast<size_t>(M * Din));      // [M, Din]
  std::vector<float> ddt(static_cast<size_t>(M * Din));      // [M, Din] d dt, then d dt_pre
  const int64_t nblk = (Din + kChannelBlock - 1) / kChannelBlock;
  const int64_t nthr = num_threads();
  const int64_t n_time = cpu::scan_time_blocks(cpu::ScanPass::kBackward, T, nblk, nthr);
  const int64_t n_part = n_time > 1 ? 1 : nblk;
  std::vector<float> dbc_part(static_cast<size_t>(n_part * M * 2 * N), 0.0f);  // [n_part, M, 2N]
  const std::vector<float>& A = w.A;  // [Din, N] = -exp(A_log)
  std::vector<float> dA(static_cast<size_t>(Din * N), 0.0f);
  std::vector<float> dD_frozen;  // D's gradient when D is not trained (the scan writes one)
  float* gD = G.slot(w.D);       // [Din]
  if (!gD) {
    dD_frozen.assign(static_cast<size_t>(Din), 0.0f);
    gD = dD_frozen.data();
  }
  auto args = [&](int64_t b, int64_t d0, int64_t d1, float* dbc) {
    const int64_t r = b * T;
    return ScanBackwardArgs{
        .L = T, .Din = Din, .N = N, .d0 = d0, .d1 = d1,
        .x = c.xc.data() + r * Din, .ldx = Din, .dt = c.dt.data() + r * Din, .lddt = Din,
        .Bm = c.sbc.data() + r * S + R, .ldb = S, .Cm = c.sbc.data() + r * S + R + N, .ldc = S,
        .z = c.xz.data() + r * 2 * Din + Din, .ldz = 2 * Din, .A = A.data(), .D = w.D,
        .h0 = nullptr, .dy = dyg.data() + r * Din, .lddy = Din, .dhL = nullptr,
        .dx = dxc.data() + r * Din, .lddx = Din, .ddt = ddt.data() + r * Din, .ldddt = Din,
        .dz = dxz.data() + r * 2 * Din + Din, .lddz = 2 * Din, .dB = dbc + r * 2 * N,
        .lddB = 2 * N, .dC = dbc + r * 2 * N + N, .lddC = 2 * N, .dA = dA.data(), .dD = gD};
  };
  if (n_time > 1) {
    for (int64_t b = 0; b < B; ++b)
      cpu::selective_scan_backward_blocked(args(b, 0, Din, dbc_part.data()), n_time);
  } else {
#pragma omp parallel for schedule(dynamic) if (M * Din * N > 65536)
    for (int64_t blk = 0; blk < nblk; ++blk)
      for (int64_t b = 0; b < B; ++b)
        cpu::selective_scan_backward(args(b, blk * kChannelBlock,
                                          std::min(Din, (blk + 1) * kChannelBlock),
                                          dbc_part.data() + blk * M * 2 * N));
  }
  if (float* gAlog = w.A_log ? G.slot(w.A_log) : nullptr)  // [Din, N]: d / d A_log = dA * A
    for (int64_t i = 0; i < Din * N; ++i) gAlog[i] += dA[size_t(i)] * A[size_t(i)];
#pragma omp parallel for schedule(static) if (M * Din > 65536)
  for (int64_t i = 0; i < M * Din; ++i) ddt[size_t(i)] *= softplus_grad(c.dt_pre[size_t(i)]);
  // dsbc [M, S]: normed dt from dt_proj, B and C from the scan.
  std::vector<float> dsbc(static_cast<size_t>(M * S), 0.0f);
  for (int64_t blk = 0; blk < n_part; ++blk)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < 2 * N; ++i)
        dsbc[size_t(m * S + R + i)] += dbc_part[size_t((blk * M + m) * 2 * N + i)];
  // 4. dt_proj: d(normed dt) [M, R] = ddt_pre [M, Din] @ W [Din, R]
  linear_bwd(w.dt_proj, c.sbc.data(), S, ddt.data(), Din, M, dsbc.data(), S, false, G);
  // 3. the three RMSNorms, then x_proj: dxc += dsbc_raw [M, S] @ W [S, Din]
  std::vector<float> dsbc_raw(static_cast<size_t>(M * S));
  rmsnorm_bwd(M, R, c.sbc_raw.data(), S, w.dt_norm, s.eps, dsbc.data(), S, dsbc_raw.data(), S,
              false, G.slot(w.dt_norm));
  rmsnorm_bwd(M, N, c.sbc_raw.data() + R, S, w.b_norm, s.eps, dsbc.data() + R, S,
              dsbc_raw.data() + R, S, false, G.slot(w.b_norm));
  rmsnorm_bwd(M, N, c.sbc_raw.data() + R + N, S, w.c_norm, s.eps, dsbc.data() + R + N, S,
              dsbc_raw.data() + R + N, S, false, G.slot(w.c_norm));
  linear_bwd(w.x_proj, c.xc.data(), Din, dsbc_raw.data(), S, M, dxc.data(), Din, true, G);
  // 2. conv + SiLU: dpre = dxc * silu'(pre); weights, bias and the pre-conv input x.
  float* gW = G.slot(w.conv_w);                       // [Din, K], null when frozen
  float* gb = w.conv_b ? G.slot(w.conv_b) : nullptr;  // [Din]
#pragma omp parallel for schedule(static) if (M * Din > 16384)
  for (int64_t d = 0; d < Din; ++d) {
    std::vector<float> dpre(static_cast<size_t>(T));  // [T]
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r0 = b * T;
      for (int64_t t = 0; t < T; ++t) {
        const float pre = conv_pre(c.xz.data(), 2 * Din, w.conv_w, w.conv_b, K, r0, t, d);
        dpre[size_t(t)] = dxc[size_t((r0 + t) * Din + d)] * silu_grad(pre);
      }
      for (int64_t t = 0; t < T && gW; ++t) {
        const float g = dpre[size_t(t)];
        if (gb) gb[d] += g;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t src = t - (K - 1) + j;
          if (src >= 0) gW[d * K + j] += g * c.xz[size_t((r0 + src) * 2 * Din + d)];
        }
      }
      for (int64_t u = 0; u < T; ++u) {  // input time u feeds outputs t = u + (K-1) - j
        float acc = 0.0f;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t t = u + (K - 1) - j;
          if (t < T) acc += dpre[size_t(t)] * w.conv_w[d * K + j];
        }
        dxz[size_t((r0 + u) * 2 * Din + d)] = acc;
      }
    }
  }
  // 1. in_proj: dx [M, D] = dxz [M, 2Din] @ W [2Din, D]
  linear_bwd(w.in_proj, x, s.D, dxz.data(), 2 * Din, M, dx, s.D, false, G);
}

}  // namespace jamba
