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

void embed_rows(const Linear& embed, const int32_t* ids, int64_t n, float* out) {
  const int64_t D = embed.in;
  for (int64_t i = 0; i < n; ++i) {
    float* dst = out + i * D;
    if (embed.w16)
      convert_to_f32(DType::BF16, embed.w16 + int64_t(ids[i]) * D, dst, size_t(D));
    else
      std::copy_n(embed.w + int64_t(ids[i]) * D, D, dst);
  }
}

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
  if (l.lora) lora_forward(*l.lora, l.out, l.in, x, ldx, M, y, ldy);
}

void lora_forward(const LoraAdapter& a, int64_t out, int64_t in, const float* x, int64_t ldx,
                  int64_t M, float* y, int64_t ldy) {
  Scratch t(static_cast<size_t>(M * a.rank));  // [M, in] @ [r, in]^T -> [M, r]
  kx::gemm({.M = M, .N = a.rank, .K = in, .A = x, .lda = ldx, .W = a.A, .ldw = in, .C = t.data(),
            .ldc = a.rank});
  // y += (scale * t) @ B^T: [M, r] @ [out, r]^T
  for (int64_t i = 0; i < M * a.rank; ++i) t[size_t(i)] *= a.scale;
  kx::gemm({.M = M, .N = out, .K = a.rank, .A = t.data(), .lda = a.rank, .W = a.B, .ldw = a.rank,
            .C = y, .ldc = ldy, .accumulate = true});
}

namespace {
// Up to this many rows, a Mamba layer computes dt inside the scan's tasks (mamba_forward).
constexpr int64_t kFuseDtMaxM = 32;

// A buffer of n floats: the tape's vector `v` when taping (it is kept), else scratch `s`.
float* buffer(std::vector<float>* v, Scratch& s, size_t n) {
  if (!v) {
    if (s.size() < n) s = Scratch(n);
    return s.data();
  }
  v->resize(n);
  return v->data();
}
}  // namespace

FreshSequences::FreshSequences(const JambaConfig& cfg, int64_t B, int64_t T) {
  states_.reserve(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    states_.push_back(SequenceState::create(cfg));
    states_.back().key_valid.assign(static_cast<size_t>(T), 1);
    segs_.push_back({&states_.back(), b * T, T, 0, nullptr});
  }
}

void mamba_forward(const JambaConfig& cfg, const MambaWeights& w, int64_t il,
                   const std::vector<Segment>& segs, const float* x, int64_t M, float* out,
                   MambaTape* tape) {
  const int64_t Din = cfg.d_inner(), N = cfg.mamba_d_state, R = cfg.mamba_dt_rank,
                K = cfg.mamba_d_conv;
  const float eps = float(cfg.rms_norm_eps);
  Scratch xz_s, xc_s, sbc_s, dt_s, y_s;
  // 1. [M, D] @ [2Din, D]^T -> [M, 2Din]: x part = cols [0, Din), gate z = [Din, 2Din)
  float* xz = buffer(tape ? &tape->xz : nullptr, xz_s, static_cast<size_t>(M * 2 * Din));
  linear_forward(w.in_proj, x, M, xz);
  // 2-4. mask, causal conv + SiLU, mask again -> xc [M, Din]
  float* xc = buffer(tape ? &tape->xc : nullptr, xc_s, static_cast<size_t>(M * Din));
  for (const Segment& s : segs) {
    float* xs = xz + s.row0 * 2 * Din;
    if (s.mask)
      for (int64_t t = 0; t < s.len; ++t)
        if (!s.mask[t]) std::fill_n(xs + t * 2 * Din, Din, 0.0f);
    kx::conv1d_silu({.L = s.len, .Din = Din, .K = K, .x = xs, .ldx = 2 * Din,
                     .state = s.state->mamba[size_t(il)].conv.data(), .w = w.conv_w,
                     .bias = w.conv_b, .out = xc + s.row0 * Din, .ldo = Din});
    if (s.mask)
      for (int64_t t = 0; t < s.len; ++t)
        if (!s.mask[t]) std::fill_n(xc + (s.row0 + t) * Din, Din, 0.0f);
  }
  // 5. [M, Din] @ [R+2N, Din]^T -> [M, R+2N] = [dt | B | C]; 6. their RMSNorms (in place)
  const int64_t S = R + 2 * N;
  float* sbc = buffer(tape ? &tape->sbc : nullptr, sbc_s, static_cast<size_t>(M * S));
  linear_forward(w.x_proj, xc, M, sbc);
  if (tape) tape->sbc_raw.assign(sbc, sbc + M * S);
  kx::rmsnorm({.M = M, .D = R, .x = sbc, .ldx = S, .w = w.dt_norm, .eps = eps, .y = sbc,
               .ldy = S});
  kx::rmsnorm({.M = M, .D = N, .x = sbc + R, .ldx = S, .w = w.b_norm, .eps = eps, .y = sbc + R,
               .ldy = S});
  kx::rmsnorm({.M = M, .D = N, .x = sbc + R + N, .ldx = S, .w = w.c_norm, .eps = eps,
               .y = sbc + R + N, .ldy = S});
  // 7. dt = softplus([M, R] @ [Din, R]^T + b) -> [M, Din]
  // 8-10. selective scan with D skip and SiLU gate, parallel over sequences x channel blocks;
  // a long sequence in a call with too few channel blocks for the threads runs time-blocked
  // over all threads instead (kernels/scan_blocked.h, cpu::scan_time_blocks).
  float* dt = buffer(tape ? &tape->dt : nullptr, dt_s, static_cast<size_t>(M * Din));
  float* y = buffer(tape ? &tape->yg : nullptr, y_s, static_cast<size_t>(M * Din));
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
                    .x = xc + r * Din, .ldx = Din, .dt = dt + r * Din, .lddt = Din,
                    .Bm = sbc + r * S + R, .ldb = S, .Cm = sbc + r * S + R + N, .ldc = S,
                    .z = xz + r * 2 * Din + Din, .ldz = 2 * Din, .A = w.A.data(), .D = w.D,
                    .h = s.state->mamba[size_t(il)].ssm.data(), .y = y + r * Din, .ldy = Din};
  };
  // A few rows (decode): each task also computes its channels' dt (the f32 dt_proj's rows
  // [d0, d1), the same BLAS call on fewer rows, then softplus), so that the dt GEMV, softplus and
  // scan share one parallel region instead of running serially between the GEMVs (moe1b decode:
  // ~5% of the token time, on one thread while the other waited).
  const bool fuse_dt = blocked.empty() && M <= kFuseDtMaxM && w.dt_proj.w &&
                       w.dt_proj.quant == QuantKind::None && !w.dt_proj.lora && !tape;
  if (!fuse_dt) {
    linear_forward(w.dt_proj, sbc, M, dt, Din, S);
    if (tape) tape->dt_pre.assign(dt, dt + M * Din);
    kx::softplus(dt, M * Din);
  }
  auto dt_rows = [&](const Segment& s, int64_t d0, int64_t d1) {
    float* o = dt + s.row0 * Din + d0;
    kx::gemm({.M = s.len, .N = d1 - d0, .K = R, .A = sbc + s.row0 * S, .lda = S,
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
  linear_forward(w.out_proj, y, M, out);
}

void attention_forward(const JambaConfig& cfg, const AttentionWeights& w, int64_t il,
                       const std::vector<Segment>& segs, const float* x, int64_t M, float* out,
                       AttnTape* tape) {
  const int64_t nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads, hd = cfg.head_dim();
  // [M, D] @ [nh*hd, D]^T -> q [M, nh*hd]; k, v [M, nkv*hd]
  Scratch q_s, k_s, v_s, o_s;
  float* q = buffer(tape ? &tape->q : nullptr, q_s, static_cast<size_t>(M * nh * hd));
  float* k = buffer(tape ? &tape->k : nullptr, k_s, static_cast<size_t>(M * nkv * hd));
  float* v = buffer(tape ? &tape->v : nullptr, v_s, static_cast<size_t>(M * nkv * hd));
  linear_forward(w.q, x, M, q);
  linear_forward(w.k, x, M, k);
  linear_forward(w.v, x, M, v);
  float* o = buffer(tape ? &tape->o : nullptr, o_s, static_cast<size_t>(M * nh * hd));
  const float scale = 1.0f / std::sqrt(float(hd));
  for (const Segment& s : segs) {
    AttnLayerState& c = s.state->attn[size_t(il)];
    const int64_t T = s.pos0 + s.len;
    c.reserve(nkv, hd, T, s.pos0, cfg.max_position_embeddings);
    for (int64_t g = 0; g < nkv; ++g) {
      const int64_t src = s.row0 * nkv * hd + g * hd;
      c.write(g, s.pos0, s.len, hd, k + src, v + src, nkv * hd);
    }
    kx::attention({.Lq = s.len, .T = T, .nh = nh, .nkv = nkv, .hd = hd, .pos0 = s.pos0,
                   .q = q + s.row0 * nh * hd, .ldq = nh * hd,
                   .k = c.bf16 ? nullptr : c.k.data(), .v = c.bf16 ? nullptr : c.v.data(),
                   .kv_head_stride = c.cap * hd, .key_valid = s.state->key_valid.data(),
                   .scale = scale, .out = o + s.row0 * nh * hd, .ldo = nh * hd,
                   .k16 = c.bf16 ? c.k16.data() : nullptr, .v16 = c.bf16 ? c.v16.data() : nullptr,
                   // a bf16 model (bf16 activations) with a bf16 cache: bf16 dot products
                   .bf16_dot = c.bf16 && w.q.bf16_activations});
  }
  // [M, nh*hd] @ [D, nh*hd]^T -> [M, D]
  linear_forward(w.o, o, M, out);
}

void mlp_forward(const MlpWeights& w, const float* x, int64_t M, float* out, MlpTape* tape) {
  const int64_t I = w.gate.out;
  Scratch g_s, u_s, a_s;
  float* g = buffer(tape ? &tape->g : nullptr, g_s, static_cast<size_t>(M * I));
  float* u = buffer(tape ? &tape->u : nullptr, u_s, static_cast<size_t>(M * I));
  linear_forward(w.gate, x, M, g);  // [M, D] -> [M, I]
  linear_forward(w.up, x, M, u);
  float* a = tape ? buffer(nullptr, a_s, static_cast<size_t>(M * I)) : g;  // silu(g) * u
  kx::silu_mul(g, u, a, M * I);
  linear_forward(w.down, a, M, out);  // [M, I] -> [M, D]
}

void moe_forward(const JambaConfig& cfg, const MoeWeights& w, const float* x, int64_t M,
                 float* out, MoeTape* tape) {
  const int64_t D = cfg.hidden_size, E = cfg.num_experts, k = cfg.num_experts_per_tok;
  // Router: [M, D] @ [E, D]^T -> [M, E]; fp32 softmax; top-k of the probabilities.
  std::vector<float> logits(static_cast<size_t>(M * E));
  linear_forward(w.router, x, M, logits.data());
  if (tape) tape->sel.clear();
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
    if (tape)
      for (int64_t s = 0; s < k; ++s) tape->sel.push_back(int32_t(order[size_t(s)]));
  }
  if (tape) {
    tape->probs = logits;  // now the probabilities
    tape->rows.assign(static_cast<size_t>(E), {});
    for (int64_t e = 0; e < E; ++e)
      for (const auto& [m, p] : rows[size_t(e)]) tape->rows[size_t(e)].push_back(m);
    tape->xe.assign(static_cast<size_t>(E), {});
    tape->ye.assign(static_cast<size_t>(E), {});
    tape->mlp.assign(static_cast<size_t>(E), {});
  }
  std::fill_n(out, M * D, 0.0f);
  // The active experts run side by side, one per thread (each expert's GEMMs then run on that
  // thread: a parallel region inside a parallel region is serial), which keeps both cores busy
  // when every expert only has a few dozen rows; the combine below stays in ascending e.
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e)
    if (!rows[size_t(e)].empty()) active.push_back(e);
  std::vector<std::vector<float>> xes(active.size()), yes(active.size());
  auto run = [&](size_t ai) {
    const int64_t e = active[ai];
    const auto& r = rows[size_t(e)];
    const int64_t Me = int64_t(r.size());
    std::vector<float>& xe = tape ? tape->xe[size_t(e)] : xes[ai];
    std::vector<float>& ye = tape ? tape->ye[size_t(e)] : yes[ai];
    xe.resize(static_cast<size_t>(Me * D));
    ye.resize(static_cast<size_t>(Me * D));
    for (int64_t i = 0; i < Me; ++i) std::copy_n(x + r[size_t(i)].first * D, D, xe.data() + i * D);
    mlp_forward(w.experts[size_t(e)], xe.data(), Me, ye.data(),  // [Me, D] -> [Me, D]
                tape ? &tape->mlp[size_t(e)] : nullptr);
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
    const std::vector<float>& ye = tape ? tape->ye[size_t(active[ai])] : yes[ai];
    for (int64_t i = 0; i < Me; ++i) {
      float* o = out + r[size_t(i)].first * D;
      const float p = r[size_t(i)].second;
      const float* yy = ye.data() + i * D;
      for (int64_t d = 0; d < D; ++d) o[d] += p * yy[d];
    }
  }
}

void forward_layers(const JambaConfig& cfg, const Weights& w, const std::vector<Segment>& segs,
                    float* h, int64_t M, size_t l0, size_t l1, LayerTape* tapes,
                    std::vector<std::vector<float>>* hidden) {
  const int64_t D = cfg.hidden_size;
  const size_t MD = static_cast<size_t>(M * D);
  Scratch xn_s, tmp(MD);
  for (size_t il = l0; il < l1; ++il) {
    const LayerSpec& spec = cfg.layers[il];
    const LayerWeights& lw = w.layers[il];
    LayerTape* t = tapes ? &tapes[il - l0] : nullptr;
    if (t) t->h_in.assign(h, h + MD);
    float* xn = buffer(t ? &t->xn1 : nullptr, xn_s, MD);
    const RmsNormArgs norm{.M = M, .D = D, .x = h, .ldx = D, .w = lw.input_norm,
                           .eps = float(cfg.rms_norm_eps), .y = xn, .ldy = D};
    kx::rmsnorm(norm);
    const auto il_ = int64_t(il);
    if (spec.mixer == MixerKind::Mamba)
      mamba_forward(cfg, lw.mamba, il_, segs, xn, M, tmp.data(), t ? &t->mamba : nullptr);
    else
      attention_forward(cfg, lw.attn, il_, segs, xn, M, tmp.data(), t ? &t->attn : nullptr);
    for (size_t i = 0; i < MD; ++i) h[i] += tmp[i];
    if (t) t->h_mid.assign(h, h + MD);
    RmsNormArgs n2 = norm;
    n2.w = lw.pre_ff_norm;
    if (t) n2.y = xn = buffer(&t->xn2, xn_s, MD);
    kx::rmsnorm(n2);
    if (spec.ffn == FfnKind::Moe)
      moe_forward(cfg, lw.moe, xn, M, tmp.data(), t ? &t->moe : nullptr);
    else
      mlp_forward(lw.mlp, xn, M, tmp.data(), t ? &t->mlp : nullptr);
    for (size_t i = 0; i < MD; ++i) h[i] += tmp[i];
    if (hidden && il + 1 < cfg.layers.size()) hidden->emplace_back(h, h + MD);
  }
}

}  // namespace jamba
