// `jamba bench`: prompt processing (pp), generation (tg) at a context depth (d) and batched
// generation, over thread counts and weight types; repetitions with median and spread, peak
// memory, and the machine's own GEMM peak and memory bandwidth measured in the same run, so
// achieved GFLOP/s and GB/s are printed as ratios of this machine's limits.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "apps/bench_train.h"
#include "apps/bench_util.h"
#include "apps/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "core/dtype.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "model/init.h"
#include "model/model.h"
#include "model/model_info.h"
#include "model/presets.h"

namespace jamba::app {

namespace {

// "; bf16 prefill GEMMs: <route> (<measured rates>)" for the bench's header line.
std::string bf16_route_text() {
  const cpu::Bf16RouteChoice c = cpu::bf16_route();
  char rates[128] = "";
  if (c.onednn_gflops > 0)
    std::snprintf(rates, sizeof rates, " (measured oneDNN bf16 %.0f, f32 panels %.0f GFLOP/s)",
                  c.onednn_gflops, c.panels_gflops);
  return std::string("; bf16 prefill GEMMs: ") +
         (c.route == cpu::Bf16Route::kOneDnn ? "oneDNN bf16 matmul" : "f32 panels + OpenBLAS sgemm") +
         rates;
}

using clk = bench::Clock;
using bench::feed;
using bench::reset_peak_rss;
using bench::release_free_heap;
using bench::measure_peaks;
using bench::Peaks;
constexpr auto secs = bench::seconds;
std::vector<int32_t> tokens(int64_t n, int64_t V, int64_t salt) { return bench::synthetic_tokens(n, V, salt); }
double peak_rss_gib() { return double(bench::peak_rss_bytes()) / double(1 << 30); }
double current_rss_gib() { return double(bench::current_rss_bytes()) / double(1 << 30); }

struct BenchOpts {
  std::string model, preset = "moe1b", cache_dir, jsonl;
  std::vector<std::string> dtypes{"auto"};
  std::string activations = "auto", kv = "auto";
  std::vector<int> threads{0};
  std::vector<int64_t> pp{512}, tg{64}, depth{0}, batch{1};
  int64_t chunk = 512;
  int64_t band = 0;  // depth fill reported per band of this many tokens (0 = depth / 8 from 32K)
  bool synthetic = false;  // --synthetic-fill: random K/V and state instead of a real prefill
  int reps = 3;
  bool train = false;  // --train: training throughput instead of inference
  int64_t train_batch = 8, train_seq = 256;
};

struct Stat {
  double median = 0, lo = 0, hi = 0;
};
Stat stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}



// A state at depth d without running the model: every attention layer's cache holds d rows of
// random K/V (unit normal, as normed projections are), every Mamba state random; all keys valid.
// Attention costs the same on any values, so pp / tg after it time what a real fill would; the
// outputs are meaningless. Labelled "synthetic" wherever reported.
void synthetic_fill(const Model& m, SequenceState& st, int64_t d) {
  const JambaConfig& c = m.config();
  const int64_t nkv = c.num_key_value_heads, hd = c.head_dim();
  std::mt19937 rng(12345);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> kr(static_cast<size_t>(4096 * hd)), vr(kr.size());
  for (float& x : kr) x = nd(rng);
  for (float& x : vr) x = nd(rng);
  st.pos = d;
  st.key_valid.assign(static_cast<size_t>(d), 1);
  for (size_t il = 0; il < c.layers.size(); ++il) {
    if (c.layers[il].mixer == MixerKind::Mamba) {
      for (float& x : st.mamba[il].conv) x = 0.1f * nd(rng);
      for (float& x : st.mamba[il].ssm) x = 0.1f * nd(rng);
      continue;
    }
    AttnLayerState& a = st.attn[il];
    a.reserve(nkv, hd, d, 0, c.max_position_embeddings);
    for (int64_t g = 0; g < nkv; ++g)
      for (int64_t t0 = 0; t0 < d; t0 += 4096) {  // 4096 random rows, repeated with a shift
        const int64_t n = std::min<int64_t>(4096, d - t0), sh = (t0 / 4096 + g) % 4096;
        const int64_t n1 = std::min(n, 4096 - sh);
        a.write(g, t0, n1, hd, kr.data() + sh * hd, vr.data() + sh * hd, hd);
        if (n > n1) a.write(g, t0 + n1, n - n1, hd, kr.data(), vr.data(), hd);
      }
  }
}

// B sequences, each a copy of `ctx` (a state at some depth; the last one takes it), generate G
// tokens together; returns seconds for the G steps.
double generate(const Model& m, int64_t B, SequenceState ctx, int64_t G) {
  const int64_t V = m.config().vocab_size;
  std::vector<SequenceState> st(static_cast<size_t>(B - 1), ctx);
  st.push_back(std::move(ctx));
  std::vector<int32_t> next(static_cast<size_t>(B), 5);
  ForwardOutput out;
  auto t0 = clk::now();
  for (int64_t g = 0; g < G; ++g) {
    std::vector<BatchItem> items;
    for (int64_t b = 0; b < B; ++b) items.push_back({&st[size_t(b)], {&next[size_t(b)], 1}, {}, LogitsMode::Last});
    m.forward(items, &out);
    for (int64_t b = 0; b < B; ++b) next[size_t(b)] = int32_t(3 + (g * 31 + b) % (V - 3));
  }
  return secs(t0, clk::now());
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOpts>();
  app.add_option("--model,-m", o->model, "checkpoint directory (default: a random --preset model)");
  app.add_option("--preset", o->preset, "random model shape when no --model: r3b, moe1b, mini, tiny");
  app.add_option("--cache-dir", o->cache_dir, "where preset checkpoints are written (default: temp dir)");
  app.add_option("--dtype", o->dtypes, std::string(kDtypeHelp) + " (list)")->delimiter(',');
  app.add_option("--activations", o->activations, kActivationsHelp);
  app.add_option("--kv-dtype", o->kv, kKvDtypeHelp);
  app.add_option("--threads,-t", o->threads, "thread counts (list; 0 = all cores)")->delimiter(',');
  app.add_option("--pp,-p", o->pp, "prompt lengths (list; 0 = skip)")->delimiter(',');
  app.add_option("--tg,-n", o->tg, "generated tokens (list; 0 = skip)")->delimiter(',');
  app.add_option("--depth,-d", o->depth,
                 "context depth before pp/tg (list; filled once per depth by a real chunked "
                 "prefill, up to the model's context, then copied for each test)")
      ->delimiter(',')
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--synthetic-fill", o->synthetic,
               "fill each depth with random K/V and state instead of a real prefill (attention "
               "costs the same on any values; rows say 'synthetic')");
  app.add_option("--band", o->band,
                 "report the depth fill's prefill speed per band of this many tokens (default: "
                 "depth / 8 for depths from 32768)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--batch,-b", o->batch, "sequences decoding together in tg (list)")->delimiter(',');
  app.add_option("--chunk", o->chunk, "prompt tokens per forward")->check(CLI::PositiveNumber);
  app.add_option("--reps,-r", o->reps, "repetitions (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--jsonl", o->jsonl, "also append results as JSON lines to this file");
  app.add_flag("--train", o->train,
               "training throughput (forward + backward + AdamW) and MFU; the model is --model or "
               "--preset (a config.json path works too; default with --train: tiny)");
  CLI::Option* preset_opt = app.get_option("--preset");
  app.add_option("--train-batch", o->train_batch, "--train: sequences per step")->check(CLI::PositiveNumber);
  app.add_option("--train-seq", o->train_seq, "--train: tokens per sequence")->check(CLI::PositiveNumber);
  return [o, preset_opt]() {
    if (o->train)
      return run_train_bench({.model = o->model,
                              .config = preset_opt->count() ? o->preset : std::string("tiny"),
                              .threads = o->threads,
                              .reps = o->reps,
                              .batch = o->train_batch,
                              .seq = o->train_seq,
                              .jsonl = o->jsonl,
                              .gemm_peak_gflops = [] { return measure_peaks(WeightType::F32, false, 0).gemm_gflops; }});
    namespace fs = std::filesystem;
    std::string dir = o->model;
    if (dir.empty()) {
      const std::string base = o->cache_dir.empty() ? fs::temp_directory_path().string() : o->cache_dir;
      dir = base + "/jamba-bench-" + o->preset + "-bf16";
      if (!fs::exists(fs::path(dir) / "model.safetensors")) {
        std::fprintf(stderr, "writing random '%s' checkpoint (bf16) to %s ...\n", o->preset.c_str(), dir.c_str());
        set_num_threads(0);
        init_checkpoint(preset_config(o->preset), dir, 0, DType::BF16);
      }
    }
    std::FILE* jf = o->jsonl.empty() ? nullptr : std::fopen(o->jsonl.c_str(), "a");
    std::printf("| model | weights | threads | test | t/s (median) | spread | GFLOP/s | %% GEMM peak | GB/s | %% bandwidth | peak RSS GiB |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const std::string& dt : o->dtypes) {
      reset_peak_rss();
      Model model = Model::load(dir, {.weights = weight_type_from_name(dt),
                                      .activations = matmul_activations_from_name(o->activations),
                                      .kv = kv_dtype_from_name(o->kv)});
      const JambaConfig& c = model.config();
      for (int64_t d : o->depth)
        JAMBA_CHECK(d <= c.max_position_embeddings, "[--depth] ", d,
                    " is past the model's context (max_position_embeddings ",
                    c.max_position_embeddings, ")");
      const ModelStats ms = model_stats(c);
      const Weights& w = model.weights();
      // Bytes of weights one decode token reads: every matrix except the embedding (a row
      // gather), and of the experts only the k of E a token uses.
      size_t expert_bytes = 0;
      for (const auto& l : w.layers)
        for (const auto& e : l.moe.experts) expert_bytes += e.gate.bytes() + e.up.bytes() + e.down.bytes();
      const bool tied = c.tie_word_embeddings;
      const double all_bytes = double(w.matrix_bytes()) - (tied ? 0.0 : double(w.embed.bytes()));
      // Weight bytes one decode step of B sequences reads: B tokens each pick k of E experts, so
      // (uniform routing) E * (1 - (1 - k/E)^B) distinct experts per MoE layer are read.
      auto bytes_step = [&](int64_t B) {
        if (c.n_moe_layers() == 0 || expert_bytes == 0) return all_bytes;
        const double E = double(c.num_experts), k = double(c.num_experts_per_tok);
        const double used = 1.0 - std::pow(1.0 - k / E, double(B));  // fraction of experts read
        return all_bytes - double(expert_bytes) * (1.0 - used);
      };
      // "bf16/a16": bf16 weights with bf16-rounded activations (oneDNN / AVX512-BF16 path). A
      // quantized model may keep a bf16 matrix or two (the flag is set), but its GEMMs are the
      // quantized kernels and its prefill runs sgemm: label and peak follow the weight type.
      const bool a16 = w.bf16_activations && w.type == WeightType::BF16;
      const std::string wname = std::string(weight_type_name(w.type)) + (a16 ? "/a16" : "") +
                                (c.n_attention_layers() ? std::string("/kv-") + kv_dtype_name(model.kv_dtype()) : "");
      for (int th : o->threads) {
        set_num_threads(th);
        const int nth = num_threads();
        const Peaks pk = measure_peaks(w.type, a16, all_bytes);
        // The peaks' 256 MiB bandwidth array is not the model's memory: main keeps freed blocks
        // in the heap for reuse, so give it back before the RSS is watched.
        release_free_heap();
        reset_peak_rss();
        const char* peak_name = a16 ? "bf16 GEMM" : w.type == WeightType::Q4 ? "q4 GEMM"
                                : (w.type == WeightType::Int8 || w.type == WeightType::Int8Experts) ? "int8 GEMM"
                                : "sgemm";
        std::fprintf(stderr, "[%s %s %d threads] measured: %s peak %.0f GFLOP/s, read bandwidth %.1f GB/s (median of 7 reads of %.2f GiB, %.1f-%.1f)%s; OpenBLAS kernels: %s\n",
                     dir.c_str(), wname.c_str(), nth, peak_name,
                     pk.gemm_gflops, pk.bw_gbs, pk.bw_bytes / double(1 << 30), pk.bw_lo, pk.bw_hi,
                     a16 ? bf16_route_text().c_str() : "",
                     blas_core());
        auto report = [&](const std::string& test, const std::vector<double>& tps, double flop_tok, double byte_tok) {
          const Stat s = stats(tps);
          const double gf = s.median * flop_tok / 1e9, gb = s.median * byte_tok / 1e9;
          std::printf("| %s | %s | %d | %s | %.2f | %.2f–%.2f | %.1f | %.1f%% | %.2f | %.1f%% | %.2f |\n",
                      fs::path(dir).filename().c_str(), wname.c_str(), nth, test.c_str(), s.median, s.lo, s.hi, gf,
                      100.0 * gf / pk.gemm_gflops, gb, 100.0 * gb / pk.bw_gbs, peak_rss_gib());
          std::fflush(stdout);
          if (jf)
            std::fprintf(jf, "{\"model\":\"%s\",\"weights\":\"%s\",\"threads\":%d,\"test\":\"%s\",\"tps_median\":%.4f,"
                         "\"tps_min\":%.4f,\"tps_max\":%.4f,\"gflops\":%.2f,\"gemm_peak_gflops\":%.2f,\"gbs\":%.3f,"
                         "\"bw_peak_gbs\":%.3f,\"peak_rss_gib\":%.3f,\"reps\":%d}\n",
                         dir.c_str(), wname.c_str(), nth, test.c_str(), s.median, s.lo, s.hi, gf, pk.gemm_gflops,
                         gb, pk.bw_gbs, peak_rss_gib(), int(tps.size()));
        };
        // attention FLOPs of one token at context position p: 4 * p * nh * hd per attention layer
        const double attn_tok = 4.0 * double(c.num_attention_heads * c.head_dim()) * double(c.n_attention_layers());
        for (int64_t d : o->depth) {
          // The context: filled once by a real chunked prefill (reported per band for long
          // depths), then copied for every test below.
          SequenceState ctx = model.new_state();
          // The cache at its final size from the start (the depth and the longest test after
          // it), so no test pays for a regrowth — nor the RSS for its old and new buffers.
          int64_t longest = 0;
          for (int64_t P : o->pp) longest = std::max(longest, P);
          for (int64_t G : o->tg) longest = std::max(longest, G);
          ctx.reserve_tokens(c, d + longest);
          // The last test at this depth takes the context instead of copying it: a copy of a
          // 256K-token cache would add its 512 MiB to the peak RSS.
          int64_t uses = 0;
          for (int64_t P : o->pp) uses += P > 0 ? o->reps : 0;
          for (int64_t G : o->tg) uses += G > 0 ? o->reps * int64_t(o->batch.size()) : 0;
          auto take_ctx = [&]() { return --uses == 0 ? std::move(ctx) : SequenceState(ctx); };
          const std::string at = d ? std::string(" @ d") + std::to_string(d) +
                                         (o->synthetic ? " (synthetic)" : "")
                                   : "";
          if (d > 0 && o->synthetic) {
            synthetic_fill(model, ctx, d);
          } else if (d > 0) {
            const int64_t band = o->band > 0 ? o->band : (d >= 32768 ? d / 8 : d);
            const auto fill = tokens(d, c.vocab_size, 1);
            const auto t0 = clk::now();
            for (int64_t b0 = 0; b0 < d; b0 += band) {
              const int64_t n = std::min(band, d - b0);
              const std::vector<int32_t> part(fill.begin() + b0, fill.begin() + b0 + n);
              const double s = feed(model, ctx, part, o->chunk);
              if (n < d)
                report("fill " + std::to_string(b0) + "–" + std::to_string(b0 + n) + " of d" + std::to_string(d),
                       {double(n) / s}, double(ms.flops_per_token) + attn_tok * double(b0 + n / 2), 0);
              std::fprintf(stderr, "  depth %lld / %lld filled, %.0f s, state %s, RSS %.3f GiB (peak %.3f)\n",
                           (long long)(b0 + n), (long long)d, secs(t0, clk::now()),
                           human_bytes(double(ctx.bytes())).c_str(), current_rss_gib(), peak_rss_gib());
            }
            if (band >= d)
              report("fill d" + std::to_string(d), {double(d) / secs(t0, clk::now())},
                     double(ms.flops_per_token) + attn_tok * double(d / 2), 0);
          }
          for (int64_t P : o->pp) {
            if (P <= 0) continue;
            { SequenceState warm = model.new_state(); feed(model, warm, tokens(std::min<int64_t>(P, 64), c.vocab_size, 9), o->chunk); }
            std::vector<double> tps;
            for (int r = 0; r < o->reps; ++r) {
              SequenceState st = take_ctx();
              tps.push_back(double(P) / feed(model, st, tokens(P, c.vocab_size, 2 + r), o->chunk));
            }
            report("pp" + std::to_string(P) + at, tps,
                   double(ms.flops_per_token) + attn_tok * double(d + P / 2), 0);
          }
          for (int64_t G : o->tg) {
            if (G <= 0) continue;
            for (int64_t B : o->batch) {
              {  // warm-up
                SequenceState one = model.new_state();
                feed(model, one, tokens(1, c.vocab_size, 0), o->chunk);
                generate(model, B, one, 2);
              }
              std::vector<double> tps;
              for (int r = 0; r < o->reps; ++r) tps.push_back(double(G * B) / generate(model, B, take_ctx(), G));
              report("tg" + std::to_string(G) + at + (B > 1 ? " x" + std::to_string(B) : ""),
                     tps, double(ms.flops_per_token) + attn_tok * double(d), bytes_step(B) / double(B));
            }
          }
        }
      }
    }
    if (jf) std::fclose(jf);
    return 0;
  };
}

}  // namespace jamba::app
