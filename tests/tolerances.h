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
// 0.14, F16 0.016; the bounds leave ~3x headroom. A dtype bug (wrong
// conversion, swapped bytes) gives O(1..10).
constexpr float kBf16WeightsLogits = 0.5f;
constexpr float kF16WeightsLogits = 0.05f;
// Fraction of positions whose top-1 token must agree with the F32 run: rounding may only flip
// positions whose top-2 margin is below the logit error (measured: BF16 62/64 on dense-tiny).
constexpr double kHalfWeightsTop1 = 0.9;

}  // namespace jamba::tol
