// Reference backward of the selective scan (kernels/scan_blocked.h): slow, readable, the truth.
// Per channel d: recompute the states h_0..h_L (H[0] = h0) with std::exp, then walk time
// backwards with gh = d objective / d h_t arriving from step t+1:
//   dy_t = dyg_t silu(z_t)                  dz_t = dyg_t y_t silu'(z_t)
//   ghn  = gh + dy_t C_t                    (total d / d h_t)
//   dC_t += dy_t h_t      dB_t += ghn dt_t x_t      dx_t = dy_t D + sum_n ghn dt_t B_t
//   ddt_t = sum_n ghn (h_{t-1} a_t A + B_t x_t)     dA += ghn h_{t-1} a_t dt_t      dD += dy_t x_t
//   gh   = ghn a_t                          (d / d h_{t-1})
#include <cmath>
#include <vector>

#include "kernels/scan_blocked.h"

namespace jamba::ref {

void selective_scan_backward(const ScanBackwardArgs& a) {
  const int64_t L = a.L, N = a.N;
  std::vector<float> H(static_cast<size_t>((L + 1) * N));  // [L+1, N]: H[t+1] = h_t
  std::vector<double> gh(static_cast<size_t>(N));
  for (int64_t d = a.d0; d < a.d1; ++d) {
    const float* A = a.A + d * N;
    for (int64_t n = 0; n < N; ++n) H[size_t(n)] = a.h0 ? a.h0[d * N + n] : 0.0f;
    for (int64_t t = 0; t < L; ++t) {
      const float dt = a.dt[t * a.lddt + d], x = a.x[t * a.ldx + d];
      for (int64_t n = 0; n < N; ++n)
        H[size_t((t + 1) * N + n)] =
            std::exp(dt * A[n]) * H[size_t(t * N + n)] + dt * a.Bm[t * a.ldb + n] * x;
    }
    for (int64_t n = 0; n < N; ++n) gh[size_t(n)] = a.dhL ? a.dhL[d * N + n] : 0.0;
    double dD = 0;
    std::vector<double> dA(static_cast<size_t>(N), 0.0);
    for (int64_t t = L - 1; t >= 0; --t) {
      const float dt = a.dt[t * a.lddt + d], x = a.x[t * a.ldx + d], z = a.z[t * a.ldz + d];
      const float* B = a.Bm + t * a.ldb;
      const float* C = a.Cm + t * a.ldc;
      const float* h = H.data() + (t + 1) * N;  // h_t
      const float* hp = H.data() + t * N;       // h_{t-1}
      double y = double(a.D[d]) * x;
      for (int64_t n = 0; n < N; ++n) y += double(h[n]) * C[n];
      const double s = 1.0 / (1.0 + std::exp(-double(z)));
      const double g = a.dy[t * a.lddy + d];
      const double dy = g * z * s;
      a.dz[t * a.lddz + d] = float(g * y * s * (1.0 + z * (1.0 - s)));
      dD += dy * x;
      double dx = dy * a.D[d], ddt = 0;
      for (int64_t n = 0; n < N; ++n) {
        const double at = std::exp(double(dt) * A[n]);
        const double ghn = gh[size_t(n)] + dy * C[n];
        a.dC[t * a.lddC + n] += float(dy * h[n]);
        a.dB[t * a.lddB + n] += float(ghn * dt * x);
        dx += ghn * dt * B[n];
        ddt += ghn * (hp[n] * at * A[n] + double(B[n]) * x);
        dA[size_t(n)] += ghn * hp[n] * at * dt;
        gh[size_t(n)] = ghn * at;
      }
      a.dx[t * a.lddx + d] = float(dx);
      a.ddt[t * a.ldddt + d] = float(ddt);
    }
    for (int64_t n = 0; n < N; ++n) {
      a.dA[d * N + n] += float(dA[size_t(n)]);
      if (a.dh0) a.dh0[d * N + n] = float(gh[size_t(n)]);
    }
    a.dD[d] += float(dD);
  }
}

}  // namespace jamba::ref
