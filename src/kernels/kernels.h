// Kernel interface: plain functions on raw float32 buffers, no model config.
// Two implementations of each kernel live side by side:
//   jamba::ref::*  (kernels/ref/)  slow, readable, the truth;
//   jamba::cpu::*  (kernels/cpu/)  fast (BLAS, OpenMP, vectorised); tested against ref.
// Layout conventions: row-major; "[L, D] stride s" means element (t, d) is at p[t*s + d].
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace jamba {

// C[M,N] (ldc) = A[M,K] (lda) @ W[N,K]^T (ldw) (+ bias[N] if non-null) (+ C if accumulate).
struct GemmArgs {
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const float* W;
  int64_t ldw;
  float* C;
  int64_t ldc;
  const float* bias = nullptr;
  bool accumulate = false;
};

// y[M,D] = w[D] * x * rsqrt(mean(x^2) + eps), row by row. y may alias x.
struct RmsNormArgs {
  int64_t M, D;
  const float* x;
  int64_t ldx;
  const float* w;
  float eps;
  float* y;
  int64_t ldy;
};

// Causal attention of Lq new queries of one sequence against its cache of T keys.
// q: [Lq, nh*hd] stride ldq; k, v: per kv head g a [T, hd] block at k + g*kv_head_stride;
// query i sits at absolute position pos0 + i and attends keys j <= pos0 + i with key_valid[j]
// (null = all valid). A query with no allowed key gets the uniform average of all T values (what
// the reference's additive finfo.min mask produces for left-padding rows).
// out: [Lq, nh*hd] stride ldo. Query head h reads kv head h / (nh / nkv).
// k16, v16 (instead of k, v; same layout): a bf16 cache; keys and values are widened to f32 as
// they are read, so scores, softmax and sums stay f32 (only the cache's rounding differs).
// bf16_dot (with k16, v16): a bf16 model's attention — the queries are rounded to bf16 too
// (scores = (bf16(q) . k) * scale, f32 sums) and, in the fast kernel, the softmax weights are
// rounded to bf16 before P V, so both products run as bf16 dot products (oneDNN; ~2x the f32
// FMA rate). The reference rounds the queries only (the P rounding is within its tolerance).
struct AttentionArgs {
  int64_t Lq, T, nh, nkv, hd;
  int64_t pos0;
  const float* q;
  int64_t ldq;
  const float* k;
  const float* v;
  int64_t kv_head_stride;
  const uint8_t* key_valid = nullptr;
  float scale;
  float* out;
  int64_t ldo;
  const uint16_t* k16 = nullptr;
  const uint16_t* v16 = nullptr;
  bool bf16_dot = false;
};

// Depthwise causal conv1d + SiLU over L tokens of one sequence, channels [0, Din).
// x: [L, Din] stride ldx (pre-conv input, already masked); state: [Din, K] the last K inputs
// before this chunk (column K-1 newest; zeros for a fresh sequence), updated in place to the last
// K inputs after this chunk; w: [Din, K] (tap K-1 multiplies the current token); bias: [Din] or
// null; out: [L, Din] stride ldo, out = silu(conv(x) + bias).
struct ConvArgs {
  int64_t L, Din, K;
  const float* x;
  int64_t ldx;
  float* state;
  const float* w;
  const float* bias;
  float* out;
  int64_t ldo;
};

// Selective scan of one sequence with fused skip and gate (spec §2.5 steps 8–10):
//   h_t[d,n] = exp(dt_t[d] * A[d,n]) * h_{t-1}[d,n] + dt_t[d] * B_t[n] * x_t[d]
//   y_t[d]   = (sum_n h_t[d,n] * C_t[n] + D[d] * x_t[d]) * silu(z_t[d])
// x, dt, z: [L, Din] strides ldx, lddt, ldz; Bm, Cm: [L, N] strides ldb, ldc; A: [Din, N]
// (already -exp(A_log)); D: [Din]; h: [Din, N] state in/out; y: [L, Din] stride ldy.
// Only channels [d0, d1) are processed (callers parallelise over sequences x channel blocks).
struct ScanArgs {
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
  float* h;
  float* y;
  int64_t ldy;
};

// C[M,N] (ldc) = A[M,K] (lda, f32) @ W[N,K]^T (ldw, bf16 bits) (+ bias) (+ C if accumulate).
// The weights stay bf16 in memory (half the bytes of f32); products and sums are f32.
// bf16_activations: every A element is first rounded to bf16 (nearest even), as a bf16 model
// computes (HF runs bf16 checkpoints with bf16 activations); the products of two bf16 values are
// exact in f32 and the sums stay f32. This is what lets the AVX512-BF16 dot products (and
// oneDNN's bf16 matmul) run: ~4x the f32 GEMM rate on this CPU.
struct GemmBf16Args {
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const uint16_t* W;
  int64_t ldw;
  float* C;
  int64_t ldc;
  const float* bias = nullptr;
  bool accumulate = false;
  bool bf16_activations = false;
};

// C[M,N] (ldc) = bf16(A[M,K]) (lda, f32 rounded to bf16) @ W[K,N] (bf16, row stride ldw)
// (+ C if accumulate): a weight matrix [out, in] used untransposed, as training's dX = dY W
// through a frozen bf16 base whose GEMMs take bf16 activations (src/train/ops).
struct GemmBf16KnArgs {
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const uint16_t* W;
  int64_t ldw;
  float* C;
  int64_t ldc;
  bool accumulate = false;
};

// C[M,N] (ldc) = A[M,K] (lda, f32) @ dequant(W)[N,K]^T (+ bias) (+ C if accumulate), with W in
// one of the quantized formats of kernels/quant.h.
// int8: W [N, K] int8, row stride ldw bytes; scale [N] (one per output row). The activations
// are rounded per row to int16 (quantize_act_int16: scale da = max|x| / 32767), so a product is
// an exact integer dot scaled by both scales: C[m,n] = sw[n] * da[m] * sum_k q[n,k] * qa[m,k].
// (16-bit steps of the row maximum: far finer than the weights' 8-bit steps, and what lets the
// decode kernel multiply 32 weights per AVX-512 VNNI vpdpwssd instead of widening them to f32.)
struct GemmQ8Args {
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const int8_t* W;
  int64_t ldw;
  const float* scale;
  float* C;
  int64_t ldc;
  const float* bias = nullptr;
  bool accumulate = false;
};
// q4: W [N, q4_row_bytes(K)] packed groups, row stride ldw bytes; scale [N, q4_groups(K)] (bf16
// bits) with row stride lds. Up to kQ4StreamMaxM rows (decode, small batches) the activations are rounded
// too, per row and group of 32, to int8 with scale max|x| / 127 (quantize_act_q4), so a group's
// product is an integer dot scaled by both scales:
// C[m,n] = sum_g sw[n,g] * da[m,g] * sum_{k in g} q[n,k] * qa[m,k] (then bias / accumulate).
// More rows (prefill): each weight row is rounded again to int8 with one scale per row
// (requantize_row_q4_int8: steps of max|w| / 127, ~1/16 of a q4 group's step) and each activation
// row to int8 with one scale per row (quantize_act_int8: max|x| / 127), so that the product is
// one int8 x int8 matmul: C[m,n] = sw8[n] * da[m] * sum_k q8[n,k] * qa8[m,k] (the int8 type's
// int16 activations need two, ~half the rate).
inline constexpr int64_t kQ4StreamMaxM = 32;
struct GemmQ4Args {
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const uint8_t* W;
  int64_t ldw;
  const uint16_t* scale;
  int64_t lds;
  float* C;
  int64_t ldc;
  const float* bias = nullptr;
  bool accumulate = false;
};

// Elementwise: silu_mul writes out[i] = silu(gate[i]) * up[i]; softplus works in place.

namespace ref {
void gemm(const GemmArgs& a);
void rmsnorm(const RmsNormArgs& a);
void attention(const AttentionArgs& a);
void conv1d_silu(const ConvArgs& a);
void selective_scan(const ScanArgs& a);
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
void softplus(float* x, int64_t n);
void gemm_bf16(const GemmBf16Args& a);
void gemm_bf16_kn(const GemmBf16KnArgs& a);
void gemm_q8(const GemmQ8Args& a);
void gemm_q4(const GemmQ4Args& a);
}  // namespace ref

namespace cpu {
void gemm(const GemmArgs& a);
void rmsnorm(const RmsNormArgs& a);
void attention(const AttentionArgs& a);
void conv1d_silu(const ConvArgs& a);
void selective_scan(const ScanArgs& a);
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
void softplus(float* x, int64_t n);
// M <= 32: register-blocked AVX-512 kernel, 8 rows per pass over the bf16 weights (decode is
// memory-bound); larger M: bf16 panels widened to f32 per thread, then sgemm on the panel, or,
// with bf16_activations and oneDNN built in (JAMBA_HAVE_DNNL), oneDNN's bf16 matmul on the
// weights in place (no copy).
void gemm_bf16(const GemmBf16Args& a);
// True when oneDNN is built in (JAMBA_HAVE_DNNL).
bool have_dnnl();
// gemm_bf16 with bf16_activations and M >= 9 (prefill) has two routes to the same exact products
// (f32 sums either way): oneDNN's bf16 matmul on the weights in place, or the weights widened to
// f32 in panels and OpenBLAS sgemm on the rounded activations (M > 32; 9..32 rows then take the
// vdpbf16ps kernel). Which is faster depends on the CPU: 512 x 2560 x 2560, 2 threads, oneDNN
// 715 vs sgemm ~200 GFLOP/s on an AMD EPYC (AVX512-BF16), 166 vs 242 on an Intel Xeon without
// AMX. kAuto (the default) times both once, the first time it matters, and keeps the faster
// (oneDNN unless the panels are >= 10% faster); tests and benchmarks may fix one.
enum class Bf16Route { kAuto, kOneDnn, kF32Panels };
void set_bf16_route(Bf16Route r);
struct Bf16RouteChoice {
  Bf16Route route;                              // kOneDnn or kF32Panels
  double onednn_gflops = 0, panels_gflops = 0;  // measured by kAuto (0: not measured)
};
// The route large-M bf16 GEMMs take now (kAuto: measures first; not from inside a parallel
// region, where it would time one thread: the caller then gets oneDNN, unmeasured).
Bf16RouteChoice bf16_route();
// oneDNN's bf16 matmul on W in place ([K, N] layout); without oneDNN, blocks of W's rows widened
// to f32 and sgemm on the rounded activations (the same exact products, f32 sums).
void gemm_bf16_kn(const GemmBf16KnArgs& a);
// Quantized weights, the same two regimes: M <= 32 streams the quantized rows, 8 activation rows
// per pass (int8: AVX-512 VNNI vpdpwssd of the sign-extended weights with the int16
// activations, 32 weights per instruction; q4: dpbusd of the nibbles with the int8 activations,
// 64 weights per instruction); larger M runs the same kernels over panels of weight rows kept in
// the cache while every group of 8 activation rows passes (without VNNI: panels widened to f32
// and sgemm on the activations rounded as above), so both regimes compute the same products.
void gemm_q8(const GemmQ8Args& a);
void gemm_q4(const GemmQ4Args& a);
}  // namespace cpu

// Scalar helpers shared by both implementations (torch softplus: threshold 20).
inline float softplus_scalar(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
inline float silu_scalar(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace jamba
