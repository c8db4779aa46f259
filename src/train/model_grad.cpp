// The training step around the model's forward (forward_layers over fresh sequences, saving a
// tape; activation checkpointing by groups of layers), the LM-head cross-entropy and the pooled
// MoE aux loss, and the backward through the layers.
#include "train/model_grad.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "kernels/kernels.h"

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

// Cross-entropy over the target rows of hn [M, D]. With dhn: also writes dhn (rows of the
// targets; others untouched) and accumulates the LM-head gradient, both scaled by `scale`.
double head_ce(const Linear& head, const std::vector<Target>& tg, const float* hn,
               float* dhn, double scale, Grads* G) {
  const int64_t D = head.in, V = head.out;
  double total = 0.0;
  std::vector<float> xs, z;
  for (size_t c0 = 0; c0 < tg.size(); c0 += kHeadChunk) {
    const int64_t C = std::min<int64_t>(kHeadChunk, int64_t(tg.size() - c0));
    xs.resize(static_cast<size_t>(C * D));  // [C, D] gathered rows
    z.resize(static_cast<size_t>(C * V));   // [C, D] @ [V, D]^T -> [C, V]
    for (int64_t i = 0; i < C; ++i) std::copy_n(hn + tg[c0 + size_t(i)].row * D, D, xs.data() + i * D);
    linear_forward(head, xs.data(), C, z.data(), V, D);
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

namespace {

// Layers [g * group, min(L, (g + 1) * group)).
std::pair<size_t, size_t> group_layers(const JambaConfig& cfg, int64_t group, size_t g) {
  const size_t l0 = g * size_t(group);
  return {l0, std::min(cfg.layers.size(), l0 + size_t(group))};
}

// The forward of one group of layers over fresh sequences: h [M, D] in / out, tapes [l1 - l0].
void forward_group(const TrainTarget& m, const TrainBatch& b, size_t l0, size_t l1, float* h,
                   LayerTape* tapes) {
  const FreshSequences seqs(m.cfg, b.B, b.T);
  forward_layers(m.cfg, m.W, seqs.segments(), h, b.B * b.T, l0, l1, tapes, nullptr);
}

}  // namespace

LossValues train_forward(const TrainTarget& m, const TrainBatch& b, const LossOptions& o,
                         Tape* tape_out) {
  const JambaConfig& cfg = m.cfg;
  check_batch(cfg, b);
  const int64_t D = cfg.hidden_size, M = b.B * b.T, E = cfg.num_experts;
  const int64_t L = int64_t(cfg.layers.size());
  Tape local;
  Tape& tape = tape_out ? *tape_out : local;
  tape.layers.assign(cfg.layers.size(), {});
  // Without a tape to fill, one layer's activations at a time (the MoE statistics need them).
  tape.group = !tape_out ? 1 : o.checkpoint_every > 0 ? std::min(o.checkpoint_every, L) : L;
  tape.group_in.clear();
  const size_t n_groups = size_t((L + tape.group - 1) / tape.group);
  // Embedding gather: [M] -> h [M, D]
  std::vector<float> h(static_cast<size_t>(M * D));
  embed_rows(m.W.embed, b.ids.data(), M, h.data());
  std::vector<double> f(static_cast<size_t>(E), 0.0), Psum(static_cast<size_t>(E), 0.0);
  for (size_t g = 0; g < n_groups; ++g) {
    const auto [l0, l1] = group_layers(cfg, tape.group, g);
    const bool keep = g + 1 == n_groups;  // the last group's activations feed the backward first
    if (n_groups > 1 && tape_out) tape.group_in.push_back(h);
    std::vector<LayerTape> lt(l1 - l0);
    forward_group(m, b, l0, l1, h.data(), lt.data());
    for (size_t il = l0; il < l1; ++il) {
      if (cfg.layers[il].ffn != FfnKind::Moe) continue;
      const MoeTape& mt = lt[il - l0].moe;
      for (int64_t r = 0; r < M; ++r)
        for (int64_t e = 0; e < E; ++e) Psum[size_t(e)] += mt.probs[size_t(r * E + e)];
      for (int32_t e : mt.sel) f[size_t(e)] += 1.0;
    }
    if (keep)
      for (size_t il = l0; il < l1; ++il) tape.layers[il] = std::move(lt[il - l0]);
  }
  tape.h_final = std::move(h);
  tape.hn.resize(static_cast<size_t>(M * D));  // [M, D]
  cpu::rmsnorm({.M = M, .D = D, .x = tape.h_final.data(), .ldx = D, .w = m.W.final_norm,
                .eps = float(cfg.rms_norm_eps), .y = tape.hn.data(), .ldy = D});

  LossValues r;
  const std::vector<Target> tg = targets(b);
  r.n_targets = int64_t(tg.size());
  r.ce_sum = head_ce(m.W.lm_head, tg, tape.hn.data(), nullptr, 0.0, nullptr);
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

LossValues train_forward(const ParamStore& P, const TrainBatch& b, const LossOptions& o,
                         Tape* tape) {
  const Weights W = P.view();
  return train_forward({P.cfg, W}, b, o, tape);
}

void train_backward(const TrainTarget& m, const TrainBatch& b, Tape& tape, Grads& G) {
  const JambaConfig& cfg = m.cfg;
  const Weights& W = m.W;
  const int64_t D = cfg.hidden_size, M = b.B * b.T;
  const float eps = float(cfg.rms_norm_eps);
  JAMBA_CHECK(tape.layers.size() == cfg.layers.size() && int64_t(tape.hn.size()) == M * D,
              "[train] backward: the tape does not belong to this batch/model");
  // LM head + cross-entropy -> dhn [M, D]; final norm -> dh [M, D]
  std::vector<float> dhn(static_cast<size_t>(M * D), 0.0f), dh(static_cast<size_t>(M * D));
  head_ce(W.lm_head, targets(b), tape.hn.data(), dhn.data(), tape.ce_scale, &G);
  rmsnorm_bwd(M, D, tape.h_final.data(), D, W.final_norm, eps, dhn.data(), D, dh.data(), D,
              false, G.slot(W.final_norm));
  std::vector<float> tmp(static_cast<size_t>(M * D));  // [M, D]
  const size_t n_groups = tape.group_in.empty() ? 1 : tape.group_in.size();
  std::vector<LayerTape> redo;  // a checkpointed group's recomputed activations
  for (size_t g = n_groups; g-- > 0;) {
    const auto [l0, l1] = group_layers(cfg, tape.group, g);
    const bool recompute = g + 1 < n_groups;
    if (recompute) {
      redo.assign(l1 - l0, {});
      std::vector<float> h = tape.group_in[g];
      forward_group(m, b, l0, l1, h.data(), redo.data());
    }
    for (size_t il = l1; il-- > l0;) {
      const LayerSpec& spec = cfg.layers[il];
      const LayerWeights& lw = W.layers[il];
      LayerTape& lt = recompute ? redo[il - l0] : tape.layers[il];
      // h_out = h_mid + ffn(norm(h_mid))
      if (spec.ffn == FfnKind::Moe)
        moe_train_backward(cfg, lw.moe, lt.xn2.data(), lt.moe, dh.data(), M, tape.aux_dp,
                           tmp.data(), G);
      else
        mlp_train_backward(lw.mlp, lt.xn2.data(), lt.mlp, dh.data(), M, tmp.data(), false, G);
      rmsnorm_bwd(M, D, lt.h_mid.data(), D, lw.pre_ff_norm, eps, tmp.data(), D, dh.data(), D,
                  true, G.slot(lw.pre_ff_norm));
      // h_mid = h_in + mixer(norm(h_in))
      if (spec.mixer == MixerKind::Mamba)
        mamba_train_backward(cfg, lw.mamba, b.B, b.T, lt.xn1.data(), lt.mamba, dh.data(),
                             tmp.data(), G);
      else
        attention_train_backward(cfg, lw.attn, b.B, b.T, lt.xn1.data(), lt.attn, dh.data(),
                                 tmp.data(), G);
      rmsnorm_bwd(M, D, lt.h_in.data(), D, lw.input_norm, eps, tmp.data(), D, dh.data(), D, true,
                  G.slot(lw.input_norm));
      lt = {};  // free as we go
    }
  }
  // Embedding: scatter-add; the padding_idx row (pad_token_id) receives nothing from the
  // lookup (torch nn.Embedding(padding_idx=...)), but the gradient tensor exists.
  float* gE = W.embed.w ? G.slot(W.embed.w) : nullptr;  // [V, D]; null when frozen
  for (int64_t r = 0; r < M && gE; ++r) {
    const int64_t tok = b.ids[size_t(r)];
    if (tok == cfg.pad_token_id) continue;
    for (int64_t d = 0; d < D; ++d) gE[tok * D + d] += dh[size_t(r * D + d)];
  }
}

LossValues forward_backward(const TrainTarget& m, const TrainBatch& b, const LossOptions& o,
                            Grads& G) {
  Tape tape;
  const LossValues r = train_forward(m, b, o, &tape);
  train_backward(m, b, tape, G);
  return r;
}

LossValues forward_backward(const ParamStore& P, const TrainBatch& b, const LossOptions& o,
                            Grads& G) {
  JAMBA_CHECK(G.made_for(P), "[train] the gradients were made for another store");
  const Weights W = P.view();
  return forward_backward({P.cfg, W}, b, o, G);
}

LossValues accumulate_shard_gradients(const TrainTarget& m, const TrainBatch& b,
                                      int64_t micro_rows, int64_t global_rows,
                                      int64_t global_targets, Grads& G,
                                      int64_t checkpoint_every) {
  const JambaConfig& cfg = m.cfg;
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
    o.checkpoint_every = checkpoint_every;
    const LossValues r = micro_rows >= b.B ? forward_backward(m, b, o, G)
                                           : forward_backward(m, b.rows(b0, n), o, G);
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

LossValues accumulate_gradients(const TrainTarget& m, const TrainBatch& b, int64_t micro_rows,
                                Grads& G, int64_t checkpoint_every) {
  if (micro_rows <= 0 || micro_rows >= b.B) {
    LossOptions o;
    o.checkpoint_every = checkpoint_every;
    return forward_backward(m, b, o, G);
  }
  const int64_t n_global = b.n_targets();
  const LossValues r =
      accumulate_shard_gradients(m, b, micro_rows, b.B, n_global, G, checkpoint_every);
  LossValues total = finish_shard_losses(m.cfg, r.ce_sum, r.aux_loss, n_global);
  total.aux_rows = r.aux_rows;
  return total;
}

LossValues accumulate_gradients(const ParamStore& P, const TrainBatch& b, int64_t micro_rows,
                                Grads& G) {
  JAMBA_CHECK(G.made_for(P), "[train] the gradients were made for another store");
  const Weights W = P.view();
  return accumulate_gradients({P.cfg, W}, b, micro_rows, G);
}

}  // namespace jamba
