// Every numerical tolerance of the test suite, in one place, with the reason for each.
#pragma once

namespace jamba::tol {

// float32 forward vs the HF float32 reference (../shared/golden): the golden README recommends
// 1e-3 max abs, at least 40x every case's float32 noise floor (5.7e-6 .. 2.2e-5); semantic
// mistakes give 1e-2 .. 1. Values are O(10), so this is ~1e-4 relative.
constexpr float kGoldenLogits = 1e-3f;
constexpr float kGoldenHidden = 1e-3f;
constexpr float kGoldenStepLogits = 1e-3f;
// What a careful float32 implementation should reach (golden README): we assert it too, so a
// regression that stays under 1e-3 is still caught.
constexpr float kGoldenTarget = 1e-4f;

// Chunked prefill / batched vs one-at-a-time run the same arithmetic with different GEMM shapes
// (BLAS blocking, MoE grouping and attention tiles change the summation order): float32
// rounding only. The golden README measures float32 accumulation noise at up to 2.23e-5 on
// logits (jamba-layout, 32 layers); two float32 orders can each be that far off: 2x = 5e-5.
constexpr float kReassociation = 5e-5f;

// Fast kernel vs plain reference kernel (relative to the magnitude of the values, per element):
// fp32 accumulation in a different order plus the vectorised exp (~2 ulp).
constexpr float kKernelRel = 2e-5f;
constexpr float kKernelAbs = 2e-5f;

// cpu::exp_fast (vec_math.h) vs exp in double over its unclamped range [-87.3, 88.37]: Cody-Waite
// reduction plus a degree-6 polynomial, documented ~2 ulp, measured 1.92 ulp (2.3e-7); 3 ulp of
// float (3 * 2^-23) leaves room for FMA contraction differences between compilers. Measured
// breakages: coefficient 1/121 for 1/120 gives 7.2e-7, a 24-bit ln2-hi constant 7.8e-6.
constexpr float kExpFastRel = 3.6e-7f;

// BF16 / F16 checkpoints vs the same checkpoint in F32 (test_loader.cpp): the weights are
// rounded once (BF16: 8-bit mantissa, relative error <= 2^-9; F16: 11-bit, <= 2^-12) and the
// error grows through the layers. Measured on dense-tiny / gqa-moe (logits O(10)): BF16 max abs
// 0.14, F16 0.016; the bounds leave ~3x headroom. A dtype bug (wrong conversion, swapped
// bytes) gives O(1..10).
constexpr float kBf16WeightsLogits = 0.5f;
constexpr float kF16WeightsLogits = 0.05f;
// Fraction of positions whose top-1 token must agree with the F32 run: rounding may only flip
// positions whose top-2 margin is below the logit error (measured: BF16 62/64 on dense-tiny).
constexpr double kHalfWeightsTop1 = 0.9;
// BF16 checkpoint with bf16 activations (the default for bf16 weights: every GEMM input rounded
// to bf16, as HF runs a bf16 model; products and sums f32) vs the F32 golden logits, on the same
// two cases: the activation rounding (2^-9 relative per input) adds noise of the size of the
// weight rounding. Measured: dense-tiny 0.112, top-1 60/64 (f32 activations: 0.116, 62/64);
// gqa-moe 0.177, 64/64 (0.142). On the MoE-heavy jamba-layout 1.27 vs 1.24 with f32 activations:
// routing flips dominate either way. A lost rounding mode, transposed weights or a wrong stride
// in the oneDNN call gives O(1..10).
constexpr float kBf16ActivationsLogits = 0.5f;
constexpr double kBf16ActivationsTop1 = 0.9;
// The same bf16-activation model, a whole prompt (oneDNN) vs one token at a time (vdpbf16ps
// kernel). Both GEMMs are float32-exact to ~3e-7 relative, but any float32 difference upstream
// (summation order, MoE grouping, attention tiles) moves some activations across a bf16
// rounding boundary, a 2^-8 relative jump that these random-init models amplify: measured
// dense-tiny 0.034, gqa-moe 0.069 (0.059 with the same kernel for both; f32 activations give
// 4.4e-6 / 1.4e-5). HF in bf16 has the same spread between its prefill and decode. ~3x headroom;
// a stride, row-offset or state mistake gives O(1).
constexpr float kBf16ActivationsPrefillVsDecode = 0.2f;
// Attention with bf16 dot products (AttentionArgs::bf16_dot) vs the reference, which rounds the
// queries but keeps the softmax weights exact: each weight rounded to bf16 (relative 2^-9) moves
// an output (values in [-1, 1]) by at most ~2^-9 in the worst case, far less on average.
// Measured over the 60 kernel cases: max abs 1.4e-3 (err/tol 0.29); a wrong tile offset, a lost
// rescale or a transposed V gives O(0.1..1).
constexpr float kAttentionBf16Dot = 4e-3f;
// bf16 K/V cache (--kv-dtype bf16) vs the f32 golden logits, every golden case: each key and
// value is rounded once (relative 2^-9) when written; scores, softmax and sums stay f32.
// Measured max |dlogits|: dense-tiny 0.020, gqa-moe 0.012, long-seq 0.035, padded-batch 0.014,
// tied-embeddings 0.061 (~3x headroom below); top-1 vs the f32 cache 63/64, 64/64, 1022/1024,
// 87/88, 64/64. jamba-layout (16 MoE layers of 16 experts, logits O(10)) measures 0.98 with 48/48
// top-1: a rounded key moves a router's top-2 somewhere in 32 layers (routing flips, as with bf16
// weights, kBf16ActivationsLogits' note) — it gets its own bound. Keys/values not rounded at all
// would fail the "changed something" check; a wrong row or head offset gives O(10).
constexpr float kBf16KvCacheLogits = 0.2f;
constexpr float kBf16KvCacheLogitsMoeFlips = 3.0f;
constexpr double kBf16KvCacheTop1 = 0.9;
// A 32K-token prompt in one forward vs chunks of 1000 (tiny preset): the same products summed in
// other orders (attention tiles, online-softmax rescaling across tiles, GEMM blocking by row
// count) over 32K keys. Measured 1.5e-7 (f32 cache, 32K) and 2.4e-7 (bf16 cache, 8K; the
// rounding of K/V is the same either way); a lost tile, a wrong cache offset or a state not
// carried between chunks gives O(0.01..1).
constexpr float kChunkedPrefill32K = 1e-5f;

}  // namespace jamba::tol

namespace jamba::tol {

// Training (../shared/golden-train/README.md, "Recommended tolerances"). The float32 reference
// is itself this far from exact arithmetic (its noise floor): losses <= 6e-7, gradients <=
// 5.5e-6 of each tensor's max |g| (global relative L2 <= 2.5e-6), grad norms <= 6.4e-5
// relative, the AdamW update (final - initial) <= 1.6e-4 relative L2 per tensor, single final
// weights <= 1e-4 (Adam amplifies the relative error of gradients near eps). Mistakes give
// 5e-3 .. 2.5 on losses, >= 8.7e-4 on gradients, >= 0.27 on the final updates.
constexpr float kTrainLoss = 1e-4f;             // losses, ce/aux parts, final_loss: abs
constexpr float kTrainLossTarget = 1e-5f;       // what a careful float32 implementation reaches
constexpr double kTrainGradRel = 1e-4;          // per tensor max|g - g_ref| / max|g_ref|
constexpr double kTrainGradGlobalL2 = 1e-5;     // ||g - g_ref|| / ||g_ref|| over all parameters
constexpr double kTrainGradNormRel = 1e-3;      // pre-clip global norm, relative, every step
constexpr double kTrainFinalUpdateRel = 2e-3;   // per tensor ||d - d_ref|| / ||d_ref||, d = final - initial
constexpr double kTrainFinalAbs = 2e-3;         // every final weight, abs (2 * lr: gross errors only)

}  // namespace jamba::tol

namespace jamba::tol {

// Finite differences of float32 code (tests/test_train_fd.cpp): Richardson-extrapolated central
// differences with h = 1e-2 (truncation ~h^4) of an objective accumulated in double; the float32
// rounding of the forward (~1e-7 relative) divided by h leaves ~1e-5 of noise relative to the
// gradient's max. Relative to each tensor's max |analytic|; a missing term or wrong factor
// gives O(1e-1 .. 1).
constexpr double kTrainFd = 2e-3;
// The whole model's loss (4 layers, float32 forward): its rounding noise is larger, so steps
// h = 2e-2 with two Richardson levels (truncation ~h^6); measured <= 1e-3 on the tied model.
// Dropping the embedding or LM-head use of a tied matrix, or the aux term, gives >= 1e-2.
constexpr double kTrainFdModel = 5e-3;

}  // namespace jamba::tol

namespace jamba::tol {

// AdamW in float32 vs the formula in double over 3 steps with lr 1e-2: each update is at most
// ~lr, computed with float rounding (~1e-7 relative) on weights of O(1): a few 1e-7; a wrong
// bias correction or eps placement gives >= 1e-4.
constexpr double kAdamWFormula = 2e-6;

}  // namespace jamba::tol

namespace jamba::tol {

// Quantized weights (tests/test_quant_model.cpp) vs the same golden checkpoint in float32. The
// golden models are random inits (Gaussian weights, logits O(10) with small top-2 margins), the
// hardest case for quantization: relative weight noise is ~0.6% rms for int8 per-row (step
// max|w|/127 ~ 0.02 sigma) and ~7% for q4 (step ~ 0.25 sigma per group of 32), about 12x apart,
// and the logit errors measured keep that ratio (dense-tiny int8 0.20, q4 2.76). Top-k routing
// turns small input changes into discrete expert swaps, so max errors are heavy-tailed.
// Measured over the six cases (1352 positions, LM head quantized too, tied or not): int8 max
// 2.28 (gqa-moe, a routing flip), top-1 97.0%; int8-experts max 1.0, top-1 99.7%; q4 (bf16
// group scales, prefill activations int8 per row) max 8.42, top-1 60.9% (61.0% with f32 scales,
// int16 prefill activations and the tied head unquantized; 64.0% with a bf16 LM head).
// Bounds: ~1.7x the max error, a few points under the agreement. The code path is checked by
// kInt8ActRoundingHidden / kQ4ActRoundingHidden; these bound the format's noise (a coarser format,
// a lost scale or a dropped group fails them).
constexpr float kInt8Logits = 4.0f;
constexpr double kInt8Top1 = 0.93;
constexpr float kQ4Logits = 15.0f;
constexpr double kQ4Top1 = 0.55;
// q4 vs its dequantized float32 model on the residual stream after layer 1, max |diff| relative
// to max |h|, in both regimes (kernels.h). Decode (chunks of 8, M <= 32): the activations rounded
// to int8 per group of 32 (step 1/127 of the group's max): measured 0.0121 (gqa-moe), 0.0106
// (jamba-layout) (0.0101, 0.0116 with f32 group scales). Prefill (one forward, M > 32): weights
// rounded again to int8 per row (step max|w| / 127, ~1/16 of a group's q4 step) and activations
// to int8 per row (one int8 matmul): 0.0246, 0.0163 (0.0199, 0.0161 with f32 group scales;
// 0.0079, 0.0114 with f32 scales and int16 activations). After the
// next layer, an MoE one, 0.015 .. 0.062 (routing flips), hence layer 1 only. A scale / nibble /
// stride mistake gives O(1). (The two regimes then differ by up to ~1.5e-2 from each other: each
// is held to this bound rather than to the other.)
constexpr float kQ4ActRoundingHidden = 0.03f;
// int8 vs its dequantized float32 model, the same measure: the activations rounded per row to
// int16 (step 1/32767 of the row's max, ~260x finer than q4's per-group int8 step, coarser for
// rows with outliers). Measured 6.0e-5 (gqa-moe), 4.9e-5 (jamba-layout), i.e. q4's figure / ~200;
// f32 activations would give ~1e-6 and int8-rounded ones ~1e-2, a lost scale O(1).
constexpr float kInt8ActRoundingHidden = 2e-4f;
// int8 model, one forward vs chunks of 8, max |diff| relative to max |h|: measured 3.6e-5
// (gqa-moe) when prefill ran sgemm, 0 since it computes the decode kernels' integer dots; the
// float32 noise plus activations moved across an int16 rounding boundary.
constexpr float kInt8PathsHidden = 1.5e-4f;

}  // namespace jamba::tol

namespace jamba::tol {

// `jamba train` (tests/test_trainer.cpp). The training forward (src/train) and the inference
// forward (src/model) are separate float32 code paths with different summation orders; the
// mean cross-entropy of 31 targets, computed in double from either, differs by float32 rounding
// of the logits (~1e-6 relative on O(6) losses). 1e-5 abs; a wrong weight name or transposed
// tensor after a save/load gives O(0.1 .. 1).
constexpr double kTrainVsInference = 1e-5;
// mpirun -np 2 vs one process with the same global batch in the same two micro-batches: the
// gradients are the same sums in another order (all-reduce of two shard sums vs accumulation
// into one buffer), so the weights differ by float32 rounding after the first update and AdamW's
// normalisation can amplify that where v is tiny. Measured over 8 steps (B 8, T 64, MoE + aux):
// losses identical, grad norms 6e-8 relative. Relative to max(1, |value|). A missing all-reduce
// or a wrong CE denominator gives >= 1e-2.
constexpr double kMpiVsOneProcess = 1e-5;

}  // namespace jamba::tol

namespace jamba::tol {

// The shipped demo model (tests/test_demo_model.cpp), on three held-out verses (the end of
// Revelation). Not float tolerances: they say "this model was trained". Measured on models/kjv:
// mean 3.25 nats/token (held-out set over 81 windows: 3.76), the same words shuffled 6.28 (a gap of
// 3.03). An untrained model gives ~ln(4096) = 8.3 on both (gap ~0); after 100 of the 600 steps
// the held-out loss was 4.47. A model that has learnt the corpus stays under 4 with a gap > 1.5.
constexpr double kDemoHeldOutCe = 4.0;
constexpr double kDemoShuffleGap = 1.5;

}  // namespace jamba::tol

namespace jamba::tol {

// Selective-scan backward (tests/test_scan_blocked.cpp), cpu (sequential or time-blocked) vs
// ref::selective_scan_backward (std::exp, double sums), max |diff| / max |ref| per gradient
// tensor (sums over N states and over time cancel, so per-element relative errors are
// meaningless): float32 sums, exp_fast (~2 ulp) and, blocked, the reassociated block start
// states and adjoints. Measured 1.7e-6 over L up to 4099 (the training backward, blocked vs
// sequential: 2.8e-7); ~10x headroom. A dropped block carry or decay gives O(1e-1 .. 1).
constexpr double kScanBackward = 2e-5;
// The scan backward vs central differences (step 1e-3 relative) of a double-precision forward,
// L 11, relative to each tensor's max: truncation ~1e-7, float32 rounding of the analytic
// gradients ~1e-7. Measured 1.9e-7; a missing term or wrong factor gives >= 1e-2.
constexpr double kScanFd = 1e-5;

}  // namespace jamba::tol

namespace jamba::tol {

// A LoRA adapter applied on the fly (y = x W^T + scale (x A^T) B^T) vs the same adapter merged
// into float32 weights (W + scale B A), tests/test_lora.cpp: the same products in another order
// and rounding, ~1e-7 relative per matmul, as kReassociation. Measured 1.4e-5 (gqa-moe), 8.9e-6
// (dense-tiny), with adapters that move the logits by 2.9 .. 5.3; a scale off by 1% gives
// 0.03 .. 1.2, a transposed A/B or an adapter on the wrong layer O(1).
constexpr float kLoraMergedVsOnTheFly = 1e-4f;

}  // namespace jamba::tol

namespace jamba::tol {

// LoRA gradients vs the full-weight gradient projected (tests/test_lora_train.cpp), relative to
// each tensor's max: the adapter on the fly vs merged into the weights changes the forward by
// float32 reassociation (kLoraMergedVsOnTheFly) and the projections s B^T dW, s dW A^T sum in
// another order. A frozen bf16 base vs the same values in f32: products in another order.
// A missing scale, a transposed A/B or a lost term gives O(1).
constexpr double kLoraGradIdentity = 1e-4;
// LoRA through a bf16 base with bf16 GEMM inputs (activations and dY rounded to bf16, 2^-9
// relative) vs the same weights with f32 inputs: the loss and each adapter gradient (relative to
// its max) move by a few bf16 steps accumulated over the layers. Measured on train-dense: loss
// 5.2e-4, worst gradient 2.3e-2. A wrong dX (transposed W, a lost term) gives O(1).
constexpr double kLoraBf16Loss = 5e-3;
constexpr double kLoraBf16Grad = 5e-2;

}  // namespace jamba::tol
