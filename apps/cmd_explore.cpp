// `jamba explore`: the attention:Mamba trade-off of one base shape, measured. Each layout (1:7,
// all-mamba, ...) is the base config with another attn_layer_period / offset; for each, a random
// model is written and loaded, prefill and decode speed are measured at every --context, memory
// is planned at every --memory-context (and checked against the peak RSS of the runs), and with
// --train every layout is trained for the same budget and its held-out perplexity reported.
// Writes explore.md, explore.json and SVG plots to --out (docs/EXPLORE.md).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "apps/bench_util.h"
#include "apps/commands.h"
#include "apps/explore_report.h"
#include "apps/optim_options.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/threads.h"
#include "io/svg_chart.h"
#include "io/tokenizer.h"
#include "model/init.h"
#include "model/model.h"
#include "model/model_info.h"
#include "model/presets.h"
#include "train/comm.h"
#include "train/trainer.h"

namespace jamba::app {

namespace {

namespace fs = std::filesystem;

struct ExploreOpts {
  std::string preset, config, out, dtype = "bf16", kv = "auto";
  std::vector<std::string> layouts{"all-mamba", "1:7", "1:3", "1:1", "all-attention"};
  std::vector<std::string> contexts{"1k", "4k", "16k"};
  std::vector<std::string> memory_contexts{"1k", "4k", "16k", "64k", "256k"};
  int threads = 0, reps = 1;
  double min_busy = 0;
  int64_t chunk = 512, decode_tokens = 16;
  uint64_t seed = 0;
  // --train
  std::string corpus, tokenizer;
  int64_t steps = 0, batch = 8, seq = 256, eval_windows = 64;
  double holdout = 0.02;
  AdamWOptions adam;
  double clip = 1.0;
  LrSchedule schedule;
};

// The run's temp directory for the SIGINT / SIGTERM handler. Each checkpoint in it is deleted
// right after it is loaded, so at a signal the directory is usually empty and rmdir (which is
// async-signal-safe) removes it; then the signal's default action ends the process.
char g_tmp_dir[4096];
extern "C" void on_explore_signal(int sig) {
  if (g_tmp_dir[0]) ::rmdir(g_tmp_dir);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// A directory removed with everything in it when this goes out of scope (errors included).
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag)
      : path(fs::temp_directory_path() /
             ("jamba-explore-" + tag + "-" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
    if (path.string().size() < sizeof g_tmp_dir) {
      std::snprintf(g_tmp_dir, sizeof g_tmp_dir, "%s", path.c_str());
      ::signal(SIGINT, on_explore_signal);
      ::signal(SIGTERM, on_explore_signal);
    }
  }
  ~TempDir() {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    g_tmp_dir[0] = 0;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// "1:7" -> "1-7": a file name.
std::string file_tag(const std::string& layout) {
  std::string s;
  for (char c : layout) s += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '-';
  return s;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "unknown CPU";
}

std::string f2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// Progress on stderr: one line per step, with the time since the command started.
// Also samples the machine's load average at every step (other work on a shared machine).
struct Progress {
  bench::Clock::time_point t0 = bench::Clock::now();
  mutable double load_lo = 1e9, load_hi = -1;
  template <typename... Args>
  void operator()(const std::string& layout, const Args&... what) const {
    const double load = bench::load_average();
    load_lo = std::min(load_lo, load);
    load_hi = std::max(load_hi, load);
    const double el = bench::seconds(t0, bench::Clock::now());
    std::fprintf(stderr, "[explore %4d:%02d] %-13s %s\n", int(el) / 60, int(el) % 60,
                 layout.c_str(), cat(what...).c_str());
  }
};

// The command as run (/proc/self/cmdline), the binary's path replaced by "jamba".
std::string command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::string s;
  bool first = true;
  for (size_t i = 0; i < raw.size();) {
    const size_t e = raw.find('\0', i);
    std::string w = raw.substr(i, e == std::string::npos ? std::string::npos : e - i);
    if (first) w = "jamba";  // the binary's path says nothing about the run
    s += (first ? "" : " ") + w;
    first = false;
    if (e == std::string::npos) break;
    i = e + 1;
  }
  return s;
}

// One prefill to `ctx` on a fresh state, then decode, with this process's CPU use during each.
struct SpeedSample {
  double prefill_s = 0, decode_s = 0, prefill_cores = 0, decode_cores = 0;
  int64_t peak_rss = 0, state_bytes = 0;
};
SpeedSample speed_sample(const Model& model, const std::vector<int32_t>& prompt, int64_t chunk,
                         int64_t decode_tokens, int64_t salt) {
  SpeedSample s;
  bench::release_free_heap();
  bench::reset_peak_rss();
  const double cpu0 = bench::process_cpu_seconds();
  SequenceState st = model.new_state();
  s.prefill_s = bench::feed(model, st, prompt, chunk);
  const double cpu1 = bench::process_cpu_seconds();
  s.peak_rss = bench::peak_rss_bytes();
  s.state_bytes = int64_t(st.bytes());
  s.decode_s = bench::decode(model, st, decode_tokens, salt);
  s.prefill_cores = (cpu1 - cpu0) / s.prefill_s;
  s.decode_cores = (bench::process_cpu_seconds() - cpu1) / s.decode_s;
  return s;
}

// Prefill + decode of one layout at every --context. With --min-busy F, a run in which this
// process used less than F x threads cores during its prefill or decode (another process held a
// core: on 2 cores OpenMP barriers then cost a time slice each, decode ran ~30x slower) is
// measured again after a pause, up to kMaxRepeats times per run; the report counts the repeats.
constexpr int kMaxRepeats = 5;
void measure_speed(const Model& model, const ExploreOpts& o, const std::vector<int64_t>& contexts,
                   const MemoryPlanOptions& plan_opts, ExploreLayoutResult& res,
                   const Progress& progress) {
  const JambaConfig& c = model.config();
  {  // warm-up: first-touch allocations, thread pool start, oneDNN primitive creation
    SequenceState warm = model.new_state();
    bench::feed(model, warm,
                bench::synthetic_tokens(std::min<int64_t>(64, o.chunk), c.vocab_size, 9), o.chunk);
    bench::decode(model, warm, 2);
  }
  const double min_cores = o.min_busy * double(num_threads());
  for (int64_t ctx : contexts) {
    ExploreContextRun run;
    run.context = ctx;
    MemoryPlanOptions po = plan_opts;
    po.context = ctx;
    po.kv = model.kv_dtype();
    run.plan = plan_memory(c, po);
    std::vector<double> pp, tg;
    for (int r = 0; r < o.reps; ++r) {
      const std::vector<int32_t> prompt = bench::synthetic_tokens(ctx, c.vocab_size, 2 + r);
      SpeedSample s;
      for (int attempt = 0;; ++attempt) {
        s = speed_sample(model, prompt, o.chunk, o.decode_tokens, r);
        progress(res.layout.name, binary_count_label(double(ctx)), " run ", r + 1, "/", o.reps,
                 ": prefill ", f2(double(ctx) / s.prefill_s), " tokens/s (", f2(s.prefill_s),
                 " s, ", f2(s.prefill_cores), " cores busy, peak RSS ",
                 human_bytes(double(s.peak_rss)), "), decode ", o.decode_tokens, " tokens ",
                 f2(double(o.decode_tokens) / s.decode_s), " tokens/s (", f2(s.decode_cores),
                 " cores busy)");
        const bool starved = s.prefill_cores < min_cores || s.decode_cores < min_cores;
        if (!starved || attempt == kMaxRepeats) break;
        ++run.repeats;
        // Give the other work time to end: 10, 20, 40, 60, 60 s.
        const int wait_s = std::min(60, 10 << attempt);
        progress(res.layout.name, "below --min-busy ", f2(min_cores), " cores: measuring again in ",
                 wait_s, " s");
        ::sleep(unsigned(wait_s));
      }
      run.prefill_cores = r == 0 ? s.prefill_cores : std::min(run.prefill_cores, s.prefill_cores);
      run.decode_cores = r == 0 ? s.decode_cores : std::min(run.decode_cores, s.decode_cores);
      if (r == 0) {
        run.peak_rss = s.peak_rss;
        run.state_bytes = s.state_bytes;
        run.prefill_seconds = s.prefill_s;
      }
      pp.push_back(double(ctx) / s.prefill_s);
      tg.push_back(double(o.decode_tokens) / s.decode_s);
    }
    const bench::Stat sp = bench::stats(pp), sd = bench::stats(tg);
    run.prefill_tps = sp.median, run.prefill_lo = sp.lo, run.prefill_hi = sp.hi;
    run.decode_tps = sd.median, run.decode_lo = sd.lo, run.decode_hi = sd.hi;
    res.runs.push_back(run);
  }
}

}  // namespace

Runner add_explore(CLI::App& app) {
  auto o = std::make_shared<ExploreOpts>();
  auto* preset =
      app.add_option("--preset", o->preset, "base shape: a preset (r3b, moe1b, mini, tiny)");
  auto* config = app.add_option("--config", o->config, "base shape: a config.json");
  preset->excludes(config);
  app.add_option("--layouts", o->layouts,
                 "attention:Mamba layouts (list): all-mamba, all-attention, a:m (reduced by the "
                 "gcd; must be 1:m after it)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--context", o->contexts,
                 "contexts to measure prefill and decode at (list of token counts: 1k = 1024)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--memory-context", o->memory_contexts, "contexts to plan memory at (list)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--dtype", o->dtype, "weights in memory")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--kv-dtype", o->kv, kKvDtypeHelp)
      ->check(CLI::IsMember({"auto", "f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--threads,-t", o->threads, "threads (0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--chunk", o->chunk, "prompt tokens per forward")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--decode-tokens", o->decode_tokens, "tokens decoded after each context")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--reps,-r", o->reps, "runs per context (median reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--min-busy", o->min_busy,
                 "measure a run again (after 10-60 s, up to 5 times) when this process used fewer "
                 "than this fraction of its threads' cores during it (0 = off; e.g. 0.8 on a "
                 "shared machine)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--seed", o->seed, "seed of the random weights (and of --train's data order)");
  app.add_option("--out", o->out, "output directory (explore.md, explore.json, *.svg)")->required();
  auto* train = app.add_option("--train", o->corpus,
                               "also train every layout on this corpus (one document per line) "
                               "and report held-out perplexity");
  app.add_option("--tokenizer", o->tokenizer, "--train: SentencePiece tokenizer.model");
  app.add_option("--steps", o->steps, "--train: optimizer steps per layout")
      ->check(CLI::PositiveNumber);
  app.add_option("--batch", o->batch, "--train: sequences per step")
      ->default_val(8)
      ->check(CLI::PositiveNumber);
  app.add_option("--seq", o->seq, "--train: tokens per sequence")
      ->default_val(256)
      ->check(CLI::PositiveNumber);
  app.add_option("--holdout", o->holdout, "--train: fraction of the corpus held out")
      ->default_val(0.02);
  app.add_option("--eval-windows", o->eval_windows, "--train: held-out windows evaluated")
      ->default_val(64)
      ->check(CLI::PositiveNumber);
  add_optimizer_options(app, o->adam, o->clip, o->schedule, "cosine", 0.1);
  return [o, train]() {
    if (o->preset.empty() == o->config.empty())
      fail("[explore] give exactly one of --preset NAME and --config CONFIG.json");
    const bool do_train = train->count() > 0;
    if (do_train && o->tokenizer.empty()) fail("[explore] --train needs --tokenizer FILE");
    if (do_train && o->steps <= 0) fail("[explore] --train needs --steps N (N >= 1)");
    set_num_threads(o->threads);
    const Progress progress;
    const JambaConfig base =
        o->preset.empty() ? JambaConfig::from_file(o->config) : preset_config(o->preset);

    // Everything the options say is checked before any work starts.
    ExploreReport rep;
    rep.command = command_line();
    rep.base = o->preset.empty() ? o->config : "preset " + o->preset;
    rep.cpu = cpu_model();
    rep.threads = num_threads();
    rep.weights = o->dtype;
    const WeightType wt = o->dtype == "f32" ? WeightType::F32 : WeightType::BF16;
    const KvDtype kv_req = kv_dtype_from_name(o->kv);
    rep.kv_plan = resolve_kv_dtype(kv_req, wt == WeightType::BF16);
    rep.chunk = o->chunk;
    rep.decode_tokens = o->decode_tokens;
    rep.reps = o->reps;
    rep.min_busy = o->min_busy;
    rep.contexts = bench::parse_token_counts(o->contexts, "--context", int64_t(1) << 24);
    rep.memory_contexts =
        bench::parse_token_counts(o->memory_contexts, "--memory-context", kMaxPositionEmbeddings);
    JAMBA_CHECK(!o->layouts.empty(), "[--layouts] expected at least one layout, got none");
    std::vector<LayerLayout> layouts;
    for (const std::string& s : o->layouts) {
      layouts.push_back(parse_layer_layout(s));
      for (size_t i = 0; i + 1 < layouts.size(); ++i)
        if (layouts[i].name == s) fail("[--layouts] layout '", s, "' is given twice");
    }
    const MemoryPlanOptions plan_opts{.kv = rep.kv_plan, .weights = wt, .chunk = o->chunk};
    for (int64_t m : rep.memory_contexts) {
      MemoryPlanOptions po = plan_opts;
      po.context = m;
      rep.all_attention_memory.push_back(plan_memory(all_attention_variant(base), po));
    }
    for (const LayerLayout& l : layouts) {
      ExploreLayoutResult res;
      res.layout = l;
      res.cfg = with_layer_layout(base, l);
      res.params = model_stats(res.cfg).params_total;
      for (int64_t m : rep.memory_contexts) {
        MemoryPlanOptions po = plan_opts;
        po.context = m;
        res.memory.push_back(plan_memory(res.cfg, po));
      }
      const int64_t n_attn = res.cfg.n_attention_layers();
      if (!l.all_mamba() && n_attn == 0)
        progress(l.name, "warning: period ", res.cfg.attn_layer_period, " offset ",
                 res.cfg.attn_layer_offset, " leaves no attention layer in ",
                 base.num_hidden_layers, " layers (the same model as all-mamba)");
      rep.layouts.push_back(std::move(res));
    }
    std::unique_ptr<Tokenizer> tok;
    std::unique_ptr<TokenDataset> data;
    std::unique_ptr<Comm> comm;
    if (do_train) {
      if (!fs::is_regular_file(o->tokenizer))
        fail("[explore] tokenizer file not found: ", o->tokenizer);
      tok = std::make_unique<Tokenizer>(Tokenizer::load(o->tokenizer));
      if (base.vocab_size < tok->vocab_size())
        fail("[explore] the base shape's vocab_size ", base.vocab_size,
             " is smaller than the tokenizer's ", tok->vocab_size());
      data = std::make_unique<TokenDataset>(TokenDataset::from_text(
          {o->corpus}, *tok, {.seq_len = o->seq, .holdout_fraction = o->holdout}, base.vocab_size));
      comm = world_comm();
      rep.train = true;
      rep.corpus = o->corpus;
      rep.tokenizer = o->tokenizer;
      rep.steps = o->steps;
      rep.batch = o->batch;
      rep.seq = o->seq;
      rep.lr = o->adam.lr;
      rep.seed = o->seed;
      rep.eval_windows = std::min(o->eval_windows, data->heldout_windows());
      rep.train_tokens = o->steps * o->batch * o->seq;
      rep.corpus_tokens = data->total_tokens();
      progress("corpus", data->total_tokens(), " tokens: ", data->train_windows(), " training and ",
               data->heldout_windows(), " held-out windows of ", o->seq);
    }
    fs::create_directories(o->out);

    bench::release_free_heap();
    rep.baseline_rss = bench::current_rss_bytes();
    rep.load_start = bench::load_average();
    const double cpu0 = bench::process_cpu_seconds();
    if (rep.load_start > 2.5)
      progress("machine", "load average ", rep.load_start,
               " on this machine: other work competes for the cores, speeds will be lower");
    TempDir tmp("run");
    // Speed and memory of every layout first, then the training: the measurements run back to
    // back, and no trainer's freed memory is still resident during them.
    for (size_t il = 0; il < rep.layouts.size(); ++il) {
      ExploreLayoutResult& res = rep.layouts[il];
      const std::string& name = res.layout.name;
      const int64_t n_attn = res.cfg.n_attention_layers();
      progress(name, "layout ", il + 1, "/", rep.layouts.size(), ": attn_layer_period ",
               res.cfg.attn_layer_period, ", offset ", res.cfg.attn_layer_offset, " -> ", n_attn,
               " attention + ", int64_t(res.cfg.layers.size()) - n_attn, " Mamba layers, ",
               f2(double(res.params) / 1e6), "M parameters");
      const fs::path dir = tmp.path / file_tag(name);
      init_checkpoint(res.cfg, dir.string(), o->seed,
                      wt == WeightType::F32 ? DType::F32 : DType::BF16);
      bench::release_free_heap();
      res.rss_before_load = bench::current_rss_bytes();
      {
        const Model model = Model::load(dir.string(), {.weights = wt, .kv = kv_req});
        // The weights are in memory now (read, or mapped: an unlinked file stays mapped).
        fs::remove_all(dir);
        rep.kv_run = model.kv_dtype();
        progress(name, "random weights written and loaded (", o->dtype, ", K/V cache ",
                 kv_dtype_name(model.kv_dtype()), ")");
        measure_speed(model, *o, rep.contexts, plan_opts, res, progress);
      }
    }
    for (size_t il = 0; il < rep.layouts.size() && do_train; ++il) {
      ExploreLayoutResult& res = rep.layouts[il];
      const std::string& name = res.layout.name;
      TrainOptions t;
      t.out_dir = (tmp.path / ("train-" + file_tag(name))).string();
      t.steps = o->steps;
      t.batch = o->batch;
      t.adam = o->adam;
      t.clip = o->clip;
      t.schedule = o->schedule;
      t.schedule.total_steps = o->steps;
      t.seed = o->seed;
      t.log_every = std::max<int64_t>(1, o->steps / 10);
      t.eval_every = 0;
      t.eval_windows = o->eval_windows;
      t.keep = 1;
      t.tokenizer_path = o->tokenizer;
      progress(name, "training ", o->steps, " steps of ", o->batch, " x ", o->seq, " tokens (",
               il + 1, "/", rep.layouts.size(), ")");
      Trainer trainer(ParamStore::random(res.cfg, o->seed, res.cfg.initializer_range), *data, t,
                      *comm);
      const TrainResult tr = trainer.run(nullptr);
      fs::remove_all(t.out_dir);
      res.trained = true;
      res.heldout_loss = tr.last_eval;
      res.train_seconds = tr.seconds;
      res.train_tokens_per_s = tr.tokens_per_s;
      progress(name, "trained: held-out loss ", f2(tr.last_eval), ", perplexity ",
               f2(std::exp(double(tr.last_eval))), " (", f2(tr.seconds), " s)");
    }
    rep.load_end = bench::load_average();
    rep.load_lo = std::min(progress.load_lo, rep.load_end);
    rep.load_hi = std::max(progress.load_hi, rep.load_end);
    rep.seconds = bench::seconds(progress.t0, bench::Clock::now());
    rep.cpu_seconds = bench::process_cpu_seconds() - cpu0;

    const fs::path out(o->out);
    write_file_atomic((out / "explore.md").string(), explore_markdown(rep));
    write_file_atomic((out / "explore.json").string(), explore_json(rep));
    write_file_atomic((out / "throughput.svg").string(), throughput_svg(rep));
    write_file_atomic((out / "memory.svg").string(), memory_svg(rep));
    if (rep.train) write_file_atomic((out / "perplexity.svg").string(), perplexity_svg(rep));
    std::printf("%s", explore_table(rep).c_str());
    progress("done", "wrote ", (out / "explore.md").string(),
             ", explore.json, throughput.svg, memory.svg", rep.train ? ", perplexity.svg" : "");
    return 0;
  };
}

}  // namespace jamba::app
