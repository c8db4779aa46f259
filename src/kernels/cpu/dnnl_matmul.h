// oneDNN matmul for the large-M GEMMs of prefill (internal to the cpu kernels).
#pragma once
#include <cstdint>

namespace jamba::cpu::detail {

// C[M,N] (ldc, f32) = A[M,K] (lda, bf16) @ W[N,K]^T (ldw, bf16) (+ bias[N] if non-null)
// (+ C if accumulate), W used in place in its row-major [N, K] layout. Runs on the OpenMP
// threads. Returns false (and does nothing) when oneDNN is not built in or rejects the shape;
// the caller then takes its own path. w_kn: W is stored [K, N] (row stride ldw) instead, i.e.
// C = A @ W (attention's P V with V in its cache layout).
bool dnnl_matmul_bf16(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                      const uint16_t* W, int64_t ldw, float* C, int64_t ldc, const float* bias,
                      bool accumulate, bool w_kn = false);

// C[M,N] (ldc, int32) = A[M,K] (lda; int8, or uint8 if a_unsigned) @ W[N,K]^T (ldw, int8), the
// exact integer products (oneDNN's VNNI int8 matmul; the caller keeps each sum inside int32).
// Returns false when oneDNN is not built in or rejects the shape.
bool dnnl_matmul_i8(int64_t M, int64_t N, int64_t K, const void* A, bool a_unsigned, int64_t lda,
                    const int8_t* W, int64_t ldw, int32_t* C, int64_t ldc);

bool dnnl_available();

}  // namespace jamba::cpu::detail
