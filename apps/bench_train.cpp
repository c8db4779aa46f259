#include "apps/bench_train.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "core/threads.h"
#include "model/model_info.h"
#include "model/presets.h"
#include "train/model_grad.h"
#include "train/optim.h"
#include "train/params.h"
#include "train/trainer.h"

namespace jamba::app {

int run_train_bench(const TrainBenchArgs& a) {
  using clk = std::chrono::steady_clock;
  ParamStore P;
  std::string name;
  if (!a.model.empty()) {
    P = ParamStore::load(a.model);
    name = std::filesystem::path(a.model).filename().string();
  } else {
    const JambaConfig cfg = is_preset(a.config) ? preset_config(a.config) : JambaConfig::from_file(a.config);
    P = ParamStore::random(cfg, 0, cfg.initializer_range);
    name = a.config;
  }
  const JambaConfig& c = P.cfg;
  const ModelStats ms = model_stats(c);
  // Model FLOPs per trained token: forward (2 per active matmul weight + causal attention
  // scores and values, 2 * 2 * T/2 * heads * head_dim per attention layer) and backward (2x).
  const double attn = 4.0 * double(a.seq / 2) * double(c.num_attention_heads * c.head_dim()) *
                      double(c.n_attention_layers());
  const double flop_tok = 3.0 * (double(ms.flops_per_token) + attn);
  TrainBatch b;
  b.B = a.batch;
  b.T = a.seq;
  for (int64_t i = 0; i < b.B * b.T; ++i) b.ids.push_back(int32_t(3 + (i * 7919) % (c.vocab_size - 3)));
  b.labels.assign(b.ids.begin(), b.ids.end());
  std::vector<size_t> order;
  for (const std::string& n : hf_parameter_order(c)) order.push_back(P.find(n));
  std::FILE* jf = a.jsonl.empty() ? nullptr : std::fopen(a.jsonl.c_str(), "a");
  std::printf("| model | params | threads | test | tokens/s (median) | spread | step s | GFLOP/s | MFU (%% GEMM peak) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int th : a.threads) {
    set_num_threads(th);
    const int nth = num_threads();
    const double peak = a.gemm_peak_gflops();
    AdamW opt(P, {});
    Grads G(P);
    std::vector<double> tps, step_s;
    for (int r = 0; r <= a.reps; ++r) {  // r == 0: warm-up
      const auto t0 = clk::now();
      G.clear();
      accumulate_gradients(P, b, 0, G);
      clip_grad_norm(G, 1.0f, order);
      opt.step(P, G, 1e-4);
      const double s = std::chrono::duration<double>(clk::now() - t0).count();
      if (r > 0) {
        tps.push_back(double(b.B * b.T) / s);
        step_s.push_back(s);
      }
      std::fprintf(stderr, "\r  [train %d threads] step %d/%d: %.2f s", nth, r, a.reps, s);
    }
    std::fprintf(stderr, "\n");
    std::sort(tps.begin(), tps.end());
    std::sort(step_s.begin(), step_s.end());
    const double med = tps[tps.size() / 2];
    const double gf = med * flop_tok / 1e9;
    const std::string test = "train B" + std::to_string(a.batch) + " T" + std::to_string(a.seq);
    std::printf("| %s | %.2fM | %d | %s | %.1f | %.1f–%.1f | %.3f | %.1f | %.1f%% |\n", name.c_str(),
                double(ms.params_total) / 1e6, nth, test.c_str(), med, tps.front(), tps.back(),
                step_s[step_s.size() / 2], gf, 100.0 * gf / peak);
    std::fflush(stdout);
    if (jf)
      std::fprintf(jf, "{\"model\":\"%s\",\"threads\":%d,\"test\":\"%s\",\"tokens_per_s\":%.3f,\"gflops\":%.2f,"
                   "\"gemm_peak_gflops\":%.2f,\"mfu\":%.4f,\"reps\":%d}\n",
                   name.c_str(), nth, test.c_str(), med, gf, peak, gf / peak, a.reps);
  }
  if (jf) std::fclose(jf);
  return 0;
}

}  // namespace jamba::app
