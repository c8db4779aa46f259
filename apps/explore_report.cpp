#include "apps/explore_report.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "io/svg_chart.h"

namespace jamba::app {

namespace {

std::string fmt(const char* f, double v) { return format_number(f, v); }
std::string tps(double v) {
  return fmt(v >= 1000 ? "%.0f" : v >= 100 ? "%.1f" : "%.2f", v);
}
std::string ctx_label(int64_t n) {
  return binary_count_label(double(n));
}
std::string mib(double bytes) {
  return fmt("%.1f MiB", bytes / (1024.0 * 1024.0));
}
std::string params_label(int64_t n) {
  return n >= 1000000 ? fmt("%.2fM", double(n) / 1e6) : fmt("%.1fK", double(n) / 1e3);
}
std::string layers_label(const ExploreLayoutResult& l) {
  const int64_t a = l.cfg.n_attention_layers();
  return std::to_string(a) + " / " + std::to_string(int64_t(l.cfg.layers.size()) - a);
}
double ppl(const ExploreLayoutResult& l) {
  return std::exp(l.heldout_loss);
}
// Appends " v |" (appending piecewise: GCC 12 reports `" " + std::string` as a -Wrestrict
// false positive).
void cell(std::string& s, const std::string& v) {
  s += ' ';
  s += v;
  s += " |";
}

}  // namespace

std::string explore_table(const ExploreReport& r) {
  std::string h = "| layout | attn / Mamba layers | params |", sep = "|---|---|---|";
  for (int64_t c : r.contexts) h += " prefill t/s " + ctx_label(c) + " |", sep += "---|";
  for (int64_t c : r.contexts) h += " decode t/s " + ctx_label(c) + " |", sep += "---|";
  for (int64_t c : r.memory_contexts) h += " memory " + ctx_label(c) + " |", sep += "---|";
  if (!r.contexts.empty())
    h += " peak RSS " + ctx_label(r.contexts.back()) + " (÷ plan) |", sep += "---|";
  if (r.train) h += " held-out ppl |", sep += "---|";
  std::string s = h + "\n" + sep + "\n";
  for (const ExploreLayoutResult& l : r.layouts) {
    s += "| " + l.layout.name + " | " + layers_label(l) + " | " + params_label(l.params) + " |";
    for (const ExploreContextRun& c : l.runs) cell(s, tps(c.prefill_tps));
    for (const ExploreContextRun& c : l.runs) cell(s, tps(c.decode_tps));
    for (const MemoryPlan& m : l.memory) cell(s, human_bytes(double(m.total_bytes)));
    if (!l.runs.empty()) {
      const ExploreContextRun& c = l.runs.back();
      cell(s, mib(double(c.peak_rss)) + " (" +
                  fmt("%.2f", double(c.peak_rss) / double(c.plan.total_bytes)) + "×)");
    }
    if (r.train) cell(s, l.trained ? fmt("%.2f", ppl(l)) : std::string("—"));
    s += "\n";
  }
  return s;
}

std::string explore_markdown(const ExploreReport& r) {
  const JambaConfig& b = r.layouts.empty() ? JambaConfig{} : r.layouts.front().cfg;
  std::string s = "# jamba explore: attention:Mamba layouts of " + r.base + "\n\n";
  s += "```\n" + r.command + "\n```\n\n";
  s += "Machine: " + r.cpu + ", " + std::to_string(r.threads) + " threads. Load average (1 min) " +
       fmt("%.2f", r.load_start) + " at the start, " + fmt("%.2f", r.load_end) + " at the end, " +
       fmt("%.2f", r.load_lo) + "–" + fmt("%.2f", r.load_hi) + " over the steps. The run took " +
       fmt("%.0f", r.seconds) + " s and " + fmt("%.0f", r.cpu_seconds) + " CPU seconds (" +
       fmt("%.2f", r.cpu_seconds / r.seconds) + " cores busy on average of the " +
       std::to_string(r.threads) +
       " threads: lower means other work took the cores, or single-threaded parts).\n\n";
  s += "Base shape: hidden " + std::to_string(b.hidden_size) + ", " +
       std::to_string(b.num_hidden_layers) + " layers, " + std::to_string(b.num_attention_heads) +
       " query / " + std::to_string(b.num_key_value_heads) + " K/V heads of " +
       std::to_string(b.head_dim()) + ", Mamba d_inner " + std::to_string(b.d_inner()) +
       " d_state " + std::to_string(b.mamba_d_state) + ", FFN " +
       (b.num_experts > 1 ? std::to_string(b.num_experts) + " experts top-" +
                                std::to_string(b.num_experts_per_tok) + " every " +
                                std::to_string(b.expert_layer_period) + " layers, "
                          : std::string()) +
       "intermediate " + std::to_string(b.intermediate_size) + ", vocab " +
       std::to_string(b.vocab_size) +
       ". Each layout keeps this width, depth and FFN schedule and "
       "changes attn_layer_period / attn_layer_offset only (1:m = period m+1, offset (m+1)/2; "
       "all-attention = period 1; all-mamba = period L+1, offset L).\n\n";
  s += "Weights: random (`jamba init` initialisation), held in " + r.weights +
       "; K/V cache of the measured runs: " + kv_dtype_name(r.kv_run) +
       "; memory columns planned with a " + kv_dtype_name(r.kv_plan) + " K/V cache.\n\n";
  s += "## Results\n\n" + explore_table(r) + "\n";
  s += "* **prefill t/s**: a fresh sequence is fed a synthetic prompt of that many tokens in "
       "forwards of " +
       std::to_string(r.chunk) +
       " tokens; tokens/s over the whole prompt "
       "(context ÷ total seconds), median of " +
       std::to_string(r.reps) + " run(s).\n";
  s += "* **decode t/s**: " + std::to_string(r.decode_tokens) +
       " single-token forwards (with the LM head) right after that prefill, on the same state.\n";
  s += "* **memory**: `plan_memory` (src/model/memory_plan.h) for one sequence holding that "
       "context: weights as held + K/V cache + Mamba state + activation scratch of one " +
       std::to_string(r.chunk) + "-token forward.\n";
  s += "* **peak RSS**: the process's high-water mark (VmHWM) during that prefill, after the "
       "heap's free memory was returned and the mark reset; it includes the process itself (" +
       mib(double(r.baseline_rss)) +
       " resident before any model was loaded). ÷ plan: against "
       "the plan at that context with the run's K/V dtype.\n";
  if (r.train)
    s += "* **held-out ppl**: exp(mean cross-entropy) over the same " +
         std::to_string(r.eval_windows) +
         " held-out windows for every layout after training "
         "(below).\n";
  if (!r.memory_contexts.empty() && !r.layouts.empty()) {
    const size_t last = r.memory_contexts.size() - 1;
    const MemoryPlan& aa = r.all_attention_memory[last];
    s += "\n## Memory at " + ctx_label(r.memory_contexts[last]) + " tokens (plan, one sequence, " +
         kv_dtype_name(r.kv_plan) + " K/V)\n\n";
    s += "| layout | weights | K/V cache | Mamba state | scratch | total | ÷ all-attention |\n"
         "|---|---|---|---|---|---|---|\n";
    for (const ExploreLayoutResult& l : r.layouts) {
      const MemoryPlan& m = l.memory[last];
      s += "| " + l.layout.name + " | " + human_bytes(double(m.weight_bytes)) + " | " +
           human_bytes(double(m.kv_bytes)) + " | " + human_bytes(double(m.state_bytes)) + " | " +
           human_bytes(double(m.scratch_bytes)) + " | " + human_bytes(double(m.total_bytes)) +
           " | " + fmt("%.3f", double(m.total_bytes) / double(aa.total_bytes)) + " |\n";
    }
    s += "\nAll-attention at this shape (plan_memory of `all_attention_variant`): " +
         human_bytes(double(aa.total_bytes)) + ", of which K/V " +
         human_bytes(double(aa.kv_bytes)) + ".\n";
  }
  if (!r.contexts.empty()) {
    s += "\n## Planned memory vs measured peak RSS\n\n";
    s += "| layout | context | plan total | peak RSS | RSS ÷ plan | RSS before load | (RSS − "
         "before load) ÷ plan | state held | state planned (K/V + Mamba) |\n"
         "|---|---|---|---|---|---|---|---|---|\n";
    for (const ExploreLayoutResult& l : r.layouts)
      for (const ExploreContextRun& c : l.runs)
        s += "| " + l.layout.name + " | " + ctx_label(c.context) + " | " +
             mib(double(c.plan.total_bytes)) + " | " + mib(double(c.peak_rss)) + " | " +
             fmt("%.2f", double(c.peak_rss) / double(c.plan.total_bytes)) + " | " +
             mib(double(l.rss_before_load)) + " | " +
             fmt("%.2f", double(c.peak_rss - l.rss_before_load) / double(c.plan.total_bytes)) +
             " | " + human_bytes(double(c.state_bytes)) + " | " +
             human_bytes(double(c.plan.kv_bytes + c.plan.state_bytes)) + " |\n";
    s += "\n" + mib(double(r.baseline_rss)) +
         " were resident before the first model was loaded "
         "(binary, libraries" +
         std::string(r.train ? ", the tokenized corpus" : "") +
         "); \"RSS before load\": resident just before this layout's model was loaded (after "
         "the previous one was freed). \"state held\" is `SequenceState::bytes()` after the "
         "prefill (the K/V cache's capacity, which grows in steps, plus the Mamba state and one "
         "mask byte per position).\n";
  }
  if (!r.contexts.empty()) {
    s += "\n## Runs\n\n";
    s += "| layout | context | prefill s | prefill t/s (min–max) | cores busy | decode t/s "
         "(min–max) | cores busy | repeated |\n|---|---|---|---|---|---|---|---|\n";
    for (const ExploreLayoutResult& l : r.layouts)
      for (const ExploreContextRun& c : l.runs)
        s += "| " + l.layout.name + " | " + ctx_label(c.context) + " | " +
             fmt("%.2f", c.prefill_seconds) + " | " + tps(c.prefill_tps) + " (" +
             tps(c.prefill_lo) + "–" + tps(c.prefill_hi) + ") | " + fmt("%.2f", c.prefill_cores) +
             " | " + tps(c.decode_tps) + " (" + tps(c.decode_lo) + "–" + tps(c.decode_hi) + ") | " +
             fmt("%.2f", c.decode_cores) + " | " + std::to_string(c.repeats) + " |\n";
    s += "\n" + std::to_string(r.reps) +
         " run(s) per context; \"prefill s\" is the first. "
         "\"cores busy\": this process's CPU seconds ÷ wall seconds during the prefill / the "
         "decode, the lowest over the runs, of " +
         std::to_string(r.threads) +
         " threads: well "
         "below that, other work had the cores (or the step was mostly single-threaded; the "
         "kernel's "
         "CPU accounting is coarse for steps of a few milliseconds). " +
         (r.min_busy > 0 ? "\"repeated\": runs measured again because they used fewer than " +
                               fmt("%.2f", r.min_busy * r.threads) + " cores (`--min-busy " +
                               fmt("%g", r.min_busy) +
                               "`, after a pause of 10–60 s, at most 5 repeats per run)."
                         : std::string("No run was repeated (`--min-busy` off).")) +
         "\n";
  }
  if (r.train) {
    s += "\n## Training (same budget for every layout)\n\n";
    s += "Corpus `" + r.corpus + "` (" + std::to_string(r.corpus_tokens) + " tokens, tokenizer `" +
         r.tokenizer + "`); " + std::to_string(r.steps) + " steps of " + std::to_string(r.batch) +
         " × " + std::to_string(r.seq) + " tokens (" + std::to_string(r.train_tokens) +
         " tokens per layout), lr " + fmt("%g", r.lr) + ", seed " + std::to_string(r.seed) +
         " (weights and data order), float32. Held-out: the corpus's tail, the first " +
         std::to_string(r.eval_windows) + " windows, the same for every layout.\n\n";
    s +=
        "| layout | params | held-out loss (nats/token) | perplexity | train tokens/s | seconds |\n"
        "|---|---|---|---|---|---|\n";
    for (const ExploreLayoutResult& l : r.layouts)
      if (l.trained)
        s += "| " + l.layout.name + " | " + params_label(l.params) + " | " +
             fmt("%.4f", l.heldout_loss) + " | " + fmt("%.2f", ppl(l)) + " | " +
             fmt("%.0f", l.train_tokens_per_s) + " | " + fmt("%.0f", l.train_seconds) + " |\n";
  }
  s += "\n## Plots\n\n";
  if (!r.contexts.empty()) s += "![throughput vs context](throughput.svg)\n\n";
  if (!r.memory_contexts.empty()) s += "![memory vs context](memory.svg)\n\n";
  if (r.train) s += "![held-out perplexity per layout](perplexity.svg)\n";
  return s;
}

std::string explore_json(const ExploreReport& r) {
  using json = nlohmann::json;
  json j;
  j["command"] = r.command;
  j["base"] = r.base;
  j["cpu"] = r.cpu;
  j["threads"] = r.threads;
  j["weights"] = r.weights;
  j["kv_plan"] = kv_dtype_name(r.kv_plan);
  j["kv_run"] = kv_dtype_name(r.kv_run);
  j["chunk"] = r.chunk;
  j["decode_tokens"] = r.decode_tokens;
  j["reps"] = r.reps;
  j["min_busy"] = r.min_busy;
  j["contexts"] = r.contexts;
  j["memory_contexts"] = r.memory_contexts;
  j["baseline_rss_bytes"] = r.baseline_rss;
  j["load_average_start"] = r.load_start;
  j["load_average_end"] = r.load_end;
  j["load_average_min"] = r.load_lo;
  j["load_average_max"] = r.load_hi;
  j["cpu_seconds"] = r.cpu_seconds;
  j["seconds"] = r.seconds;
  json aa = json::array();
  for (const MemoryPlan& m : r.all_attention_memory) aa.push_back(m.total_bytes);
  j["all_attention_memory_bytes"] = aa;
  if (r.train)
    j["train"] = {{"corpus", r.corpus},
                  {"tokenizer", r.tokenizer},
                  {"steps", r.steps},
                  {"batch", r.batch},
                  {"seq", r.seq},
                  {"lr", r.lr},
                  {"seed", r.seed},
                  {"eval_windows", r.eval_windows},
                  {"corpus_tokens", r.corpus_tokens}};
  json ls = json::array();
  for (const ExploreLayoutResult& l : r.layouts) {
    json o;
    o["layout"] = l.layout.name;
    o["attn_layer_period"] = l.cfg.attn_layer_period;
    o["attn_layer_offset"] = l.cfg.attn_layer_offset;
    o["n_attention"] = l.cfg.n_attention_layers();
    o["n_mamba"] = int64_t(l.cfg.layers.size()) - l.cfg.n_attention_layers();
    o["params"] = l.params;
    o["rss_before_load_bytes"] = l.rss_before_load;
    json runs = json::array();
    for (const ExploreContextRun& c : l.runs)
      runs.push_back({{"context", c.context},
                      {"prefill_tps", c.prefill_tps},
                      {"prefill_tps_min", c.prefill_lo},
                      {"prefill_tps_max", c.prefill_hi},
                      {"decode_tps", c.decode_tps},
                      {"decode_tps_min", c.decode_lo},
                      {"decode_tps_max", c.decode_hi},
                      {"prefill_seconds", c.prefill_seconds},
                      {"prefill_cores_busy", c.prefill_cores},
                      {"decode_cores_busy", c.decode_cores},
                      {"repeats", c.repeats},
                      {"peak_rss_bytes", c.peak_rss},
                      {"state_bytes", c.state_bytes},
                      {"plan_total_bytes", c.plan.total_bytes},
                      {"plan_kv_bytes", c.plan.kv_bytes},
                      {"plan_state_bytes", c.plan.state_bytes}});
    o["runs"] = runs;
    json mem = json::array();
    for (size_t i = 0; i < l.memory.size(); ++i) {
      const MemoryPlan& m = l.memory[i];
      mem.push_back({{"context", r.memory_contexts[i]},
                     {"weight_bytes", m.weight_bytes},
                     {"kv_bytes", m.kv_bytes},
                     {"state_bytes", m.state_bytes},
                     {"scratch_bytes", m.scratch_bytes},
                     {"total_bytes", m.total_bytes}});
    }
    o["memory"] = mem;
    if (l.trained)
      o["train"] = {{"heldout_loss", l.heldout_loss},
                    {"perplexity", ppl(l)},
                    {"seconds", l.train_seconds},
                    {"tokens_per_s", l.train_tokens_per_s}};
    ls.push_back(o);
  }
  j["layouts"] = ls;
  return j.dump(2) + "\n";
}

namespace {
std::vector<ChartTick> context_ticks(const std::vector<int64_t>& ctx) {
  std::vector<ChartTick> t;
  for (int64_t c : ctx) t.push_back({double(c), ctx_label(c)});
  return t;
}
}  // namespace

std::string throughput_svg(const ExploreReport& r) {
  LineChart pp{.title = "prefill (whole prompt)",
               .x_label = "context (tokens)",
               .y_label = "tokens/s",
               .log_x = true,
               .x_ticks = context_ticks(r.contexts)};
  LineChart tg{.title = "decode (" + std::to_string(r.decode_tokens) + " tokens after the context)",
               .x_label = "context (tokens)",
               .y_label = "tokens/s",
               .log_x = true,
               .x_ticks = context_ticks(r.contexts)};
  for (const ExploreLayoutResult& l : r.layouts) {
    ChartSeries a{.name = l.layout.name}, d{.name = l.layout.name};
    for (const ExploreContextRun& c : l.runs) {
      a.points.emplace_back(double(c.context), c.prefill_tps);
      d.points.emplace_back(double(c.context), c.decode_tps);
    }
    pp.series.push_back(a);
    tg.series.push_back(d);
  }
  pp.note = r.base + ", " + r.weights + " weights, " + std::to_string(r.threads) + " threads";
  tg.note = "K/V cache " + std::string(kv_dtype_name(r.kv_run));
  return line_charts_svg({pp, tg});
}

std::string memory_svg(const ExploreReport& r) {
  LineChart c{.title = "planned memory of one sequence vs context",
              .x_label = "context (tokens)",
              .y_label = "MiB (log)",
              .log_x = true,
              .log_y = true,
              .x_ticks = context_ticks(r.memory_contexts)};
  for (const ExploreLayoutResult& l : r.layouts) {
    ChartSeries s{.name = l.layout.name};
    for (size_t i = 0; i < l.memory.size(); ++i)
      s.points.emplace_back(double(r.memory_contexts[i]),
                            double(l.memory[i].total_bytes) / (1024.0 * 1024.0));
    c.series.push_back(s);
  }
  c.note = "plan_memory: " + r.weights + " weights + " + kv_dtype_name(r.kv_plan) +
           " K/V + Mamba state + scratch (" + r.base + ")";
  return line_chart_svg(c);
}

std::string perplexity_svg(const ExploreReport& r) {
  BarChart c{.title = "held-out perplexity after " + std::to_string(r.steps) + " steps",
             .y_label = "perplexity (lower is better)"};
  for (const ExploreLayoutResult& l : r.layouts)
    if (l.trained) c.bars.emplace_back(l.layout.name, ppl(l));
  c.note = std::to_string(r.steps) + " steps x " + std::to_string(r.batch) + " x " +
           std::to_string(r.seq) + " tokens, lr " + fmt("%g", r.lr) + ", seed " +
           std::to_string(r.seed) + ", same held-out windows";
  return bar_chart_svg(c);
}

}  // namespace jamba::app
