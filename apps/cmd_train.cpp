// `jamba train`: train a Jamba model on a text corpus (docs/TRAINING.md). Data parallel under
// mpirun; Ctrl-C saves a checkpoint and exits; --resume continues bit-identically.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "apps/bench_util.h"
#include "apps/commands.h"
#include "apps/optim_options.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/tokenizer.h"
#include "model/presets.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/model_info.h"
#include "train/comm.h"
#include "train/lora_merge.h"
#include "train/lora_train.h"
#include "train/trainer.h"

namespace jamba::app {

namespace {

volatile std::sig_atomic_t g_stop = 0;

extern "C" void on_stop_signal(int) {
  g_stop = 1;
  const char msg[] = "\n[interrupt: saving a checkpoint after this step; again to abort]\n";
  ssize_t r = ::write(2, msg, sizeof msg - 1);
  (void)r;
  signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

struct TrainCliOpts {
  std::string config, init_from, tokenizer, out, export_dir, export_dtype = "bf16";
  int64_t lora_rank = 0;
  double lora_alpha = 0;
  std::string lora_targets, base_dtype = "auto", base_activations = "auto";
  std::vector<std::string> corpus;
  bool resume = false;
  uint64_t init_seed = 0;
  int threads = 0;
  CorpusOptions corpus_opts;
  TrainOptions train;
};

int default_threads() {
  // Ranks sharing a machine split its cores.
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int n = local ? std::atoi(local) : 1;
  if (n <= 1) return 0;
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return int(std::max<long>(1, cores / n));
}

}  // namespace

Runner add_train(CLI::App& app) {
  auto o = std::make_shared<TrainCliOpts>();
  TrainOptions& t = o->train;
  app.add_option("--config", o->config,
                 "model to train from scratch: config.json or a preset (r3b, moe1b, mini, tiny)");
  app.add_option("--init-from", o->init_from, "start from this checkpoint's weights instead");
  app.add_option("--corpus", o->corpus, "UTF-8 text file(s); each non-empty line is a document")
      ->required();
  app.add_option("--tokenizer", o->tokenizer,
                 "SentencePiece tokenizer.model (default: the --init-from checkpoint's)");
  app.add_option("--out", t.out_dir, "output directory (checkpoint-<step>/ subdirectories)")->required();
  app.add_flag("--resume", o->resume, "continue from the latest checkpoint in --out");
  app.add_option("--steps", t.steps, "optimizer steps in total")->default_val(1000)->check(CLI::PositiveNumber);
  app.add_option("--batch", t.batch, "sequences per global batch")->default_val(8)->check(CLI::PositiveNumber);
  app.add_option("--micro-batch", t.micro_batch, "sequences per forward/backward in a process (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seq-len", o->corpus_opts.seq_len, "tokens per sequence")->default_val(256);
  app.add_option("--holdout", o->corpus_opts.holdout_fraction, "fraction of the corpus held out")
      ->default_val(0.02);
  add_optimizer_options(app, t.adam, t.clip, t.schedule, "cosine", 0.1);
  app.add_option("--seed", t.seed, "data order seed");
  app.add_option("--init-seed", o->init_seed, "weight initialisation seed (with --config)");
  app.add_option("--log-every", t.log_every, "progress line every N steps")->default_val(10)->check(CLI::PositiveNumber);
  app.add_option("--eval-every", t.eval_every, "held-out loss every N steps (0: at the end)")
      ->default_val(100)->check(CLI::NonNegativeNumber);
  app.add_option("--eval-windows", t.eval_windows, "held-out sequences per evaluation")
      ->default_val(64)->check(CLI::PositiveNumber);
  app.add_option("--save-every", t.save_every, "checkpoint every N steps (0: at the end)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--keep", t.keep, "checkpoints kept")->default_val(2)->check(CLI::PositiveNumber);
  app.add_option("--export", o->export_dir, "also write the final model here (HF layout)");
  app.add_option("--export-dtype", o->export_dtype, "dtype of --export: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_flag("--quiet", t.quiet, "no progress output");
  app.add_option("--threads", o->threads, "threads per process (0 = all cores / local ranks)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--lora-rank", o->lora_rank,
                 "train LoRA adapters of this rank on the frozen --init-from model (0 = full "
                 "training); checkpoints then hold a PEFT adapter (adapter_config.json + "
                 "adapter_model.safetensors) for --lora")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--lora-alpha", o->lora_alpha, "LoRA alpha: the update is alpha/rank * B A "
                 "(default 2 * rank)")->check(CLI::PositiveNumber);
  app.add_option("--lora-targets", o->lora_targets,
                 "comma-separated modules to adapt (default in_proj,x_proj,out_proj,q_proj,"
                 "k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,router; also dt_proj, all)");
  app.add_option("--base-dtype", o->base_dtype,
                 "LoRA: how the frozen base is held: auto (as stored), f32, bf16, int8, q4")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "int8", "q4"}));
  app.add_option("--activations", o->base_activations,
                 "LoRA: inputs of the frozen bf16 matrices' GEMMs, forward and backward: auto (bf16 "
                 "for a bf16 base, as a bf16 framework trains it: oneDNN), f32, bf16")
      ->check(CLI::IsMember({"auto", "f32", "bf16"}));
  app.add_option("--checkpoint-every", t.checkpoint_every,
                 "activation checkpointing: keep only every K-th layer's input and recompute "
                 "the rest in the backward (0 = keep all activations)")
      ->check(CLI::NonNegativeNumber);
  return [o]() {
    namespace fs = std::filesystem;
    std::unique_ptr<Comm> comm = world_comm();
    set_num_threads(o->threads > 0 ? o->threads : default_threads());
    if (o->config.empty() == o->init_from.empty())
      fail("[train] give exactly one of --config (from scratch) and --init-from (a checkpoint)");
    std::string tok_path = o->tokenizer;
    if (tok_path.empty()) {
      if (o->init_from.empty()) fail("[train] --tokenizer is required with --config");
      tok_path = (fs::path(o->init_from) / "tokenizer.model").string();
      if (!fs::is_regular_file(tok_path))
        fail("[train] ", o->init_from, " has no tokenizer.model: give --tokenizer");
    }
    if (!fs::is_regular_file(tok_path)) fail("[train] tokenizer file not found: ", tok_path);
    o->train.tokenizer_path = tok_path;
    const Tokenizer tok = Tokenizer::load(tok_path);
    const bool lora = o->lora_rank > 0;
    if (lora && o->init_from.empty())
      fail("[train] --lora-rank needs --init-from (the model whose adapters are trained)");
    ParamStore P;
    std::unique_ptr<Weights> base;
    bool base_bf16_inputs = false;
    LoraConfig lc;
    if (lora) {
      lc.rank = o->lora_rank;
      lc.alpha = o->lora_alpha > 0 ? o->lora_alpha : 2.0 * double(o->lora_rank);
      lc.targets = o->lora_targets.empty() ? default_lora_targets()
                                           : parse_lora_targets(o->lora_targets);
      const JambaConfig cfg =
          JambaConfig::from_file((fs::path(o->init_from) / "config.json").string());
      base = std::make_unique<Weights>(
          Weights::load(cfg, o->init_from, weight_type_from_name(o->base_dtype)));
      set_matmul_activations(*base, cfg, matmul_activations_from_name(o->base_activations));
      base_bf16_inputs = base->bf16_activations;
      P = lora_param_store(cfg, lc, o->init_seed);
    } else if (!o->init_from.empty()) {
      P = ParamStore::load(o->init_from);
    } else {
      const JambaConfig cfg = is_preset(o->config) ? preset_config(o->config)
                                                   : JambaConfig::from_file(o->config);
      P = ParamStore::random(cfg, o->init_seed, cfg.initializer_range);
    }
    if (P.cfg.vocab_size < tok.vocab_size())
      fail("[train] the model's vocab_size ", P.cfg.vocab_size, " is smaller than the tokenizer's ",
           tok.vocab_size());
    const bool root = comm->is_root();
    const bool quiet = o->train.quiet;
    auto t0 = std::chrono::steady_clock::now();
    const TokenDataset data =
        TokenDataset::from_text(o->corpus, tok, o->corpus_opts, P.cfg.vocab_size);
    const ModelStats ms = model_stats(P.cfg);
    if (root && !quiet && lora)
      std::fprintf(stderr, "lora: rank %lld, alpha %g, %zu modules, base %s (%s, frozen; %s GEMM "
                   "inputs)\n",
                   static_cast<long long>(lc.rank), lc.alpha, P.size() / 2,
                   o->init_from.c_str(), weight_type_name(base->type),
                   base->bf16_activations ? "bf16" : "f32");
    if (root && !quiet) {
      int64_t n_params = 0;
      for (size_t i = 0; i < P.size(); ++i) n_params += P.numel(i);
      std::fprintf(stderr,
                   "corpus: %lld tokens (%lld training + %lld held-out windows of %lld) in %.1f s\n"
                   "model: %.2fM %s parameters, %zu layers; %s, %d threads each\n",
                   static_cast<long long>(data.total_tokens()),
                   static_cast<long long>(data.train_windows()),
                   static_cast<long long>(data.heldout_windows()),
                   static_cast<long long>(data.seq_len()),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                   double(n_params) / 1e6, lora ? "trainable (adapter)" : "", P.cfg.layers.size(),
                   comm->describe().c_str(),
                   num_threads());
    }
    o->train.schedule.total_steps = o->train.steps;
    Trainer trainer = lora ? Trainer(std::move(P), std::move(*base), lc, data, o->train, *comm)
                           : Trainer(std::move(P), data, o->train, *comm);
    base.reset();
    if (o->resume) {
      trainer.resume(o->train.out_dir);
    } else if (!o->init_from.empty()) {
      // What the run starts from, on the same held-out windows as every later evaluation.
      const float e0 = trainer.evaluate();
      if (root && !quiet)
        std::fprintf(stderr, "held-out loss of %s before training: %.4f (perplexity %.2f)\n",
                     o->init_from.c_str(), e0, std::exp(double(e0)));
    }
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    const TrainResult r = trainer.run(&g_stop);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (root && !o->export_dir.empty() && !r.interrupted) {
      const DType dt = o->export_dtype == "f32" ? DType::F32 : DType::BF16;
      if (lora) {  // the merged model: base + adapter
        ParamStore merged = ParamStore::load(o->init_from);
        merge_lora_into(merged, lora_weights_of(trainer.params(), lc));
        write_hf_model(o->export_dir, merged, dt, tok_path);
      } else {
        write_hf_model(o->export_dir, trainer.params(), dt, tok_path);
      }
      if (!quiet) std::fprintf(stderr, "exported %s (%s)\n", o->export_dir.c_str(), o->export_dtype.c_str());
    }
    if (root) {
      std::printf("steps %lld  held-out loss %.4f  perplexity %.2f  %.0f tokens/s  %.1f s  %s\n",
                  static_cast<long long>(r.step), r.last_eval, std::exp(double(r.last_eval)),
                  r.tokens_per_s, r.seconds, r.checkpoint.c_str());
      // Model FLOPs per trained token (recomputation by activation checkpointing not counted,
      // as MFU is defined): the forward (2 per active matmul weight + causal attention scores
      // and values), the backward's dX (the same again) and, when every weight trains, its dW
      // (again). MFU against the peak of the GEMM kernel the big matrices run, measured now: the
      // bf16 one for a LoRA base with bf16 GEMM inputs, else f32 sgemm.
      const double T = double(data.seq_len());
      const JambaConfig& mc = trainer.params().cfg;
      const double attn = 4.0 * (T / 2) * double(mc.num_attention_heads * mc.head_dim()) *
                          double(mc.n_attention_layers());
      const double flop_tok = (double(ms.flops_per_token) + attn) * (lora ? 2.0 : 3.0);
      if (!quiet && r.tokens_per_s > 0) {
        const double gf = r.tokens_per_s * flop_tok / 1e9;
        const bool a16 = lora && base_bf16_inputs;
        const double peak =
            bench::measure_peaks(a16 ? WeightType::BF16 : WeightType::F32, a16, 0).gemm_gflops;
        std::printf("model FLOPs %.2f GFLOP/token  %.1f GFLOP/s  MFU %.1f%% of the %s GEMM peak "
                    "%.1f GFLOP/s  peak RSS %.2f GiB\n",
                    flop_tok / 1e9, gf, 100.0 * gf / peak, a16 ? "bf16" : "f32", peak,
                    double(bench::peak_rss_bytes()) / double(1 << 30));
      }
    }
    return r.interrupted ? 130 : 0;
  };
}

}  // namespace jamba::app
