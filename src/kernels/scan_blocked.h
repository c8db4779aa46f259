// Time-blocked selective scan (forward and backward) beside the sequential one of kernels.h,
// and the backward of the scan for training. Same layout conventions as kernels.h.
//
// The scan h_t = a_t * h_{t-1} + b_t (a_t = exp(dt_t A), b_t = dt_t B_t x_t, per channel d and
// state n) is linear in h, so L steps split into P time blocks [L*p/P, L*(p+1)/P):
//   (a) every block is scanned from a zero state in parallel (block 0 from the true one),
//       recording its local outputs, its end state and its decay prod_t a_t = exp(A sum_t dt_t);
//   (b) the block start states are combined in order: h_start[p+1] = decay[p] * h_start[p] +
//       h_end_local[p] (P x Din x N multiply-adds);
//   (c) the outputs are corrected in parallel: y_t += sum_n (prod_{k=start..t} a_k) h_start C_t
//       (before the D skip and the gate), until the carried start state has decayed to zero.
// The backward does the same twice, forward in time for the states and backward in time for the
// adjoint gh (gh_{t-1} = a_t * (gh_t + dy_t C_t)), then re-runs each block's exact reverse
// recurrence from its combined start state and incoming adjoint. Both cost more arithmetic than
// the sequential scan (measured on one thread with 2 blocks: forward 1.1-1.6x, backward
// 1.1-1.2x; 4 blocks: 1.6-1.8x, 1.4x): they win only when the caller's channel-parallel loop has
// too few tasks for its threads (jamba::cpu::scan_time_blocks, and docs/ARCHITECTURE.md
// "Selective scan: sequential vs time-blocked" for the measurements).
#pragma once
#include <cstdint>

#include "kernels/kernels.h"

namespace jamba {

// Backward of the selective scan of one sequence (the ScanArgs math, spec §2.5 steps 8-10):
//   h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,  y_t = (sum_n h_t C_t + D x_t) * silu(z_t).
// Inputs as ScanArgs: x, dt, z [L, Din] (strides ldx, lddt, ldz); Bm, Cm [L, N] (ldb, ldc);
// A [Din, N] (already -exp(A_log)); D [Din]; plus
//   h0 [Din, N]  the state before step 0 (null: zeros);
//   dy [L, Din]  stride lddy, d objective / d y_t (the gated output);
//   dhL [Din, N] d objective / d h_{L-1}, the state after the last step (null: zero).
// Outputs for channels [d0, d1) only:
//   dx, ddt, dz [L, Din] (strides lddx, ldddt, lddz): overwritten. ddt is d / d dt (dt after
//     softplus: the caller applies softplus'); dx is the scan's part only (D skip and B x term);
//   dB, dC [L, N] (strides lddB, lddC): accumulated (+=), they are sums over channels;
//   dA [Din, N], dD [Din]: accumulated (+=), sums over time (d / d A: for A = -exp(A_log),
//     d / d A_log = dA * A is the caller's);
//   dh0 [Din, N]: d objective / d h0, overwritten when non-null.
struct ScanBackwardArgs {
  int64_t L, Din, N;
  int64_t d0, d1;
  const float* x;
  int64_t ldx;
  const float* dt;
  int64_t lddt;
  const float* Bm;
  int64_t ldb;
  const float* Cm;
  int64_t ldc;
  const float* z;
  int64_t ldz;
  const float* A;
  const float* D;
  const float* h0;
  const float* dy;
  int64_t lddy;
  const float* dhL;
  float* dx;
  int64_t lddx;
  float* ddt;
  int64_t ldddt;
  float* dz;
  int64_t lddz;
  float* dB;
  int64_t lddB;
  float* dC;
  int64_t lddC;
  float* dA;
  float* dD;
  float* dh0 = nullptr;
};

namespace ref {
// Plain per channel: recompute all L states, then the reverse-time recurrence (double sums).
void selective_scan_backward(const ScanBackwardArgs& a);
}  // namespace ref

namespace cpu {
// Sequential in time over channels [d0, d1) on the calling thread (callers parallelise over
// channel blocks and sequences, as with selective_scan; dB and dC are summed over channels, so
// concurrent calls need their own dB / dC buffers). States are recomputed per channel.
void selective_scan_backward(const ScanBackwardArgs& a);

// Time-blocked, OpenMP-parallel inside: n_blocks time blocks (clamped to [1, L]; 1 runs the
// sequential kernel). The forward equals selective_scan within float32 reassociation; the
// numbers depend on n_blocks, never on the thread count. Corrections (c) are split into
// n_blocks sub-chunks per block (the decay from the block start is kept at each), so that the
// P - 1 corrected blocks also fill P threads. The backward's outputs are those of
// selective_scan_backward (same contract) within float32 reassociation.
void selective_scan_blocked(const ScanArgs& a, int64_t n_blocks);
void selective_scan_backward_blocked(const ScanBackwardArgs& a, int64_t n_blocks);

// The dispatch rule (docs/ARCHITECTURE.md, "Selective scan: sequential vs time-blocked"): the
// number of time blocks for one sequence's scan of L steps when the caller's channel-parallel
// loop would have n_tasks equal tasks (sequences x channel blocks) for nthr threads; 1 means
// the sequential scan. Blocked (nthr blocks, one per thread) when its predicted time, the
// measured work ratio r(P) of the pass spread over all threads, n_tasks * r / nthr, beats the
// channel loop's ceil(n_tasks / nthr) rounds by 10%, and the blocks have at least
// kScanMinBlockSteps (forward: its three phases cost fork/join and barriers; backward: less).
enum class ScanPass { kForward, kBackward };
constexpr int64_t kScanMinBlockSteps[2] = {512, 64};  // [ScanPass]
int64_t scan_time_blocks(ScanPass pass, int64_t L, int64_t n_tasks, int64_t nthr);
// Tests force a path: n > 0 makes scan_time_blocks return min(n, L) for every scan (1: always
// sequential); 0 restores the rule. Process-wide.
void set_scan_time_blocks_override(int64_t n);
}  // namespace cpu

}  // namespace jamba
