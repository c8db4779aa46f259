// The training layer loop (the structure of Model::forward, without cache or padding), the
// LM-head cross-entropy and the pooled MoE aux loss, forward and backward.
#include "train/model_grad.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace jamba {

namespace {

// Rows of the LM head processed at once (bounds the [rows, V] logits buffer).
constexpr int64_t kHeadChunk = 256;

struct Target {
  int64_t row;    // b*T + t: the position whose logits predict the label
  int64_t label;  // labels[b, t+1]
};

std::vector<Target> targets(const TrainBatch& b) {
  std::vector<Target> out;
  for (int64_t i = 0; i < b.B; ++i)
    for (int64_t t = 0; t + 1 < b.T; ++t) {
      const int64_t l = b.labels[size_t(i * b.T + t + 1)];
      if (l != kIgnoreIndex) out.push_back({i * b.T + t, l});
    }
  return out;
}

LinearP head_view(const ModelP& m, const JambaConfig& cfg) {
  LinearP l;
  l.w = m.lm_head;
  l.out = cfg.vocab_size;
  l.in = cfg.hidden_size;
  return l;
}

// Cross-entropy over the target rows of hn [M, D]. With dhn: also writes dhn (rows of the
// targets; others untouched) and accumulates the LM-head gradient, both scaled by `scale`.
double head_ce(const LinearP& head, const std::vector<Target>& tg, const float* hn,
               float* dhn, double scale, Grads* G) {
  const int64_t D = head.in, V = head.out;
  double total = 0.0;
  std::vector<float> xs, z;
  for (size_t c0 = 0; c0 < tg.size(); c0 += kHeadChunk) {
    const int64_t C = std::min<int64_t>(kHeadChunk, int64_t(tg.size() - c0));
    xs.resize(static_cast<size_t>(C * D));  // [C, D] gathered rows
    z.resize(static_cast<size_t>(C * V));   // [C, D] @ [V, D]^T -> [C, V]
    for (int64_t i = 0; i < C; ++i) std::copy_n(hn + tg[c0 + size_t(i)].row * D, D, xs.data() + i * D);
    linear_fwd(head, xs.data(), D, C, z.data(), V);
    for (int64_t i = 0; i < C; ++i) {
      float* zr = z.data() + i * V;
      const int64_t label = tg[c0 + size_t(i)].label;
      const float mx = *std::max_element(zr, zr + V);
      double se = 0.0;
      for (int64_t v = 0; v < V; ++v) se += std::exp(double(zr[v] - mx));
      const double lse = double(mx) + std::log(se);
      total += lse - double(zr[label]);
      if (dhn) {  // d/dz = (softmax - onehot) * scale, in place
        for (int64_t v = 0; v < V; ++v) zr[v] = float(std::exp(double(zr[v]) - lse) * scale);
        zr[label] -= float(scale);
      }
    }
    if (dhn) {
      std::vector<float> dxs(static_cast<size_t>(C * D));  // [C, V] @ [V, D] -> [C, D]
      linear_bwd(head, xs.data(), D, z.data(), V, C, dxs.data(), D, false, *G);
      for (int64_t i = 0; i < C; ++i)
        std::copy_n(dxs.data() + i * D, D, dhn + tg[c0 + size_t(i)].row * D);
    }
  }
  return total;
}

void check_batch(const JambaConfig& cfg, const TrainBatch& b) {
  JAMBA_CHECK(b.B > 0 && b.T > 0, "[train] empty batch: B=", b.B, " T=", b.T);
  JAMBA_CHECK(int64_t(b.ids.size()) == b.B * b.T && int64_t(b.labels.size()) == b.B * b.T,
              "[train] batch of B=", b.B, " T=", b.T, " has ", b.ids.size(), " ids and ",
              b.labels.size(), " labels");
  for (size_t i = 0; i < b.ids.size(); ++i) {
    JAMBA_CHECK(b.ids[i] >= 0 && b.ids[i] < cfg.vocab_size, "[train] token id ", b.ids[i],
                " at [", int64_t(i) / b.T, ",", int64_t(i) % b.T, "] is outside [0, ",
                cfg.vocab_size, ")");
    const int64_t l = b.labels[i];
    JAMBA_CHECK(l == kIgnoreIndex || (l >= 0 && l < cfg.vocab_size), "[train] label ", l, " at [",
                int64_t(i) / b.T, ",", int64_t(i) % b.T, "] is neither -100 nor in [0, ",
                cfg.vocab_size, ")");
  }
}

bool aux_enabled(const JambaConfig& cfg) {
  return cfg.output_router_logits && cfg.n_moe_layers() > 0;
}

}  // namespace

int64_t TrainBatch::n_targets() const {
  int64_t n = 0;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 1; t < T; ++t) n += labels[size_t(i * T + t)] != kIgnoreIndex;
  return n;
}

TrainBatch TrainBatch::rows(int64_t b0, int64_t n) const {
  JAMBA_CHECK(b0 >= 0 && n > 0 && b0 + n <= B, "[train] rows [", b0, ", ", b0 + n,
              ") outside a batch of ", B);
  TrainBatch r;
  r.B = n;
  r.T = T;
  r.ids.assign(ids.begin() + b0 * T, ids.begin() + (b0 + n) * T);
  r.labels.assign(labels.begin() + b0 * T, labels.begin() + (b0 + n) * T);
  return r;
}

LossValues train_forward(const ParamStore& P, const TrainBatch& b, const LossOptions& o,
                         Tape* tape_out) {
  const JambaConfig& cfg = P.cfg;
  check_batch(cfg, b);
  const ModelP mp = model_view(P);
  const int64_t D = cfg.hidden_size, M = b.B * b.T, E = cfg.num_experts;
  const float eps = float(cfg.rms_norm_eps);
  Tape local;
  Tape& tape = tape_out ? *tape_out : local;
  tape.layers.assign(cfg.layers.size(), {});
  // Embedding gather: [M] -> h [M, D]
  std::vector<float> h(static_cast<size_t>(M * D)), tmp(static_cast<size_t>(M * D));
  for (int64_t m = 0; m < M; ++m) std::copy_n(mp.embed.w + int64_t(b.ids[size_t(m)]) * D, D, h.data() + m * D);
  std::vector<double> f(static_cast<size_t>(E), 0.0), Psum(static_cast<size_t>(E), 0.0);
  for (size_t il = 0; il < cfg.layers.size(); ++il) {
    const LayerSpec& spec = cfg.layers[il];
    const LayerP& lp = mp.layers[il];
    LayerTape& lt = tape.layers[il];
    lt.h_in = h;
    lt.xn1.resize(static_cast<size_t>(M * D));  // [M, D]
    rmsnorm_fwd(M, D, h.data(), D, lp.input_norm.w, eps, lt.xn1.data(), D);
    if (spec.mixer == MixerKind::Mamba)
      mamba_train_forward(cfg, lp.mamba, b.B, b.T, lt.xn1.data(), tmp.data(), &lt.mamba);
    else
      attention_train_forward(cfg, lp.attn, b.B, b.T, lt.xn1.data(), tmp.data(), &lt.attn);
    for (int64_t i = 0; i < M * D; ++i) h[size_t(i)] += tmp[size_t(i)];
    lt.h_mid = h;
    lt.xn2.resize(static_cast<size_t>(M * D));  // [M, D]
    rmsnorm_fwd(M, D, h.data(), D, lp.pre_ff_norm.w, eps, lt.xn2.data(), D);
    if (spec.ffn == FfnKind::Moe) {
      moe_train_forward(cfg, lp.moe, lt.xn2.data(), M, tmp.data(), &lt.moe);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t e = 0; e < E; ++e) Psum[size_t(e)] += lt.moe.probs[size_t(m * E + e)];
      for (int32_t e : lt.moe.sel) f[size_t(e)] += 1.0;
    } else {
      mlp_train_forward(lp.mlp, lt.xn2.data(), M, tmp.data(), &lt.mlp);
    }
    for (int64_t i = 0; i < M * D; ++i) h[size_t(i)] += tmp[size_t(i)];
  }
  tape.h_final = std::move(h);
  tape.hn.resize(static_cast<size_t>(M * D));  // [M, D]
  rmsnorm_fwd(M, D, tape.h_final.data(), D, mp.final_norm.w, eps, tape.hn.data(), D);

  LossValues r;
  const std::vector<Target> tg = targets(b);
  r.n_targets = int64_t(tg.size());
  r.ce_sum = head_ce(head_view(mp, cfg), tg, tape.hn.data(), nullptr, 0.0, nullptr);
  const double denom = o.ce_denominator > 0 ? o.ce_denominator : double(r.n_targets);
  JAMBA_CHECK(denom > 0, "[train] no target: every entry of labels[:, 1:] is -100");
  tape.ce_scale = 1.0 / denom;
  r.loss = float(r.ce_sum / double(std::max<int64_t>(r.n_targets, 1)));
  if (r.n_targets == 0) r.loss = std::numeric_limits<float>::quiet_NaN();  // torch: 0/0
  r.total_loss = r.loss;
  r.objective = r.ce_sum * tape.ce_scale;
  tape.aux_dp.clear();
  if (aux_enabled(cfg)) {
    // aux = E * sum_e f_e P_e over the pooled rows; d aux / d p[row, e] = E f_e / rows.
    const double rows = double(cfg.n_moe_layers() * M);
    r.aux_rows = cfg.n_moe_layers() * M;
    double aux = 0.0;
    for (int64_t e = 0; e < E; ++e) aux += (f[size_t(e)] / rows) * (Psum[size_t(e)] / rows);
    r.aux_loss = float(double(E) * aux);
    const double coef = cfg.router_aux_loss_coef;
    r.total_loss = r.loss + float(coef) * r.aux_loss;
    const double wa = o.aux_weight >= 0 ? o.aux_weight : coef;
    r.objective += wa * double(E) * aux;
    if (wa != 0.0) {
      tape.aux_dp.resize(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e)
        tape.aux_dp[size_t(e)] = float(wa * double(E) * f[size_t(e)] / rows / rows);
    }
  }
  return r;
}

void train_backward(const ParamStore& P, const TrainBatch& b, const Tape& tape, Grads& G) {
  const JambaConfig& cfg = P.cfg;
  const ModelP mp = model_view(P);
  const int64_t D = cfg.hidden_size, M = b.B * b.T;
  const float eps = float(cfg.rms_norm_eps);
  JAMBA_CHECK(tape.layers.size() == cfg.layers.size() && int64_t(tape.hn.size()) == M * D,
              "[train] backward: the tape does not belong to this batch/model");
  // LM head + cross-entropy -> dhn [M, D]; final norm -> dh [M, D]
  std::vector<float> dhn(static_cast<size_t>(M * D), 0.0f), dh(static_cast<size_t>(M * D));
  head_ce(head_view(mp, cfg), targets(b), tape.hn.data(), dhn.data(), tape.ce_scale, &G);
  rmsnorm_bwd(M, D, tape.h_final.data(), D, mp.final_norm.w, eps, dhn.data(), D, dh.data(), D,
              false, G.acc(mp.final_norm.idx));
  std::vector<float> tmp(static_cast<size_t>(M * D));  // [M, D]
  for (size_t il = cfg.layers.size(); il-- > 0;) {
    const LayerSpec& spec = cfg.layers[il];
    const LayerP& lp = mp.layers[il];
    const LayerTape& lt = tape.layers[il];
    // h_out = h_mid + ffn(norm(h_mid))
    if (spec.ffn == FfnKind::Moe)
      moe_train_backward(cfg, lp.moe, lt.xn2.data(), lt.moe, dh.data(), M, tape.aux_dp,
                         tmp.data(), G);
    else
      mlp_train_backward(lp.mlp, lt.xn2.data(), lt.mlp, dh.data(), M, tmp.data(), false, G);
    rmsnorm_bwd(M, D, lt.h_mid.data(), D, lp.pre_ff_norm.w, eps, tmp.data(), D, dh.data(), D,
                true, G.acc(lp.pre_ff_norm.idx));
    // h_mid = h_in + mixer(norm(h_in))
    if (spec.mixer == MixerKind::Mamba)
      mamba_train_backward(cfg, lp.mamba, b.B, b.T, lt.xn1.data(), lt.mamba, dh.data(),
                           tmp.data(), G);
    else
      attention_train_backward(cfg, lp.attn, b.B, b.T, lt.xn1.data(), lt.attn, dh.data(),
                               tmp.data(), G);
    rmsnorm_bwd(M, D, lt.h_in.data(), D, lp.input_norm.w, eps, tmp.data(), D, dh.data(), D, true,
                G.acc(lp.input_norm.idx));
  }
  // Embedding: scatter-add; the padding_idx row (pad_token_id) receives nothing from the
  // lookup (torch nn.Embedding(padding_idx=...)), but the gradient tensor exists.
  float* gE = G.acc(mp.embed.idx);  // [V, D]
  for (int64_t m = 0; m < M; ++m) {
    const int64_t tok = b.ids[size_t(m)];
    if (tok == cfg.pad_token_id) continue;
    for (int64_t d = 0; d < D; ++d) gE[tok * D + d] += dh[size_t(m * D + d)];
  }
}

LossValues forward_backward(const ParamStore& P, const TrainBatch& b, const LossOptions& o,
                            Grads& G) {
  Tape tape;
  const LossValues r = train_forward(P, b, o, &tape);
  train_backward(P, b, tape, G);
  return r;
}

LossValues accumulate_shard_gradients(const ParamStore& P, const TrainBatch& b,
                                      int64_t micro_rows, int64_t global_rows,
                                      int64_t global_targets, Grads& G) {
  const JambaConfig& cfg = P.cfg;
  JAMBA_CHECK(global_targets > 0, "[train] no target: every entry of labels[:, 1:] is -100");
  JAMBA_CHECK(global_rows >= b.B && b.B > 0, "[train] shard of ", b.B, " rows in a global batch of ",
              global_rows);
  if (micro_rows <= 0) micro_rows = b.B;
  const double coef = aux_enabled(cfg) ? cfg.router_aux_loss_coef : 0.0;
  LossValues total;
  double aux = 0.0;
  for (int64_t b0 = 0; b0 < b.B; b0 += micro_rows) {
    const int64_t n = std::min(micro_rows, b.B - b0);
    const double share = double(n) / double(global_rows);
    LossOptions o;
    o.ce_denominator = double(global_targets);
    o.aux_weight = coef * share;
    const LossValues r = micro_rows >= b.B ? forward_backward(P, b, o, G)
                                           : forward_backward(P, b.rows(b0, n), o, G);
    total.ce_sum += r.ce_sum;
    total.n_targets += r.n_targets;
    total.aux_rows += r.aux_rows;
    aux += share * double(r.aux_loss);
  }
  total.aux_loss = float(aux);
  return total;
}

LossValues finish_shard_losses(const JambaConfig& cfg, double ce_sum, double aux_part,
                               int64_t global_targets) {
  const double coef = aux_enabled(cfg) ? cfg.router_aux_loss_coef : 0.0;
  LossValues v;
  v.ce_sum = ce_sum;
  v.n_targets = global_targets;
  v.loss = float(ce_sum / double(global_targets));
  v.aux_loss = float(aux_part);
  v.total_loss = v.loss + float(coef) * v.aux_loss;
  return v;
}

LossValues accumulate_gradients(const ParamStore& P, const TrainBatch& b, int64_t micro_rows,
                                Grads& G) {
  if (micro_rows <= 0 || micro_rows >= b.B) return forward_backward(P, b, {}, G);
  const int64_t n_global = b.n_targets();
  const LossValues r = accumulate_shard_gradients(P, b, micro_rows, b.B, n_global, G);
  LossValues total = finish_shard_losses(P.cfg, r.ce_sum, r.aux_loss, n_global);
  total.aux_rows = r.aux_rows;
  return total;
}

}  // namespace jamba
