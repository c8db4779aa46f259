#include "runtime/forward_tool.h"

#include <algorithm>

#include "core/checked.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace jamba {

TokenBatch read_token_batch(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  TokenBatch tb;
  tb.ids = read_token_ids(*f, "input_ids", &tb.B, &tb.T);
  const TensorInfo& ids = f->get("input_ids");
  // An empty batch has no tokens to run, and [B, 0] with a huge B (zero bytes in the file)
  // would still make B sequence states (fuzz_token_input: [2^20, 0] took 20 GB).
  if (tb.B == 0 || tb.T == 0)
    fail(path, ": tensor 'input_ids': shape ", shape_str(ids.shape),
         " holds no tokens (expected [B, T] with B, T >= 1)");
  if (const TensorInfo* m = f->find("attention_mask")) {
    if (m->shape != ids.shape)
      fail(path, ": tensor 'attention_mask': expected shape ", shape_str(ids.shape), ", got ",
           shape_str(m->shape));
    std::vector<int64_t> mv;
    if (m->dtype == DType::BOOL || m->dtype == DType::U8) {
      for (int64_t i = 0; i < m->numel(); ++i) mv.push_back(m->data[i]);
    } else {
      mv = tensor_to_i64(*m);
    }
    for (int64_t b = 0; b < tb.B; ++b) {
      bool seen_real = false;
      for (int64_t t = 0; t < tb.T; ++t) {
        const int64_t v = mv[size_t(b * tb.T + t)];
        if (v != 0 && v != 1)
          fail(path, ": tensor 'attention_mask': value ", v, " at [", b, ",", t,
               "] (expected 0 or 1)");
        if (v == 1) seen_real = true;
        if (v == 0 && seen_real)
          fail(path, ": tensor 'attention_mask': row ", b, " has padding at position ", t,
               " after a real token; only left padding is supported");
      }
    }
    for (int64_t v : mv) tb.mask.push_back(uint8_t(v));
  }
  return tb;
}

namespace {
std::span<const uint8_t> row_mask(const TokenBatch& in, int64_t b, int64_t t0, int64_t len) {
  if (in.mask.empty()) return {};
  return {in.mask.data() + b * in.T + t0, size_t(len)};
}
std::span<const int32_t> row_ids(const TokenBatch& in, int64_t b, int64_t t0, int64_t len) {
  return {in.ids.data() + b * in.T + t0, size_t(len)};
}
}  // namespace

FullForwardResult full_forward(const Model& model, const TokenBatch& in, bool hidden,
                               int64_t chunk) {
  const JambaConfig& cfg = model.config();
  const int64_t V = cfg.vocab_size, D = cfg.hidden_size, L = cfg.num_hidden_layers;
  const int64_t B = in.B, T = in.T;
  if (chunk <= 0) chunk = std::max<int64_t>(T, 1);
  std::vector<SequenceState> states;
  for (int64_t b = 0; b < B; ++b) states.push_back(model.new_state());
  FullForwardResult r;
  const int64_t BT = checked_mul(B, T, "[forward] B*T");
  r.logits.resize(static_cast<size_t>(checked_mul(BT, V, "[forward] B*T*V")));
  if (hidden) r.hidden.assign(static_cast<size_t>(L + 1), std::vector<float>(static_cast<size_t>(B * T * D)));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t len = std::min(chunk, T - t0);
    std::vector<BatchItem> items;
    for (int64_t b = 0; b < B; ++b)
      items.push_back({&states[size_t(b)], row_ids(in, b, t0, len), row_mask(in, b, t0, len),
                       LogitsMode::All});
    ForwardOutput out;
    out.capture_hidden = hidden;
    model.forward(items, &out);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(out.logits.data() + out.logit_row_offset[size_t(b)] * V, len * V,
                  r.logits.data() + (b * T + t0) * V);
      if (hidden)
        for (int64_t i = 0; i <= L; ++i)
          std::copy_n(out.hidden[size_t(i)].data() + b * len * D, len * D,
                      r.hidden[size_t(i)].data() + (b * T + t0) * D);
    }
  }
  return r;
}

int32_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

GreedyResult greedy_generate(const Model& model, const TokenBatch& in, int64_t n_new,
                             int64_t chunk) {
  const int64_t V = model.config().vocab_size;
  const int64_t B = in.B, T = in.T;
  JAMBA_CHECK(T > 0, "[generate] empty prompt");
  JAMBA_CHECK(n_new >= 0, "[generate] max new tokens must be >= 0, got ", n_new);
  if (chunk <= 0) chunk = T;
  GreedyResult r;
  const int64_t TN = checked_add(T, n_new, "[generate] T+N");
  r.gen_ids.resize(static_cast<size_t>(checked_mul(B, TN, "[generate] B*(T+N)")));
  const int64_t BN = checked_mul(B, n_new, "[generate] B*N");
  r.step_logits.resize(static_cast<size_t>(checked_mul(BN, V, "[generate] B*N*V")));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) r.gen_ids[size_t(b * (T + n_new) + t)] = in.ids[size_t(b * T + t)];
  if (n_new == 0) return r;
  std::vector<SequenceState> states;
  for (int64_t b = 0; b < B; ++b) states.push_back(model.new_state());
  ForwardOutput out;
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {  // prefill
    const int64_t len = std::min(chunk, T - t0);
    std::vector<BatchItem> items;
    for (int64_t b = 0; b < B; ++b)
      items.push_back({&states[size_t(b)], row_ids(in, b, t0, len), row_mask(in, b, t0, len),
                       t0 + len == T ? LogitsMode::Last : LogitsMode::None});
    model.forward(items, &out);
  }
  std::vector<int32_t> next(static_cast<size_t>(B));
  for (int64_t n = 0; n < n_new; ++n) {
    if (n > 0) {
      std::vector<BatchItem> items;
      for (int64_t b = 0; b < B; ++b)
        items.push_back({&states[size_t(b)], {&next[size_t(b)], 1}, {}, LogitsMode::Last});
      model.forward(items, &out);
    }
    for (int64_t b = 0; b < B; ++b) {
      const float* l = out.logits.data() + out.logit_row_offset[size_t(b)] * V;
      std::copy_n(l, V, r.step_logits.data() + (b * n_new + n) * V);
      next[size_t(b)] = argmax(l, V);
      r.gen_ids[size_t(b * (T + n_new) + T + n)] = next[size_t(b)];
    }
  }
  return r;
}

}  // namespace jamba
