// Time-blocked selective scan, forward and backward, the sequential backward, and the rule that
// picks between the channel-parallel and the time-blocked scans (kernels/scan_blocked.h).
// Tested against jamba::ref (tests/test_scan_blocked.cpp); timed in bench/bench_kernels.cpp.
#include "kernels/scan_blocked.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "kernels/cpu/vec_math.h"

namespace jamba::cpu {

namespace {

constexpr int64_t W = 16;  // channels per lane group, as in selective_scan

// Decays (products of a_t, and the start state carried by them) below this are set to zero:
// they multiply states of O(1 .. 100), so nothing within float resolution of the rest is lost,
// and it keeps them out of the denormal range, where every multiply takes a microcode assist
// (measured: the blocked backward 4x slower on long blocks without it).
constexpr float kTinyDecay = 1e-30f;
#pragma omp declare simd notinbranch
inline float flush_tiny(float v) {
  return (v < kTinyDecay && v > -kTinyDecay) ? 0.0f : v;
}

// First step of time block p of P over [0, L) (block sizes differ by at most one).
inline int64_t bound(int64_t L, int64_t P, int64_t p) {
  return L * p / P;
}

// The training backward's scalar silu and its derivative (std::exp), kept bit-for-bit.
inline float sigmoid_exact(float v) {
  return 1.0f / (1.0f + std::exp(-v));
}
inline float silu_exact(float v) {
  return v * sigmoid_exact(v);
}
inline float silu_grad_exact(float v) {
  const float s = sigmoid_exact(v);
  return s * (1.0f + v * (1.0f - s));
}

// ---- forward: 16-channel lane groups, state [N][W] -------------------------------------------

// Steps [t0, t1) of channels [c0, c0 + w) from the state h (in/out). kLocal: y_t = sum_n h_t C_t
// (the block-local part, corrected in phase c) and sdt += dt_t per lane (the decay since the
// block start is exp(A * sdt), one exp per block boundary instead of a product per step);
// otherwise the final y_t = (sum_n h_t C_t + D x_t) silu(z_t), as selective_scan.
template <bool kLocal>
void scan_steps(const ScanArgs& a, int64_t c0, int64_t w, int64_t t0, int64_t t1, const float* Al,
                float* h, float* sdt) {
  const int64_t N = a.N;
  for (int64_t t = t0; t < t1; ++t) {
    float dt[W], x[W], dtx[W], y[W];
    for (int64_t c = 0; c < W; ++c) {
      const bool in = c < w;
      dt[c] = in ? a.dt[t * a.lddt + c0 + c] : 0.0f;
      x[c] = in ? a.x[t * a.ldx + c0 + c] : 0.0f;
      dtx[c] = dt[c] * x[c];
      y[c] = 0.0f;
    }
    const float* Bt = a.Bm + t * a.ldb;
    const float* Ct = a.Cm + t * a.ldc;
    for (int64_t n = 0; n < N; ++n) {
      const float bn = Bt[n], cn = Ct[n];
      float* hn = h + n * W;
      const float* An = Al + n * W;
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) {
        hn[c] = exp_fast(dt[c] * An[c]) * hn[c] + dtx[c] * bn;
        y[c] += hn[c] * cn;
      }
    }
    float* yo = a.y + t * a.ldy + c0;
    if constexpr (kLocal) {
      for (int64_t c = 0; c < W; ++c) sdt[c] += dt[c];
      for (int64_t c = 0; c < w; ++c) yo[c] = y[c];
    } else {
      for (int64_t c = 0; c < w; ++c)
        yo[c] = (y[c] + a.D[c0 + c] * x[c]) * silu_fast(a.z[t * a.ldz + c0 + c]);
    }
  }
}

// dec[n][c] = exp(A[n][c] * sdt[c]): the decay over steps whose dt sum to sdt.
void decay_of(const float* Al, const float* sdt, int64_t N, float* dec) {
  for (int64_t n = 0; n < N; ++n)
#pragma omp simd
    for (int64_t c = 0; c < W; ++c) dec[n * W + c] = exp_fast(Al[n * W + c] * sdt[c]);
}

// Phase c over steps [t0, t1): g_t = a_t g_{t-1} from g (in/out: the start state carried
// through the block so far), y_t = (y_local_t + sum_n g_t C_t + D x_t) silu(z_t). Once every
// lane of g has decayed to zero (flush_tiny) the remaining steps only apply the skip and gate.
void correct_steps(const ScanArgs& a, int64_t c0, int64_t w, int64_t t0, int64_t t1,
                   const float* Al, float* g) {
  const int64_t N = a.N;
  bool live = true;
  for (int64_t t = t0; t < t1; ++t) {
    float corr[W] = {};
    if (live) {
      float dt[W];
      for (int64_t c = 0; c < W; ++c) dt[c] = c < w ? a.dt[t * a.lddt + c0 + c] : 0.0f;
      const float* Ct = a.Cm + t * a.ldc;
      for (int64_t n = 0; n < N; ++n) {
        const float cn = Ct[n];
        float* gn = g + n * W;
        const float* An = Al + n * W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) {
          gn[c] = flush_tiny(exp_fast(dt[c] * An[c]) * gn[c]);
          corr[c] += gn[c] * cn;
        }
      }
      if ((t - t0) % 16 == 15) live = std::any_of(g, g + N * W, [](float v) { return v != 0.0f; });
    }
    float* yo = a.y + t * a.ldy + c0;
    for (int64_t c = 0; c < w; ++c) {
      const float x = a.x[t * a.ldx + c0 + c];
      yo[c] = (yo[c] + corr[c] + a.D[c0 + c] * x) * silu_fast(a.z[t * a.ldz + c0 + c]);
    }
  }
}

// ---- backward: one channel at a time, vectorised over n ------------------------------------

// The exact reverse recurrence of channel d over steps [t0, t1) (what the training backward
// ran inline): recompute h_t from hs (the state before t0) into H [t1 - t0, N] and the decays
// into Ea [t1 - t0, N], then walk back from gh (in: d / d h_{t1-1} from the steps after t1;
// out: d / d h_{t0-1}), writing dx, ddt, dz, adding into dB, dC rows and dA, dD.
void backward_steps(const ScanBackwardArgs& a, int64_t d, int64_t t0, int64_t t1, const float* A,
                    const float* hs, float* gh, float* H, float* Ea, double* dA, double& dD) {
  const int64_t N = a.N;
  for (int64_t t = t0; t < t1; ++t) {
    const float dtv = a.dt[t * a.lddt + d], xv = a.x[t * a.ldx + d];
    const float* Bt = a.Bm + t * a.ldb;
    const float* Hp = t > t0 ? H + (t - 1 - t0) * N : hs;
    float* Ht = H + (t - t0) * N;
    float* Et = Ea + (t - t0) * N;
    for (int64_t n = 0; n < N; ++n) {
      Et[n] = exp_fast(dtv * A[n]);
      Ht[n] = Et[n] * Hp[n] + dtv * Bt[n] * xv;
    }
  }
  const float Dd = a.D[d];
  for (int64_t t = t1 - 1; t >= t0; --t) {
    const float dtv = a.dt[t * a.lddt + d], xv = a.x[t * a.ldx + d], zv = a.z[t * a.ldz + d];
    const float* Bt = a.Bm + t * a.ldb;
    const float* Ct = a.Cm + t * a.ldc;
    const float* Ht = H + (t - t0) * N;
    const float* Hp = t > t0 ? H + (t - 1 - t0) * N : hs;
    const float* Et = Ea + (t - t0) * N;
    float y = 0.0f;
    for (int64_t n = 0; n < N; ++n) y += Ht[n] * Ct[n];
    y += xv * Dd;
    const float g = a.dy[t * a.lddy + d];
    const float dy = g * silu_exact(zv);
    a.dz[t * a.lddz + d] = g * y * silu_grad_exact(zv);
    dD += double(dy) * xv;
    float dxv = dy * Dd, ddtv = 0.0f;
    float* dBt = a.dB + t * a.lddB;
    float* dCt = a.dC + t * a.lddC;
    for (int64_t n = 0; n < N; ++n) {
      const float ghn = gh[n] + dy * Ct[n];  // d objective / d h_t
      dCt[n] += dy * Ht[n];
      const float at = Et[n];
      const float hp = Hp[n];
      ddtv += ghn * (hp * at * A[n] + Bt[n] * xv);
      dA[n] += double(ghn) * hp * at * dtv;
      dBt[n] += ghn * dtv * xv;
      dxv += ghn * dtv * Bt[n];
      gh[n] = ghn * at;
    }
    a.ddt[t * a.ldddt + d] = ddtv;
    a.dx[t * a.lddx + d] = dxv;
  }
}

// Phase 1 of the blocked backward, channel d over steps [t0, t1): kH: the states from h (in/out,
// [N]); kQ: the decay dc (in/out) and the adjoint leaving the block from a zero adjoint at its
// end, in closed form q += (prod_{k=t0..t} a_k) dy_t C_t (in/out).
template <bool kH, bool kQ>
void local_block(const ScanBackwardArgs& a, int64_t d, int64_t t0, int64_t t1, const float* A,
                 float* h, float* dc, float* q) {
  const int64_t N = a.N;
  for (int64_t t = t0; t < t1; ++t) {
    const float dtv = a.dt[t * a.lddt + d], xv = a.x[t * a.ldx + d];
    const float dy = kQ ? a.dy[t * a.lddy + d] * silu_exact(a.z[t * a.ldz + d]) : 0.0f;
    const float* Bt = a.Bm + t * a.ldb;
    const float* Ct = a.Cm + t * a.ldc;
    for (int64_t n = 0; n < N; ++n) {
      const float e = exp_fast(dtv * A[n]);
      if constexpr (kH) h[n] = e * h[n] + dtv * Bt[n] * xv;
      if constexpr (kQ) {
        dc[n] = flush_tiny(dc[n] * e);
        q[n] += dc[n] * (dy * Ct[n]);
      }
    }
  }
}

std::atomic<int64_t> g_time_blocks_override{0};

}  // namespace

// ------------------------------------------------------------------------------ forward

void selective_scan_blocked(const ScanArgs& a, int64_t n_blocks) {
  const int64_t L = a.L, N = a.N, nd = a.d1 - a.d0;
  if (L <= 0 || nd <= 0) return;
  const int64_t P = std::clamp<int64_t>(n_blocks, 1, L);
  if (P == 1) return selective_scan(a);
  const int64_t G = (nd + W - 1) / W;  // lane groups
  const int64_t J = P;                 // correction sub-chunks per block
  const int64_t S = N * W;             // one group's [N][W] lanes
  auto buf = [&](int64_t n) { return std::vector<float>(static_cast<size_t>(n * S)); };
  std::vector<float> Al = buf(G);           // [G][N][W] A
  std::vector<float> hend = buf(P * G);     // [P][G] local end state (block 0: the true one)
  std::vector<float> dec = buf(P * G);      // [P][G] decay over the block, exp(A sum dt)
  std::vector<float> hstart = buf(P * G);   // [P][G] true start state (phase b)
  std::vector<float> cum = buf(P * J * G);  // [P][J][G] decay from the block start to sub-chunk j
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < W; ++c) {
        const int64_t d = a.d0 + g * W + c;
        Al[size_t(g * S + n * W + c)] = d < a.d1 ? a.A[d * N + n] : 0.0f;
      }
#pragma omp parallel
  {
    std::vector<float> gs(static_cast<size_t>(S));
    // (a) every block from a zero state (block 0 from the true one, which makes it final).
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      const int64_t t0 = bound(L, P, p), t1 = bound(L, P, p + 1);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t c0 = a.d0 + g * W, w = std::min(W, a.d1 - c0);
        const float* Ag = Al.data() + g * S;
        float* h = hend.data() + (p * G + g) * S;
        if (p == 0) {
          for (int64_t n = 0; n < N; ++n)
            for (int64_t c = 0; c < W; ++c) h[n * W + c] = c < w ? a.h[(c0 + c) * N + n] : 0.0f;
          scan_steps<false>(a, c0, w, t0, t1, Ag, h, nullptr);
          continue;
        }
        float sdt[W] = {};  // sum of dt since the block start, per lane
        std::fill_n(h, S, 0.0f);
        for (int64_t j = 0; j < J; ++j) {
          if (j > 0) decay_of(Ag, sdt, N, cum.data() + ((p * J + j) * G + g) * S);
          scan_steps<true>(a, c0, w, t0 + (t1 - t0) * j / J, t0 + (t1 - t0) * (j + 1) / J, Ag, h,
                           sdt);
        }
        decay_of(Ag, sdt, N, dec.data() + (p * G + g) * S);
      }
    }
    // (b) block start states in order, per group; the final state back to a.h.
#pragma omp for schedule(static)
    for (int64_t g = 0; g < G; ++g) {
      std::copy_n(hend.data() + g * S, S, gs.data());
      for (int64_t p = 1; p < P; ++p) {
        const int64_t i = (p * G + g) * S;
        std::copy_n(gs.data(), S, hstart.data() + i);
        for (int64_t k = 0; k < S; ++k)
          gs[size_t(k)] = dec[size_t(i + k)] * gs[size_t(k)] + hend[size_t(i + k)];
      }
      const int64_t c0 = a.d0 + g * W, w = std::min(W, a.d1 - c0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < w; ++c) a.h[(c0 + c) * N + n] = gs[size_t(n * W + c)];
    }
    // (c) corrections of blocks 1..P-1, each in J sub-chunks started from cum * h_start.
#pragma omp for schedule(static)
    for (int64_t task = 0; task < (P - 1) * J; ++task) {
      const int64_t p = 1 + task / J, j = task % J;
      const int64_t t0 = bound(L, P, p), t1 = bound(L, P, p + 1);
      const int64_t s0 = t0 + (t1 - t0) * j / J, s1 = t0 + (t1 - t0) * (j + 1) / J;
      if (s0 == s1) continue;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t c0 = a.d0 + g * W, w = std::min(W, a.d1 - c0);
        const float* hs = hstart.data() + (p * G + g) * S;
        const float* cm = cum.data() + ((p * J + j) * G + g) * S;
        for (int64_t k = 0; k < S; ++k) gs[size_t(k)] = j > 0 ? cm[k] * hs[k] : hs[k];
        correct_steps(a, c0, w, s0, s1, Al.data() + g * S, gs.data());
      }
    }
  }
}

// ----------------------------------------------------------------------------- backward

void selective_scan_backward(const ScanBackwardArgs& a) {
  const int64_t L = a.L, N = a.N;
  std::vector<float> H(static_cast<size_t>(L * N)), Ea(static_cast<size_t>(L * N));  // [L, N]
  std::vector<float> hs(static_cast<size_t>(N)), gh(static_cast<size_t>(N));
  std::vector<double> dA(static_cast<size_t>(N));
  for (int64_t d = a.d0; d < a.d1; ++d) {
    for (int64_t n = 0; n < N; ++n) {
      hs[size_t(n)] = a.h0 ? a.h0[d * N + n] : 0.0f;
      gh[size_t(n)] = a.dhL ? a.dhL[d * N + n] : 0.0f;
    }
    std::fill(dA.begin(), dA.end(), 0.0);
    double dD = 0.0;
    backward_steps(a, d, 0, L, a.A + d * N, hs.data(), gh.data(), H.data(), Ea.data(), dA.data(),
                   dD);
    for (int64_t n = 0; n < N; ++n) {
      a.dA[d * N + n] += float(dA[size_t(n)]);
      if (a.dh0) a.dh0[d * N + n] = gh[size_t(n)];
    }
    a.dD[d] += float(dD);
  }
}

void selective_scan_backward_blocked(const ScanBackwardArgs& a, int64_t n_blocks) {
  const int64_t L = a.L, N = a.N, nd = a.d1 - a.d0;
  const int64_t P = std::clamp<int64_t>(n_blocks, 1, std::max<int64_t>(1, L));
  if (P == 1 || nd <= 0) return selective_scan_backward(a);
  const int64_t S = nd * N;  // one block's [nd, N] per-channel vectors
  auto buf = [&](int64_t n) { return std::vector<float>(static_cast<size_t>(n)); };
  std::vector<float> hend = buf(P * S);    // [P][nd][N] end state from zero (block 0: from h0)
  std::vector<float> dec = buf(P * S);     // prod of a_t over the block
  std::vector<float> q = buf(P * S);       // adjoint out of the block from a zero adjoint in
  std::vector<float> hstart = buf(P * S);  // true start state
  std::vector<float> carry = buf(P * S);   // true adjoint into the block's last state
  std::vector<double> dA_part(static_cast<size_t>(P * S), 0.0), dD_part(size_t(P * nd), 0.0);
  const int64_t max_len = (L + P - 1) / P;
#pragma omp parallel
  {
    std::vector<float> H = buf(max_len * N), Ea = buf(max_len * N), v = buf(N);
    // 1. per block: the forward from a zero state (states) and, in the same pass, the reverse
    // from a zero adjoint in closed form: q = sum_t (prod_{k=t0..t} a_k) dy_t C_t.
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      const int64_t t0 = bound(L, P, p), t1 = bound(L, P, p + 1);
      for (int64_t i = 0; i < nd; ++i) {
        const int64_t d = a.d0 + i;
        const float* A = a.A + d * N;
        float* h = hend.data() + p * S + i * N;
        float* dc = dec.data() + p * S + i * N;
        float* qq = q.data() + p * S + i * N;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = p == 0 && a.h0 ? a.h0[d * N + n] : 0.0f;
          dc[n] = 1.0f;
          qq[n] = 0.0f;
        }
        // The last block's end state and block 0's outgoing adjoint (dh0 only) are not needed.
        if (p == P - 1)
          local_block<false, true>(a, d, t0, t1, A, h, dc, qq);
        else if (p == 0 && !a.dh0)
          local_block<true, false>(a, d, t0, t1, A, h, dc, qq);
        else
          local_block<true, true>(a, d, t0, t1, A, h, dc, qq);
      }
    }
    // 2. per channel: start states forward in time, incoming adjoints backward in time.
#pragma omp for schedule(static)
    for (int64_t i = 0; i < nd; ++i) {
      const int64_t d = a.d0 + i;
      std::copy_n(hend.data() + i * N, N, v.data());
      for (int64_t n = 0; n < N; ++n) hstart[size_t(i * N + n)] = a.h0 ? a.h0[d * N + n] : 0.0f;
      for (int64_t p = 1; p < P; ++p) {
        const int64_t o = p * S + i * N;
        std::copy_n(v.data(), N, hstart.data() + o);
        for (int64_t n = 0; n < N; ++n)
          v[size_t(n)] = dec[size_t(o + n)] * v[size_t(n)] + hend[size_t(o + n)];
      }
      for (int64_t n = 0; n < N; ++n) v[size_t(n)] = a.dhL ? a.dhL[d * N + n] : 0.0f;
      for (int64_t p = P - 1; p >= 0; --p) {
        const int64_t o = p * S + i * N;
        std::copy_n(v.data(), N, carry.data() + o);
        for (int64_t n = 0; n < N; ++n)
          v[size_t(n)] = q[size_t(o + n)] + dec[size_t(o + n)] * v[size_t(n)];
      }
      if (a.dh0) std::copy_n(v.data(), N, a.dh0 + d * N);
    }
    // 3. per block: the exact reverse recurrence from the true start state and adjoint. Blocks
    // own their rows of dx, ddt, dz, dB, dC; dA, dD go to per-block partials.
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      const int64_t t0 = bound(L, P, p), t1 = bound(L, P, p + 1);
      for (int64_t i = 0; i < nd; ++i) {
        const int64_t d = a.d0 + i, o = p * S + i * N;
        backward_steps(a, d, t0, t1, a.A + d * N, hstart.data() + o, carry.data() + o, H.data(),
                       Ea.data(), dA_part.data() + o, dD_part[size_t(p * nd + i)]);
      }
    }
  }
  for (int64_t i = 0; i < nd; ++i) {  // blocks in order: deterministic
    const int64_t d = a.d0 + i;
    double dD = 0.0;
    for (int64_t p = 0; p < P; ++p) dD += dD_part[size_t(p * nd + i)];
    a.dD[d] += float(dD);
    for (int64_t n = 0; n < N; ++n) {
      double s = 0.0;
      for (int64_t p = 0; p < P; ++p) s += dA_part[size_t(p * S + i * N + n)];
      a.dA[d * N + n] += float(s);
    }
  }
}

// ----------------------------------------------------------------------------- dispatch

namespace {

// Work of the blocked pass over the sequential one with P blocks, measured on one thread
// (bench_kernels bm_scan_path with P = 2, one-off runs with P = 4; docs/ARCHITECTURE.md):
// forward 1.07-1.60 at P = 2 (the corrections stop where the carried start state has decayed,
// so long blocks cost less), 1.6-1.8 at P = 4; backward 0.90-1.17 at P = 2 (block 0 needs no
// adjoint, the last block no states), 1.37 at P = 4. Fitted from above: 1.6 / 1.17 at P = 2,
// growing to ~2.2 / ~1.9 for many blocks.
double scan_work_ratio(ScanPass pass, int64_t P) {
  const double f = 1.0 - 1.0 / double(P);
  return pass == ScanPass::kForward ? 1.0 + 1.2 * f : 1.17 + 0.75 * (2.0 * f - 1.0);
}

}  // namespace

int64_t scan_time_blocks(ScanPass pass, int64_t L, int64_t n_tasks, int64_t nthr) {
  if (const int64_t o = g_time_blocks_override.load(std::memory_order_relaxed); o > 0)
    return std::max<int64_t>(1, std::min(o, L));
  if (nthr < 2 || n_tasks < 1 || L < kScanMinBlockSteps[int(pass)] * nthr) return 1;
  const double blocked = double(n_tasks) * scan_work_ratio(pass, nthr) / double(nthr);
  const double channels = double((n_tasks + nthr - 1) / nthr);
  return blocked <= 0.9 * channels ? nthr : 1;
}

void set_scan_time_blocks_override(int64_t n) {
  g_time_blocks_override.store(std::max<int64_t>(0, n), std::memory_order_relaxed);
}

}  // namespace jamba::cpu
