// The results of `jamba explore` and what is written from them: the markdown report (the main
// table is also printed to stdout), explore.json, and the SVG plots (throughput vs context,
// memory vs context, held-out perplexity per layout).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/layer_layout.h"
#include "model/memory_plan.h"

namespace jamba::app {

// One --context of one layout: a fresh sequence prefilled to `context` tokens, then decoding.
struct ExploreContextRun {
  int64_t context = 0;
  double prefill_tps = 0, prefill_lo = 0, prefill_hi = 0;  // median, min, max over --reps
  double decode_tps = 0, decode_lo = 0, decode_hi = 0;
  double prefill_seconds = 0;                  // of the first run
  double prefill_cores = 0, decode_cores = 0;  // lowest CPU seconds / seconds over the runs
  int repeats = 0;                             // runs measured again (--min-busy)
  int64_t peak_rss = 0;     // bytes: process high-water mark during the first prefill
  int64_t state_bytes = 0;  // SequenceState::bytes() after that prefill
  MemoryPlan plan;          // plan_memory at `context` with the K/V dtype the run used
};

struct ExploreLayoutResult {
  LayerLayout layout;
  JambaConfig cfg;
  int64_t params = 0;
  int64_t rss_before_load = 0;          // bytes resident just before its model was loaded
  std::vector<ExploreContextRun> runs;  // per --context
  std::vector<MemoryPlan> memory;       // per --memory-context, with the requested K/V dtype
  bool trained = false;
  double heldout_loss = 0;  // nats/token over the held-out windows
  double train_seconds = 0, train_tokens_per_s = 0;
};

struct ExploreReport {
  std::string command;  // the command line, for the report
  std::string base;     // preset name or config path
  std::string cpu;      // /proc/cpuinfo model name
  int threads = 0;
  std::string weights;              // "f32" / "bf16"
  KvDtype kv_plan = KvDtype::BF16;  // K/V dtype of the memory table (resolved)
  KvDtype kv_run = KvDtype::F32;    // K/V dtype of the measured runs (the model's)
  int64_t chunk = 512, decode_tokens = 16;
  int reps = 1;
  double min_busy = 0;
  std::vector<int64_t> contexts, memory_contexts;
  std::vector<MemoryPlan> all_attention_memory;  // all_attention_variant(base), per memory context
  int64_t baseline_rss = 0;                      // bytes resident before any model was loaded
  double load_start = -1, load_end = -1;         // 1-minute load average at the start and the end
  double load_lo = -1, load_hi = -1;             // ... lowest and highest seen at any step
  double seconds = 0, cpu_seconds = 0;           // wall time and this process's CPU time
  // --train
  bool train = false;
  std::string corpus, tokenizer;
  int64_t steps = 0, batch = 0, seq = 0, eval_windows = 0, train_tokens = 0, corpus_tokens = 0;
  double lr = 0;
  uint64_t seed = 0;
  std::vector<ExploreLayoutResult> layouts;
};

std::string explore_table(const ExploreReport& r);     // the main markdown table
std::string explore_markdown(const ExploreReport& r);  // explore.md: table, details, notes
std::string explore_json(const ExploreReport& r);      // every number, machine-readable
std::string throughput_svg(const ExploreReport& r);    // prefill and decode t/s vs context
std::string memory_svg(const ExploreReport& r);        // planned total bytes vs context
std::string perplexity_svg(const ExploreReport& r);    // held-out perplexity per layout

}  // namespace jamba::app
