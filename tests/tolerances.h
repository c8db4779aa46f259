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
