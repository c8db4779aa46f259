#include "train/ops.h"

#include <cblas.h>

#include <algorithm>

#include "core/error.h"
#include "core/dtype.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba {

void matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc, float alpha) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta,
              C, blasint(ldc));
}

namespace {

// Rows of W dequantized at a time for dx = dy @ W (bf16 / quantized W): a [rows, in] f32 tile.
constexpr int64_t kDequantRows = 256;

// Rows [r0, r1) of a non-f32 matrix as f32, [r1 - r0, in].
void dequantize_rows(const Linear& l, int64_t r0, int64_t r1, float* out) {
  const int64_t in = l.in;
#pragma omp parallel for schedule(static) if ((r1 - r0) * in > 65536)
  for (int64_t r = r0; r < r1; ++r) {
    float* o = out + (r - r0) * in;
    if (l.w16)
      convert_to_f32(DType::BF16, l.w16 + r * in, o, size_t(in));
    else if (l.quant == QuantKind::Int8)
      dequantize_row_int8(reinterpret_cast<const int8_t*>(l.wq) + r * in, l.scale[r], in, o);
    else if (l.quant == QuantKind::Q4)
      dequantize_row_q4(l.wq + r * q4_row_bytes(in), l.q4_scale + r * q4_groups(in), in, o);
    else
      fail("[train] linear layer [", l.out, ", ", l.in, "] holds no weights");
  }
}

}  // namespace

void linear_bwd(const Linear& l, const float* x, int64_t ldx, const float* dy, int64_t lddy,
                int64_t M, float* dx, int64_t lddx, bool accumulate_dx, Grads& G) {
  // dW [out, in] += dy^T [out, M] @ x [M, in]
  if (float* gw = l.w ? G.slot(l.w) : nullptr)
    matmul(true, false, l.out, l.in, M, dy, lddy, x, ldx, 1.0f, gw, l.in);
  if (float* db = l.b ? G.slot(l.b) : nullptr)  // [out]
    for (int64_t m = 0; m < M; ++m)
      for (int64_t o = 0; o < l.out; ++o) db[o] += dy[m * lddy + o];
  // dx [M, in] (+)= dy [M, out] @ W [out, in]
  if (dx) {
    if (l.w) {
      matmul(false, false, M, l.in, l.out, dy, lddy, l.w, l.in, accumulate_dx ? 1.0f : 0.0f, dx,
             lddx);
    } else if (l.w16 && l.bf16_activations) {
      // A bf16 matrix whose forward rounds its inputs to bf16: dY rounded too, W in place.
      cpu::gemm_bf16_kn({.M = M, .N = l.in, .K = l.out, .A = dy, .lda = lddy, .W = l.w16,
                         .ldw = l.in, .C = dx, .ldc = lddx, .accumulate = accumulate_dx});
    } else {
      std::vector<float> tile(static_cast<size_t>(std::min(kDequantRows, l.out) * l.in));
      for (int64_t r0 = 0; r0 < l.out; r0 += kDequantRows) {
        const int64_t r1 = std::min(l.out, r0 + kDequantRows);
        dequantize_rows(l, r0, r1, tile.data());
        const bool acc = accumulate_dx || r0 > 0;
        matmul(false, false, M, l.in, r1 - r0, dy + r0, lddy, tile.data(), l.in,
               acc ? 1.0f : 0.0f, dx, lddx);
      }
    }
  }
  if (!l.lora) return;
  // W' = W + s B A, y = x W'^T: with t = x A^T [M, r],
  //   dB += s dy^T t,  dt = s dy B [M, r],  dA += dt^T x,  dx += dt A.
  const LoraAdapter& a = *l.lora;
  const int64_t r = a.rank;
  std::vector<float> t(static_cast<size_t>(M * r)), dt(static_cast<size_t>(M * r));
  matmul(false, true, M, r, l.in, x, ldx, a.A, l.in, 0.0f, t.data(), r);
  if (float* gB = G.slot(a.B)) matmul(true, false, l.out, r, M, dy, lddy, t.data(), r, 1.0f, gB, r, a.scale);
  matmul(false, false, M, r, l.out, dy, lddy, a.B, r, 0.0f, dt.data(), r, a.scale);
  if (float* gA = G.slot(a.A)) matmul(true, false, r, l.in, M, dt.data(), r, x, ldx, 1.0f, gA, l.in);
  if (dx) matmul(false, false, M, l.in, r, dt.data(), r, a.A, l.in, 1.0f, dx, lddx);
}

void rmsnorm_bwd(int64_t M, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                 const float* dy, int64_t lddy, float* dx, int64_t lddx, bool accumulate_dx,
                 float* dw) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    const float* g = dy + m * lddy;
    float* o = dx + m * lddx;
    float ss = 0.0f;
    for (int64_t d = 0; d < D; ++d) ss += xr[d] * xr[d];
    const float r = 1.0f / std::sqrt(ss / float(D) + eps);
    float dot = 0.0f;  // sum (dy * w) * x
    for (int64_t d = 0; d < D; ++d) dot += g[d] * w[d] * xr[d];
    const float c = dot * r * r * r / float(D);
    for (int64_t d = 0; d < D; ++d) {
      const float v = r * g[d] * w[d] - c * xr[d];
      o[d] = accumulate_dx ? o[d] + v : v;
    }
    if (dw)
      for (int64_t d = 0; d < D; ++d) dw[d] += g[d] * xr[d] * r;
  }
}

}  // namespace jamba
