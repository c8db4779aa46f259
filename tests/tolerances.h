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

}  // namespace jamba::tol
