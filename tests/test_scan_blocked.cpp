// The time-blocked selective scan (kernels/scan_blocked.h), forward and backward, against the
// sequential cpu scan and the jamba::ref kernels over odd lengths, block counts (tails, blocks
// of one step, more blocks than steps), channel sub-ranges and state sizes; the backward against
// finite differences of a double-precision forward; the dispatch rule; and the model and the
// training backward with the blocked path forced, against the golden data and the sequential
// path. Input padding is NaN (a kernel reading outside its rows poisons its output); output
// padding and channels outside [d0, d1) hold a sentinel that must come back unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/threads.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"
#include "kernels/scan_blocked.h"
#include "runtime/forward_tool.h"
#include "tolerances.h"
#include "train/blocks_grad.h"
#include "train/ops.h"
#include "train_test_util.h"

namespace jamba {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = -7777.0f;

class Rng {
 public:
  explicit Rng(uint32_t seed) : g_(seed) {}
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * float(g_() >> 8) * (1.0f / 16777216.0f);
  }
  int64_t integer(int64_t lo, int64_t hi) { return lo + int64_t(g_() % uint32_t(hi - lo + 1)); }
  bool coin() { return g_() & 1u; }
  std::vector<float> vec(int64_t n, float lo, float hi) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = uniform(lo, hi);
    return v;
  }

 private:
  std::mt19937 g_;
};

// Forces the scan dispatch for the lifetime of the object (1: sequential, n > 1: n blocks).
struct ForceTimeBlocks {
  explicit ForceTimeBlocks(int64_t n) { cpu::set_scan_time_blocks_override(n); }
  ~ForceTimeBlocks() { cpu::set_scan_time_blocks_override(0); }
};

// Elementwise |got - want| <= abs + rel |want| (NaN fails); tracks the worst error.
struct Check {
  const char* what;
  double max_abs = 0, max_rel = 0, worst_ratio = 0;
  void elementwise(const std::vector<float>& got, const std::vector<float>& want,
                   const std::string& where, float abs_tol = tol::kKernelAbs,
                   float rel_tol = tol::kKernelRel) {
    ASSERT_EQ(got.size(), want.size());
    int64_t bad = 0, first = -1;
    for (size_t i = 0; i < got.size(); ++i) {
      const double e = std::fabs(double(got[i]) - want[i]);
      if (!std::isnan(e)) {
        max_abs = std::max(max_abs, e);
        worst_ratio = std::max(worst_ratio, e / (abs_tol + rel_tol * std::fabs(want[i])));
        if (std::fabs(want[i]) >= 1e-3) max_rel = std::max(max_rel, e / std::fabs(want[i]));
      }
      if (!(e <= abs_tol + rel_tol * std::fabs(want[i])) && bad++ == 0) first = int64_t(i);
    }
    EXPECT_EQ(bad, 0) << what << " " << where << ": first bad [" << first << "] got "
                      << (first >= 0 ? got[size_t(first)] : 0) << " want "
                      << (first >= 0 ? want[size_t(first)] : 0);
  }
  // max |got - want| / max |want| <= rel (gradients: sums with cancellation, so relative to the
  // tensor's scale rather than to each element).
  void scaled(const std::vector<float>& got, const std::vector<float>& want,
              const std::string& where, double rel) {
    ASSERT_EQ(got.size(), want.size());
    double scale = 0, worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (want[i] != kSentinel) scale = std::max(scale, double(std::fabs(want[i])));
    for (size_t i = 0; i < got.size(); ++i) {
      const double e = std::fabs(double(got[i]) - want[i]);
      if (!(e <= worst)) {
        worst = std::isnan(e) ? INFINITY : e;
        wi = i;
      }
    }
    const double r = worst / std::max(scale, 1e-30);
    max_rel = std::max(max_rel, r);
    worst_ratio = std::max(worst_ratio, r / rel);
    max_abs = std::max(max_abs, worst);
    EXPECT_LE(r, rel) << what << " " << where << ": [" << wi << "] got " << got[wi] << " want "
                      << want[wi] << " (scale " << scale << ")";
  }
  ~Check() {
    std::printf("[  errors  ] %s: max abs %.3g, max rel %.3g, worst err/tol %.3g\n", what, max_abs,
                max_rel, worst_ratio);
  }
};

struct Case {
  int64_t Din, N, d0, d1, L, P;
  int64_t pad;  // extra stride on every [L, *] input and output
  bool fresh;   // zero initial state (and no final-state adjoint)
  bool slow;    // slow decay (A ~ -0.01): the state carries across many blocks
};

// clang-format off
const Case kCases[] = {
    {37, 16, 0, 37, 1, 1, 0, false, false},      // L = 1
    {37, 16, 3, 30, 1, 4, 1, false, true},       // L = 1, more blocks than steps
    {20, 16, 0, 20, 2, 2, 0, false, true},       // blocks of one step
    {33, 5, 2, 33, 7, 3, 2, false, true},        // N = 5, tail (7 = 2 + 2 + 3)
    {16, 1, 0, 16, 7, 7, 0, false, true},        // N = 1, one-step blocks
    {17, 17, 0, 17, 7, 10, 1, false, true},      // N = 17, P > L
    {48, 16, 5, 43, 33, 2, 3, false, true},      // odd channel range over three lane groups
    {48, 16, 0, 48, 33, 4, 0, true, false},      // fresh state, fast decay
    {300, 16, 17, 290, 33, 5, 0, false, true},   // many groups, odd range
    {16, 16, 0, 16, 1000, 3, 0, false, true},    // long, tail
    {64, 16, 0, 64, 1000, 16, 1, false, true},   // long, many blocks
    {40, 65, 1, 33, 1037, 7, 2, false, true},    // N = 65 (selective_scan's heap path)
    {24, 16, 8, 19, 4099, 2, 0, false, true},    // long, two blocks (a 2-thread dispatch)
    {16, 16, 0, 16, 4096, 2, 0, true, false},    // the Din = 16 shape the rule blocks
};
// clang-format on

std::vector<Case> all_cases() {
  std::vector<Case> v(std::begin(kCases), std::end(kCases));
  Rng r(707);
  for (int i = 0; i < 30; ++i) {
    const int64_t Din = r.integer(1, 70), d0 = r.integer(0, Din - 1), d1 = r.integer(d0 + 1, Din);
    const int64_t L = r.integer(1, 200);
    v.push_back({Din, r.coin() ? 16 : r.integer(1, 20), d0, d1, L, r.integer(1, 12),
                 r.integer(0, 3), r.coin(), r.coin()});
  }
  return v;
}

std::string describe(const Case& c) {
  std::ostringstream s;
  s << "Din=" << c.Din << " N=" << c.N << " d=[" << c.d0 << "," << c.d1 << ") L=" << c.L
    << " P=" << c.P << " pad=" << c.pad << " fresh=" << c.fresh << " slow=" << c.slow;
  return s.str();
}

// The inputs of one scan, laid out as the model does: x and z two halves of one in_proj row,
// B and C slices of an x_proj row (after R = 3 dt columns); NaN in every gap.
struct Data {
  int64_t L, Din, N, ldxz, lddt, ldbc, ldy;
  static constexpr int64_t R = 3;
  std::vector<float> xz, dt, bc, A, D, h0, dy, dhL;
  Data(const Case& c, Rng& rng) : L(c.L), Din(c.Din), N(c.N) {
    ldxz = 2 * Din + c.pad, lddt = Din + c.pad + 1, ldbc = R + 2 * N + c.pad, ldy = Din + c.pad;
    xz.assign(size_t(L * ldxz), kNaN);
    dt.assign(size_t(L * lddt), kNaN);
    bc.assign(size_t(L * ldbc), kNaN);
    dy.assign(size_t(L * ldy), kNaN);
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t d = 0; d < Din; ++d) {
        xz[size_t(t * ldxz + d)] = rng.uniform(-2, 2);
        xz[size_t(t * ldxz + Din + d)] = rng.uniform(-3, 3);
        dt[size_t(t * lddt + d)] = softplus_scalar(rng.uniform(-6.9f, -1.5f));  // (1e-3, 0.2)
        dy[size_t(t * ldy + d)] = rng.uniform(-1, 1);
      }
      for (int64_t n = 0; n < 2 * N; ++n) bc[size_t(t * ldbc + R + n)] = rng.uniform(-1, 1);
    }
    A.resize(size_t(Din * N));
    const float scale = c.slow ? 0.01f : 1.0f;
    for (int64_t d = 0; d < Din; ++d)
      for (int64_t n = 0; n < N; ++n)
        A[size_t(d * N + n)] = -scale * std::exp(std::log(float(n + 1)) + rng.uniform(-0.1f, 0.1f));
    D = rng.vec(Din, 0.5f, 1.5f);
    h0 = c.fresh ? std::vector<float>(size_t(Din * N), 0.0f) : rng.vec(Din * N, -1, 1);
    dhL = c.fresh ? std::vector<float>{} : rng.vec(Din * N, -1, 1);
  }
  ScanArgs fwd(int64_t d0, int64_t d1, float* h, float* y, int64_t t0 = 0, int64_t n = -1) const {
    return ScanArgs{.L = n < 0 ? L : n,
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
  }
};

// The gradient outputs of one backward; dB, dC, dA, dD start from the same random values
// (they accumulate), dx, ddt, dz, dh0 from the sentinel (overwritten on [d0, d1) only).
struct Grad {
  std::vector<float> dx, ddt, dz, dB, dC, dA, dD, dh0;
  int64_t ldg, ldbc;
  Grad(const Data& s, uint32_t seed) {
    Rng r(seed);
    ldg = s.ldy + 2, ldbc = s.N + 1;
    dx.assign(size_t(s.L * ldg), kSentinel);
    ddt = dz = dx;
    dB = r.vec(s.L * ldbc, -1, 1);
    dC = r.vec(s.L * ldbc, -1, 1);
    dA = r.vec(s.Din * s.N, -1, 1);
    dD = r.vec(s.Din, -1, 1);
    dh0.assign(size_t(s.Din * s.N), kSentinel);
  }
  ScanBackwardArgs args(const Data& s, int64_t d0, int64_t d1) {
    return ScanBackwardArgs{.L = s.L,
                            .Din = s.Din,
                            .N = s.N,
                            .d0 = d0,
                            .d1 = d1,
                            .x = s.xz.data(),
                            .ldx = s.ldxz,
                            .dt = s.dt.data(),
                            .lddt = s.lddt,
                            .Bm = s.bc.data() + Data::R,
                            .ldb = s.ldbc,
                            .Cm = s.bc.data() + Data::R + s.N,
                            .ldc = s.ldbc,
                            .z = s.xz.data() + s.Din,
                            .ldz = s.ldxz,
                            .A = s.A.data(),
                            .D = s.D.data(),
                            .h0 = s.h0.data(),
                            .dy = s.dy.data(),
                            .lddy = s.ldy,
                            .dhL = s.dhL.empty() ? nullptr : s.dhL.data(),
                            .dx = dx.data(),
                            .lddx = ldg,
                            .ddt = ddt.data(),
                            .ldddt = ldg,
                            .dz = dz.data(),
                            .lddz = ldg,
                            .dB = dB.data(),
                            .lddB = ldbc,
                            .dC = dC.data(),
                            .lddC = ldbc,
                            .dA = dA.data(),
                            .dD = dD.data(),
                            .dh0 = dh0.data()};
  }
};

// got - base (base null: got).
std::vector<float> minus(const std::vector<float>& got, const std::vector<float>* base) {
  std::vector<float> v = got;
  if (base)
    for (size_t i = 0; i < v.size(); ++i) v[i] -= (*base)[i];
  return v;
}

// ------------------------------------------------------------------------------ forward

TEST(ScanBlocked, ForwardMatchesSequentialAndRef) {
  Rng rng(2024);
  Check vs_ref{"scan blocked vs ref"}, vs_seq{"scan blocked vs cpu sequential"},
      seq_ref{"scan cpu sequential vs ref (same data, for scale)"};
  double cross_block_effect = 0;  // how much the block start states matter in these data
  for (const Case& c : all_cases()) {
    const Data s(c, rng);
    std::vector<float> Hr = s.h0, Hs = s.h0, Hb = s.h0;
    std::vector<float> Yr(size_t(c.L * s.ldy), kSentinel), Ys = Yr, Yb = Yr;
    ref::selective_scan(s.fwd(c.d0, c.d1, Hr.data(), Yr.data()));
    cpu::selective_scan(s.fwd(c.d0, c.d1, Hs.data(), Ys.data()));
    cpu::selective_scan_blocked(s.fwd(c.d0, c.d1, Hb.data(), Yb.data()), c.P);
    const std::string what = describe(c);
    vs_ref.elementwise(Yb, Yr, what + " (y)");
    vs_ref.elementwise(Hb, Hr, what + " (h)");
    vs_seq.elementwise(Yb, Ys, what + " (y)");
    vs_seq.elementwise(Hb, Hs, what + " (h)");
    seq_ref.elementwise(Ys, Yr, what + " (y)");
    // The same blocks each from a zero state (no phase b/c) must differ: the data make the
    // corrections visible, so a kernel that dropped them would fail above.
    if (c.slow && c.P > 1 && c.L > 1) {
      std::vector<float> Hz(size_t(c.Din * c.N)), Yz = Yr;
      const int64_t P = std::min(c.P, c.L);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t t0 = c.L * p / P, t1 = c.L * (p + 1) / P;
        if (p > 0)
          std::fill(Hz.begin(), Hz.end(), 0.0f);
        else
          Hz = s.h0;
        ref::selective_scan(s.fwd(c.d0, c.d1, Hz.data(), Yz.data(), t0, t1 - t0));
      }
      for (size_t i = 0; i < Yz.size(); ++i)
        if (Yr[i] != kSentinel)
          cross_block_effect = std::max(cross_block_effect, double(std::fabs(Yz[i] - Yr[i])));
    }
  }
  EXPECT_GT(cross_block_effect, 1e3 * tol::kKernelAbs);
  std::printf("[  info    ] max |y| change from the block start states: %.3g\n",
              cross_block_effect);
}

// A sequence scanned in chunks (state carried through h) equals one call, blocked or not.
TEST(ScanBlocked, ForwardContinuesAcrossCalls) {
  Rng rng(99);
  Check chk{"scan blocked in chunks vs ref"};
  const Case c{50, 16, 3, 47, 601, 4, 1, false, true};
  const Data s(c, rng);
  std::vector<float> Hr = s.h0, Hb = s.h0;
  std::vector<float> Yr(size_t(c.L * s.ldy), kSentinel), Yb = Yr;
  ref::selective_scan(s.fwd(c.d0, c.d1, Hr.data(), Yr.data()));
  int64_t t0 = 0;
  for (int64_t n : {1, 200, 3, 397}) {
    cpu::selective_scan_blocked(s.fwd(c.d0, c.d1, Hb.data(), Yb.data(), t0, n), n % 5 + 1);
    t0 += n;
  }
  ASSERT_EQ(t0, c.L);
  chk.elementwise(Yb, Yr, "y");
  chk.elementwise(Hb, Hr, "h");
}

// ----------------------------------------------------------------------------- backward

TEST(ScanBlocked, BackwardMatchesRef) {
  Rng rng(4242);
  Check blk{"scan backward blocked vs ref"}, seq{"scan backward cpu sequential vs ref"};
  for (const Case& c : all_cases()) {
    const Data s(c, rng);
    Grad gr(s, 7), gs(s, 7), gb(s, 7);
    ref::selective_scan_backward(gr.args(s, c.d0, c.d1));
    cpu::selective_scan_backward(gs.args(s, c.d0, c.d1));
    cpu::selective_scan_backward_blocked(gb.args(s, c.d0, c.d1), c.P);
    const std::string what = describe(c);
    const Grad g0(s, 7);  // the accumulated outputs are compared as increments
    for (auto [got, chk] : {std::pair{&gb, &blk}, std::pair{&gs, &seq}}) {
      const std::vector<float>* outs[][3] = {
          {&got->dx, &gr.dx, nullptr}, {&got->ddt, &gr.ddt, nullptr}, {&got->dz, &gr.dz, nullptr},
          {&got->dB, &gr.dB, &g0.dB},  {&got->dC, &gr.dC, &g0.dC},    {&got->dA, &gr.dA, &g0.dA},
          {&got->dD, &gr.dD, &g0.dD},  {&got->dh0, &gr.dh0, nullptr}};
      const char* names[] = {"dx", "ddt", "dz", "dB", "dC", "dA", "dD", "dh0"};
      for (size_t k = 0; k < std::size(outs); ++k)
        chk->scaled(minus(*outs[k][0], outs[k][2]), minus(*outs[k][1], outs[k][2]),
                    what + " " + names[k], tol::kScanBackward);
    }
    // Untouched: channels outside [d0, d1) and the output padding.
    for (int64_t t = 0; t < c.L; ++t)
      for (int64_t d = 0; d < gb.ldg; ++d)
        if (d < c.d0 || d >= c.d1) {
          ASSERT_EQ(gb.dx[size_t(t * gb.ldg + d)], kSentinel) << what;
          ASSERT_EQ(gb.ddt[size_t(t * gb.ldg + d)], kSentinel) << what;
          ASSERT_EQ(gb.dz[size_t(t * gb.ldg + d)], kSentinel) << what;
        }
  }
}

// The backward of the math, not of the float code: central differences of a double-precision
// forward, objective J = sum_t,d dy * y + sum_d,n dhL * h_{L-1}, against both cpu backwards.
TEST(ScanBlocked, BackwardFiniteDifferences) {
  const int64_t L = 11, Din = 3, N = 4, P = 3;
  Rng rng(31);
  const Case c{Din, N, 0, Din, L, P, 0, false, true};
  Data s(c, rng);
  for (float& a : s.A) a *= 30.0f;  // decays of O(0.1 .. 1) per step: every term matters
  auto objective = [&]() {
    double J = 0;
    for (int64_t d = 0; d < Din; ++d) {
      std::vector<double> h(s.h0.begin() + d * N, s.h0.begin() + (d + 1) * N);
      for (int64_t t = 0; t < L; ++t) {
        const double dt = s.dt[size_t(t * s.lddt + d)], x = s.xz[size_t(t * s.ldxz + d)];
        const double z = s.xz[size_t(t * s.ldxz + Din + d)];
        const float* B = s.bc.data() + t * s.ldbc + Data::R;
        double y = s.D[size_t(d)] * x;
        for (int64_t n = 0; n < N; ++n) {
          h[size_t(n)] = std::exp(dt * s.A[size_t(d * N + n)]) * h[size_t(n)] + dt * B[n] * x;
          y += h[size_t(n)] * B[N + n];
        }
        J += s.dy[size_t(t * s.ldy + d)] * y * z / (1.0 + std::exp(-z));
      }
      for (int64_t n = 0; n < N; ++n) J += s.dhL[size_t(d * N + n)] * h[size_t(n)];
    }
    return J;
  };
  auto fd = [&](float* v) {
    const float keep = *v;
    const float step = std::max(1e-3f, 1e-3f * std::fabs(keep));
    const float a = keep + step, b = keep - step;
    *v = a;
    const double fa = objective();
    *v = b;
    const double fb = objective();
    *v = keep;
    return (fa - fb) / (double(a) - double(b));
  };
  Check chk{"scan backward vs finite differences"};
  for (const int64_t blocks : {int64_t(1), P}) {
    Grad g(s, 1);
    const Grad g0 = g;  // accumulated outputs: compare the increments
    auto args = g.args(s, 0, Din);
    blocks == 1 ? cpu::selective_scan_backward(args)
                : cpu::selective_scan_backward_blocked(args, blocks);
    auto grad_of = [&](std::vector<float>& param, int64_t ld, int64_t off, int64_t rows,
                       int64_t cols, const std::vector<float>& got, const std::vector<float>& base,
                       int64_t ldg, const std::string& name) {
      std::vector<float> want, have;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < cols; ++k) {
          want.push_back(float(fd(&param[size_t(r * ld + off + k)])));
          const size_t i = size_t(r * ldg + k);
          have.push_back(base.empty() ? got[i] : got[i] - base[i]);
        }
      chk.scaled(have, want, "blocks=" + std::to_string(blocks) + " " + name, tol::kScanFd);
    };
    grad_of(s.xz, s.ldxz, 0, L, Din, g.dx, {}, g.ldg, "dx");
    grad_of(s.xz, s.ldxz, Din, L, Din, g.dz, {}, g.ldg, "dz");
    grad_of(s.dt, s.lddt, 0, L, Din, g.ddt, {}, g.ldg, "ddt");
    grad_of(s.bc, s.ldbc, Data::R, L, N, g.dB, g0.dB, g.ldbc, "dB");
    grad_of(s.bc, s.ldbc, Data::R + N, L, N, g.dC, g0.dC, g.ldbc, "dC");
    grad_of(s.A, N, 0, Din, N, g.dA, g0.dA, N, "dA");
    grad_of(s.D, 1, 0, Din, 1, g.dD, g0.dD, 1, "dD");
    grad_of(s.h0, N, 0, Din, N, g.dh0, {}, N, "dh0");
  }
}

// ----------------------------------------------------------------------------- dispatch

// The rule's decisions at the shapes measured on 2 threads (docs/ARCHITECTURE.md) and its
// predictions for more threads.
TEST(ScanBlocked, DispatchRule) {
  using cpu::scan_time_blocks;
  constexpr auto F = cpu::ScanPass::kForward, B = cpu::ScanPass::kBackward;
  EXPECT_EQ(scan_time_blocks(F, 8192, 1, 2), 2);  // Din 16: one channel block, two threads
  EXPECT_EQ(scan_time_blocks(B, 8192, 1, 2), 2);
  EXPECT_EQ(scan_time_blocks(F, 8192, 3, 2), 1);  // Din 48: the forward only ties
  EXPECT_EQ(scan_time_blocks(B, 8192, 3, 2), 2);  // the backward's extra work is small
  EXPECT_EQ(scan_time_blocks(F, 8192, 4, 2), 1);  // Din 64: the channels split evenly
  EXPECT_EQ(scan_time_blocks(B, 8192, 4, 2), 1);
  EXPECT_EQ(scan_time_blocks(B, 8192, 256, 2), 1);
  EXPECT_EQ(scan_time_blocks(F, 8192, 1, 1), 1);  // one thread: blocked is only more work
  EXPECT_EQ(scan_time_blocks(B, 8192, 1, 1), 1);
  // Blocks too short: the forward's phases cost more than they save below 512 steps a block.
  EXPECT_EQ(scan_time_blocks(F, 2 * cpu::kScanMinBlockSteps[0], 1, 2), 2);
  EXPECT_EQ(scan_time_blocks(F, 2 * cpu::kScanMinBlockSteps[0] - 1, 1, 2), 1);
  EXPECT_EQ(scan_time_blocks(B, 2 * cpu::kScanMinBlockSteps[1], 1, 2), 2);
  EXPECT_EQ(scan_time_blocks(B, 2 * cpu::kScanMinBlockSteps[1] - 1, 1, 2), 1);
  EXPECT_EQ(scan_time_blocks(B, 1, 1, 2), 1);
  // 16 threads (extrapolated from the work ratios): blocked while over half of them would idle.
  EXPECT_EQ(scan_time_blocks(F, 1 << 16, 6, 16), 16);
  EXPECT_EQ(scan_time_blocks(F, 1 << 16, 7, 16), 1);
  EXPECT_EQ(scan_time_blocks(B, 1 << 16, 7, 16), 16);
  EXPECT_EQ(scan_time_blocks(B, 1 << 16, 8, 16), 1);
  {
    ForceTimeBlocks force(5);
    EXPECT_EQ(scan_time_blocks(F, 4096, 100, 1), 5);
    EXPECT_EQ(scan_time_blocks(B, 3, 100, 1), 3);
    EXPECT_EQ(scan_time_blocks(F, 0, 100, 1), 1);
  }
  EXPECT_EQ(scan_time_blocks(F, 4096, 100, 2), 1);  // the override is gone
}

// ------------------------------------------------------- the model and training, blocked

// Golden cases through `full_forward` with every scan of two or more steps time-blocked: the
// logits stay within the golden target and within float32 reassociation of the sequential run;
// chunked prefill carries the state through blocked scans.
TEST(ScanBlocked, ModelForwardForcedBlocked) {
  const std::string golden = std::string(JAMBA_SHARED_DIR) + "/golden";
  for (const std::string name : {"long-seq", "padded-batch", "jamba-layout"}) {
    const std::string dir = golden + "/" + name;
    auto g = SafetensorsFile::open(dir + "/golden.safetensors");
    const Model model = Model::load(dir);
    const TokenBatch in = read_token_batch(dir + "/golden.safetensors");
    const int64_t V = model.config().vocab_size;
    FullForwardResult seq, blk, chunked;
    {
      ForceTimeBlocks force(1);
      seq = full_forward(model, in, false);
    }
    {
      ForceTimeBlocks force(7);
      blk = full_forward(model, in, false);
      chunked = full_forward(model, in, false, 100);
    }
    const auto want = tensor_to_f32(g->get("logits"));
    auto max_diff = [&](const std::vector<float>& a, const std::vector<float>& b) {
      EXPECT_EQ(a.size(), b.size());
      float m = 0;
      for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
        if (!in.mask.empty() && !in.mask[i / size_t(V)]) continue;
        const float d = std::fabs(a[i] - b[i]);
        if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
      }
      return m;
    };
    const float d_gold = max_diff(blk.logits, want), d_seq = max_diff(blk.logits, seq.logits);
    const float d_chunk = max_diff(chunked.logits, seq.logits);
    EXPECT_LE(d_gold, tol::kGoldenTarget) << name;
    EXPECT_LE(d_seq, tol::kReassociation) << name;
    EXPECT_LE(d_chunk, tol::kReassociation) << name << " chunks of 100";
    std::printf("[  errors  ] %s blocked: vs golden %.3g, vs sequential %.3g, chunked %.3g\n",
                name.c_str(), d_gold, d_seq, d_chunk);
  }
}

// The Mamba training backward with the time-blocked kernel forced equals the sequential one:
// dx and every parameter gradient, relative to each tensor's max.
TEST(ScanBlocked, TrainBackwardForcedBlocked) {
  JambaConfig c = testutil::tiny_train_config(false, false);
  c.mamba_d_state = 16;
  c.hidden_size = 24;  // Din = 48: three channel blocks
  c.validate("scan blocked train");
  c.derive();
  ParamStore P = testutil::noisy_params(c, 5, 0.4, 0.1);
  for (float& v : P.data[P.find("model.layers.0.mamba.A_log")]) v -= 3.0f;  // slow decay
  const Weights W = P.view();
  const MambaWeights& w = W.layers[0].mamba;
  const int64_t B = 2, T = 77, M = B * T, D = c.hidden_size;
  const std::vector<float> x = testutil::randn(size_t(M * D), 6),
                           dout = testutil::randn(size_t(M * D), 7);
  auto run = [&](int64_t blocks, std::vector<float>* dx) {
    ForceTimeBlocks force(blocks);
    MambaTape mc;
    std::vector<float> out(size_t(M * D));
    testutil::mamba_fwd(c, w, 0, B, T, x.data(), out.data(), &mc);
    Grads G(P);
    dx->resize(size_t(M * D));
    mamba_train_backward(c, w, B, T, x.data(), mc, dout.data(), dx->data(), G);
    return G;
  };
  std::vector<float> dx_seq, dx_blk;
  const Grads gs = run(1, &dx_seq), gb = run(6, &dx_blk);
  Check chk{"train backward blocked vs sequential"};
  chk.scaled(dx_blk, dx_seq, "dx", tol::kScanBackward);
  int n = 0;
  for (size_t i = 0; i < P.size(); ++i) {
    ASSERT_EQ(gs.has(i), gb.has(i)) << P.specs[i].name;
    if (!gs.has(i)) continue;
    chk.scaled(gb.get(i), gs.get(i), P.specs[i].name, tol::kScanBackward);
    ++n;
  }
  EXPECT_GE(n, 8);
}

}  // namespace
}  // namespace jamba
