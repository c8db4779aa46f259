// Plain reference kernels: the truth the fast kernels are tested against. Double accumulation
// where it makes the reference more exact than the fast path.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "kernels/kernels.h"

namespace jamba::ref {

void gemm(const GemmArgs& a) {
  for (int64_t m = 0; m < a.M; ++m)
    for (int64_t n = 0; n < a.N; ++n) {
      double s = a.bias ? a.bias[n] : 0.0;
      for (int64_t k = 0; k < a.K; ++k) s += double(a.A[m * a.lda + k]) * a.W[n * a.ldw + k];
      float& c = a.C[m * a.ldc + n];
      c = a.accumulate ? c + float(s) : float(s);
    }
}

void rmsnorm(const RmsNormArgs& a) {
  for (int64_t m = 0; m < a.M; ++m) {
    const float* x = a.x + m * a.ldx;
    double ss = 0;
    for (int64_t d = 0; d < a.D; ++d) ss += double(x[d]) * x[d];
    const float r = 1.0f / std::sqrt(float(ss / double(a.D)) + a.eps);
    float* y = a.y + m * a.ldy;
    for (int64_t d = 0; d < a.D; ++d) y[d] = a.w[d] * (x[d] * r);
  }
}

void attention(const AttentionArgs& a) {
  const int64_t group = a.nh / a.nkv;
  std::vector<double> s(static_cast<size_t>(a.T));
  for (int64_t i = 0; i < a.Lq; ++i) {
    const int64_t p = a.pos0 + i;
    for (int64_t h = 0; h < a.nh; ++h) {
      const float* q = a.q + i * a.ldq + h * a.hd;
      const int64_t off = (h / group) * a.kv_head_stride;
      auto K = [&](int64_t idx) { return a.k16 ? bf16_to_f32(a.k16[off + idx]) : a.k[off + idx]; };
      auto V = [&](int64_t idx) { return a.v16 ? bf16_to_f32(a.v16[off + idx]) : a.v[off + idx]; };
      double mx = -INFINITY;
      bool any = false;
      for (int64_t j = 0; j < a.T; ++j) {
        const bool ok = j <= p && (!a.key_valid || a.key_valid[j]);
        if (!ok) {
          s[size_t(j)] = -INFINITY;
          continue;
        }
        double d = 0;
        for (int64_t e = 0; e < a.hd; ++e)
          d += double(a.bf16_dot ? bf16_to_f32(f32_to_bf16(q[e])) : q[e]) * K(j * a.hd + e);
        s[size_t(j)] = d * a.scale;
        mx = std::max(mx, s[size_t(j)]);
        any = true;
      }
      float* o = a.out + i * a.ldo + h * a.hd;
      for (int64_t e = 0; e < a.hd; ++e) {
        double acc = 0, den = 0;
        for (int64_t j = 0; j < a.T; ++j) {
          const double w = any ? (std::isinf(s[size_t(j)]) ? 0.0 : std::exp(s[size_t(j)] - mx)) : 1.0;
          acc += w * V(j * a.hd + e);
          den += w;
        }
        o[e] = float(acc / den);
      }
    }
  }
}

void conv1d_silu(const ConvArgs& a) {
  const int64_t K = a.K;
  std::vector<float> win(static_cast<size_t>(K));
  for (int64_t d = 0; d < a.Din; ++d) {
    float* st = a.state + d * K;
    for (int64_t t = 0; t < a.L; ++t) {
      // Shift the window left by one and append the current input (HF decode order).
      for (int64_t j = 0; j + 1 < K; ++j) st[j] = st[j + 1];
      st[K - 1] = a.x[t * a.ldx + d];
      double s = a.bias ? a.bias[d] : 0.0;
      for (int64_t j = 0; j < K; ++j) s += double(a.w[d * K + j]) * st[j];
      const float v = float(s);
      a.out[t * a.ldo + d] = v / (1.0f + std::exp(-v));
    }
  }
}

void selective_scan(const ScanArgs& a) {
  for (int64_t d = a.d0; d < a.d1; ++d) {
    float* h = a.h + d * a.N;
    for (int64_t t = 0; t < a.L; ++t) {
      const float dt = a.dt[t * a.lddt + d];
      const float x = a.x[t * a.ldx + d];
      double y = 0;
      for (int64_t n = 0; n < a.N; ++n) {
        const float dA = std::exp(dt * a.A[d * a.N + n]);
        h[n] = dA * h[n] + dt * a.Bm[t * a.ldb + n] * x;
        y += double(h[n]) * a.Cm[t * a.ldc + n];
      }
      const float z = a.z[t * a.ldz + d];
      a.y[t * a.ldy + d] = (float(y) + a.D[d] * x) * (z / (1.0f + std::exp(-z)));
    }
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = silu_scalar(gate[i]) * up[i];
}

void softplus(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = softplus_scalar(x[i]);
}

}  // namespace jamba::ref
