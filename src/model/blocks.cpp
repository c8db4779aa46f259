#include <algorithm>
#include <cmath>
#include <vector>

#include "core/alloc.h"
#include "core/error.h"
#include "core/threads.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "kernels/scan_blocked.h"
#include "model/blocks.h"

namespace jamba {

namespace kx = jamba::cpu;  // the kernel implementation used by the model

void linear_forward(const Linear& l, const float* x, int64_t M, float* y, int64_t ldy,
                    int64_t ldx) {
  if (ldy < 0) ldy = l.out;
  if (ldx < 0) ldx = l.in;
  if (l.quant == QuantKind::Int8)
    kx::gemm_q8({.M = M, .N = l.out, .K = l.in, .A = x, .lda = ldx,
                 .W = reinterpret_cast<const int8_t*>(l.wq), .ldw = l.in, .scale = l.scale,
                 .C = y, .ldc = ldy, .bias = l.b});
  else if (l.quant == QuantKind::Q4)
    kx::gemm_q4({.M = M, .N = l.out, .K = l.in, .A = x, .lda = ldx, .W = l.wq,
                 .ldw = q4_row_bytes(l.in), .scale = l.q4_scale, .lds = q4_groups(l.in), .C = y,
                 .ldc = ldy, .bias = l.b});
  else if (l.w16)
    kx::gemm_bf16({.M = M, .N = l.out, .K = l.in, .A = x, .lda = ldx, .W = l.w16, .ldw = l.in,
                   .C = y, .ldc = ldy, .bias = l.b, .bf16_activations = l.bf16_activations});
  else
    kx::gemm({.M = M, .N = l.out, .K = l.in, .A = x, .lda = ldx, .W = l.w, .ldw = l.in, .C = y,
              .ldc = ldy, .bias = l.b});
}

namespace {
// Up to this many rows, a Mamba layer computes dt inside the scan's tasks (mamba_forward).
constexpr int64_t kFuseDtMaxM = 32;
}  // namespace

void mamba_forward(const JambaConfig& cfg, const MambaWeights& w, int64_t il,
                   const std::vector<Segment>& segs, const float* x, int64_t M, float* out) {
  const int64_t Din = cfg.d_inner(), N = cfg.mamba_d_state, R = cfg.mamba_dt_rank,
                K = cfg.mamba_d_conv;
  const float eps = float(cfg.rms_norm_eps);
  // 1. [M, D] @ [2Din, D]^T -> [M, 2Din]: x part = cols [0, Din), gate z = [Din, 2Din)
  Scratch xz(static_cast<size_t>(M * 2 * Din));
  linear_forward(w.in_proj, x, M, xz.data());
  // 2-4. mask, causal conv + SiLU, mask again -> xc [M, Din]
  Scratch xc(static_cast<size_t>(M * Din));
  for (const Segment& s : segs) {
    float* xs = xz.data() + s.row0 * 2 * Din;
    if (s.mask)
      for (int64_t t = 0; t < s.len; ++t)
        if (!s.mask[t]) std::fill_n(xs + t * 2 * Din, Din, 0.0f);
    kx::conv1d_silu({.L = s.len, .Din = Din, .K = K, .x = xs, .ldx = 2 * Din,
                     .state = s.state->mamba[size_t(il)].conv.data(), .w = w.conv_w,
                     .bias = w.conv_b, .out = xc.data() + s.row0 * Din, .ldo = Din});
    if (s.mask)
      for (int64_t t = 0; t < s.len; ++t)
        if (!s.mask[t]) std::fill_n(xc.data() + (s.row0 + t) * Din, Din, 0.0f);
  }
  // 5. [M, Din] @ [R+2N, Din]^T -> [M, R+2N] = [dt | B | C]; 6. their RMSNorms (in place)
  const int64_t S = R + 2 * N;
  Scratch sbc(static_cast<size_t>(M * S));
  linear_forward(w.x_proj, xc.data(), M, sbc.data());
  kx::rmsnorm({.M = M, .D = R, .x = sbc.data(), .ldx = S, .w = w.dt_norm, .eps = eps,
               .y = sbc.data(), .ldy = S});
  kx::rmsnorm({.M = M, .D = N, .x = sbc.data() + R, .ldx = S, .w = w.b_norm, .eps = eps,
               .y = sbc.data() + R, .ldy = S});
  kx::rmsnorm({.M = M, .D = N, .x = sbc.data() + R + N, .ldx = S, .w = w.c_norm, .eps = eps,
               .y = sbc.data() + R + N, .ldy = S});
  // 7. dt = softplus([M, R] @ [Din, R]^T + b) -> [M, Din]
  // 8-10. selective scan with D skip and SiLU gate, parallel over sequences x channel blocks;
  // a long sequence in a call with too few channel blocks for the threads runs time-blocked
  // over all threads instead (kernels/scan_blocked.h, cpu::scan_time_blocks).
  Scratch dt(static_cast<size_t>(M * Din));
  Scratch y(static_cast<size_t>(M * Din));
  const int64_t nthr = num_threads();
  int64_t block = std::max<int64_t>(16, (Din / std::max<int64_t>(1, 4 * nthr)) / 16 * 16);
  struct Task {
    const Segment* s;
    int64_t d0, d1;
  };
  std::vector<Task> tasks;
  std::vector<std::pair<const Segment*, int64_t>> blocked;  // (segment, time blocks)
  const int64_t n_tasks = int64_t(segs.size()) * ((Din + block - 1) / block);
  for (const Segment& s : segs) {
    const int64_t P = kx::scan_time_blocks(kx::ScanPass::kForward, s.len, n_tasks, nthr);
    if (P > 1)
      blocked.push_back({&s, P});
    else
      for (int64_t d0 = 0; d0 < Din; d0 += block)
        tasks.push_back({&s, d0, std::min(Din, d0 + block)});
  }
  auto scan = [&](const Segment& s, int64_t d0, int64_t d1) {
    const int64_t r = s.row0;
    return ScanArgs{.L = s.len, .Din = Din, .N = N, .d0 = d0, .d1 = d1,
                    .x = xc.data() + r * Din, .ldx = Din, .dt = dt.data() + r * Din,
                    .lddt = Din, .Bm = sbc.data() + r * S + R, .ldb = S,
                    .Cm = sbc.data() + r * S + R + N, .ldc = S,
                    .z = xz.data() + r * 2 * Din + Din, .ldz = 2 * Din, .A = w.A.data(),
                    .D = w.D, .h = s.state->mamba[size_t(il)].ssm.data(),
                    .y = y.data() + r * Din, .ldy = Din};
  };
  // A few rows (decode): each task also computes its channels' dt (the f32 dt_proj's rows
  // [d0, d1), the same BLAS call on fewer rows, then softplus), so that the dt GEMV, softplus and
  // scan share one parallel region instead of running serially between the GEMVs (moe1b decode:
  // ~5% of the token time, on one thread while the other waited).
  const bool fuse_dt = blocked.empty() && M <= kFuseDtMaxM && w.dt_proj.w &&
                       w.dt_proj.quant == QuantKind::None;
  if (!fuse_dt) {
    linear_forward(w.dt_proj, sbc.data(), M, dt.data(), Din, S);
    kx::softplus(dt.data(), M * Din);
  }
  auto dt_rows = [&](const Segment& s, int64_t d0, int64_t d1) {
    float* o = dt.data() + s.row0 * Din + d0;
    kx::gemm({.M = s.len, .N = d1 - d0, .K = R, .A = sbc.data() + s.row0 * S, .lda = S,
              .W = w.dt_proj.w + d0 * R, .ldw = R, .C = o, .ldc = Din,
              .bias = w.dt_proj.b ? w.dt_proj.b + d0 : nullptr});
    for (int64_t t = 0; t < s.len; ++t) kx::softplus(o + t * Din, d1 - d0);
  };
  // Below this a parallel region costs more than the work.
  const bool par = M * Din * (N + (fuse_dt ? R : 0)) > 32768;
#pragma omp parallel for schedule(dynamic) if (par)
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    if (fuse_dt) dt_rows(*tasks[ti].s, tasks[ti].d0, tasks[ti].d1);
    kx::selective_scan(scan(*tasks[ti].s, tasks[ti].d0, tasks[ti].d1));
  }
  for (const auto& [s, P] : blocked) kx::selective_scan_blocked(scan(*s, 0, Din), P);
  // 11. [M, Din] @ [D, Din]^T -> [M, D]
  linear_forward(w.out_proj, y.data(), M, out);
}

void attention_forward(const JambaConfig& cfg, const AttentionWeights& w, int64_t il,
                       const std::vector<Segment>& segs, const float* x, int64_t M, float* out) {
  const int64_t nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads, hd = cfg.head_dim();
  // [M, D] @ [nh*hd, D]^T -> q [M, nh*hd]; k, v [M, nkv*hd]
  Scratch q(static_cast<size_t>(M * nh * hd)), k(static_cast<size_t>(M * nkv * hd)), v(static_cast<size_t>(M * nkv * hd));
  linear_forward(w.q, x, M, q.data());
  linear_forward(w.k, x, M, k.data());
  linear_forward(w.v, x, M, v.data());
  Scratch o(static_cast<size_t>(M * nh * hd));
  const float scale = 1.0f / std::sqrt(float(hd));
  for (const Segment& s : segs) {
    AttnLayerState& c = s.state->attn[size_t(il)];
    const int64_t T = s.pos0 + s.len;
    c.reserve(nkv, hd, T, s.pos0, cfg.max_position_embeddings);
    for (int64_t g = 0; g < nkv; ++g) {
      const int64_t src = s.row0 * nkv * hd + g * hd;
      c.write(g, s.pos0, s.len, hd, k.data() + src, v.data() + src, nkv * hd);
    }
    kx::attention({.Lq = s.len, .T = T, .nh = nh, .nkv = nkv, .hd = hd, .pos0 = s.pos0,
                   .q = q.data() + s.row0 * nh * hd, .ldq = nh * hd,
                   .k = c.bf16 ? nullptr : c.k.data(), .v = c.bf16 ? nullptr : c.v.data(),
                   .kv_head_stride = c.cap * hd, .key_valid = s.state->key_valid.data(),
                   .scale = scale, .out = o.data() + s.row0 * nh * hd, .ldo = nh * hd,
                   .k16 = c.bf16 ? c.k16.data() : nullptr, .v16 = c.bf16 ? c.v16.data() : nullptr,
                   // a bf16 model (bf16 activations) with a bf16 cache: bf16 dot products
                   .bf16_dot = c.bf16 && w.q.bf16_activations});
  }
  // [M, nh*hd] @ [D, nh*hd]^T -> [M, D]
  linear_forward(w.o, o.data(), M, out);
}

void mlp_forward(const MlpWeights& w, const float* x, int64_t M, float* out) {
  const int64_t I = w.gate.out;
  Scratch g(static_cast<size_t>(M * I)), u(static_cast<size_t>(M * I));
  linear_forward(w.gate, x, M, g.data());  // [M, D] -> [M, I]
  linear_forward(w.up, x, M, u.data());
  kx::silu_mul(g.data(), u.data(), g.data(), M * I);
  linear_forward(w.down, g.data(), M, out);  // [M, I] -> [M, D]
}

void moe_forward(const JambaConfig& cfg, const MoeWeights& w, const float* x, int64_t M,
                 float* out) {
  const int64_t D = cfg.hidden_size, E = cfg.num_experts, k = cfg.num_experts_per_tok;
  // Router: [M, D] @ [E, D]^T -> [M, E]; fp32 softmax; top-k of the probabilities.
  std::vector<float> logits(static_cast<size_t>(M * E));
  linear_forward(w.router, x, M, logits.data());
  std::vector<std::vector<std::pair<int64_t, float>>> rows(static_cast<size_t>(E));  // expert -> (row, p)
  std::vector<int64_t> order(static_cast<size_t>(E));
  for (int64_t m = 0; m < M; ++m) {
    float* l = logits.data() + m * E;
    const float mx = *std::max_element(l, l + E);
    float sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (l[e] = std::exp(l[e] - mx));
    for (int64_t e = 0; e < E; ++e) l[e] /= sum;
    for (int64_t e = 0; e < E; ++e) order[size_t(e)] = e;
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
      return l[a] > l[b] || (l[a] == l[b] && a < b);
    });
    for (int64_t s = 0; s < k; ++s) rows[size_t(order[size_t(s)])].push_back({m, l[order[size_t(s)]]});
  }
  std::fill_n(out, M * D, 0.0f);
  // The active experts run side by side, one per thread (each expert's GEMMs then run on that
  // thread: a parallel region inside a parallel region is serial), which keeps both cores busy
  // when every expert only has a few dozen rows; the combine below stays in ascending e.
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e)
    if (!rows[size_t(e)].empty()) active.push_back(e);
  std::vector<std::vector<float>> yes(active.size());
  auto run = [&](size_t ai) {
    const auto& r = rows[size_t(active[ai])];
    const int64_t Me = int64_t(r.size());
    std::vector<float> xe(static_cast<size_t>(Me * D));
    yes[ai].resize(static_cast<size_t>(Me * D));
    for (int64_t i = 0; i < Me; ++i) std::copy_n(x + r[size_t(i)].first * D, D, xe.data() + i * D);
    mlp_forward(w.experts[size_t(active[ai])], xe.data(), Me, yes[ai].data());  // [Me, D] -> [Me, D]
  };
  // Decode (a few rows per expert, memory-bound GEMVs) keeps the experts in turn, each GEMV split
  // over the threads: running them side by side did not help 8-sequence decode (140 -> 125
  // tokens/s), and even an inactive enclosing region (parallel if(false)) made libgomp start
  // fresh threads for every inner GEMV (1-sequence decode 53 -> 35 tokens/s).
  if (M > 32 && active.size() > 1) {
#pragma omp parallel for schedule(dynamic)
    for (size_t ai = 0; ai < active.size(); ++ai) run(ai);
  } else {
    for (size_t ai = 0; ai < active.size(); ++ai) run(ai);
  }
  for (size_t ai = 0; ai < active.size(); ++ai) {  // ascending e, as the reference's index_add_
    const auto& r = rows[size_t(active[ai])];
    const int64_t Me = int64_t(r.size());
    const std::vector<float>& ye = yes[ai];
    for (int64_t i = 0; i < Me; ++i) {
      float* o = out + r[size_t(i)].first * D;
      const float p = r[size_t(i)].second;
      const float* yy = ye.data() + i * D;
      for (int64_t d = 0; d < D; ++d) o[d] += p * yy[d];
    }
  }
}

}  // namespace jamba
