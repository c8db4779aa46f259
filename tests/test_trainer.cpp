// `jamba train` and its parts (src/train/data, trainer, comm): the data order, resume equal to an
// uninterrupted run (in process and through the CLI with Ctrl-C), SIGKILL while checkpoints are
// written, checkpoints that the inference path loads, and MPI data parallelism equal to one
// process with the same global batch.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "checkpoint_util.h"
#include "cli_util.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "runtime/forward_tool.h"
#include "tolerances.h"
#include "train/comm.h"
#include "train/data.h"
#include "train/lora_train.h"
#include "train/trainer.h"
#include "test_util.h"
#include "train_test_util.h"

namespace jamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testutil::describe;
using testutil::make_temp_dir;
using testutil::q;
using testutil::read_bytes;
using testutil::RunResult;
using testutil::write_bytes;

// A corpus, a 512-piece tokenizer trained on it, and a small hybrid config (Mamba, attention,
// MoE with the aux loss), built once.
struct TrainEnv {
  std::string error, dir, corpus, spm, config;
};

JambaConfig loop_config() {
  JambaConfig c = testutil::tiny_train_config(/*moe=*/true, /*tied=*/true);
  c.vocab_size = 512;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.output_router_logits = true;
  c.router_aux_loss_coef = 0.01;
  return c;
}

const TrainEnv& env() {
  static const TrainEnv e = [] {
    TrainEnv e;
    e.dir = make_temp_dir("train_env");
    e.corpus = e.dir + "/corpus.txt";
    write_bytes(e.corpus, testutil::training_text());
    const std::string args = "--input=" + e.corpus + " --model_prefix=" + e.dir +
                             "/spm --vocab_size=512 --model_type=bpe --byte_fallback=true "
                             "--character_coverage=1.0 --bos_id=1 --eos_id=2 --pad_id=0 "
                             "--unk_id=3 --num_threads=1 --minloglevel=2";
    const auto st = sentencepiece::SentencePieceTrainer::Train(args);
    if (!st.ok()) {
      e.error = "sentencepiece training failed: " + st.ToString();
      return e;
    }
    e.spm = e.dir + "/spm.model";
    e.config = e.dir + "/config.json";
    write_bytes(e.config, loop_config().to_json_text());
    return e;
  }();
  return e;
}

#define REQUIRE_ENV() ASSERT_TRUE(env().error.empty()) << env().error

CorpusOptions corpus_opts() {
  CorpusOptions o;
  o.seq_len = 32;
  o.holdout_fraction = 0.05;
  return o;
}

TrainOptions loop_options(const std::string& out) {
  TrainOptions o;
  o.out_dir = out;
  o.steps = 6;
  o.batch = 4;
  o.micro_batch = 2;
  o.adam.lr = 3e-3;
  o.schedule.kind = "cosine";
  o.schedule.warmup = 2;
  o.schedule.total_steps = 6;
  o.schedule.min_lr_ratio = 0.1;
  o.eval_every = 3;
  o.eval_windows = 4;
  o.keep = 10;
  o.seed = 7;
  o.tokenizer_path = env().spm;
  o.quiet = true;
  return o;
}

ParamStore fresh_params() { return ParamStore::random(loop_config(), 3, 0.02); }

// Mean next-token cross-entropy of one sequence through the inference path (full_forward).
double inference_ce(const Model& m, const TrainBatch& b) {
  TokenBatch in{1, b.T, b.ids, {}};
  const FullForwardResult fr = full_forward(m, in, false);
  const int64_t V = m.config().vocab_size;
  double ce = 0;
  for (int64_t t1 = 0; t1 + 1 < b.T; ++t1) {
    const float* row = fr.logits.data() + t1 * V;
    double mx = row[0], s = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(row[v]) - mx);
    ce += mx + std::log(s) - row[b.ids[size_t(t1 + 1)]];
  }
  return ce / double(b.T - 1);
}

TEST(TrainData, WindowOrderIsAPermutationPerEpochAndDeterministic) {
  REQUIRE_ENV();
  const Tokenizer tok = Tokenizer::load(env().spm);
  const TokenDataset d = TokenDataset::from_text({env().corpus}, tok, corpus_opts(), 512);
  const int64_t W = d.train_windows();
  ASSERT_GT(W, 8);
  ASSERT_GE(d.heldout_windows(), 1);
  // Every training window exactly once per epoch: compare the rows of epoch 0 as sets of rows.
  std::set<std::vector<int32_t>> seen0, seen1;
  std::vector<int32_t> first_rows0, first_rows1;
  for (int64_t s = 0; s < W; ++s) {
    const TrainBatch b0 = d.train_rows(11, 0, s, 1), b1 = d.train_rows(11, W, s, 1);
    seen0.insert(b0.ids);
    seen1.insert(b1.ids);
    if (s < 4) {
      first_rows0.insert(first_rows0.end(), b0.ids.begin(), b0.ids.end());
      first_rows1.insert(first_rows1.end(), b1.ids.begin(), b1.ids.end());
    }
  }
  EXPECT_EQ(seen0, seen1);  // the same windows...
  EXPECT_NE(first_rows0, first_rows1);  // ...in another order in the next epoch
  // Labels are the ids (HF convention), and the same seed gives the same batch, another seed not.
  const TrainBatch a = d.train_rows(11, 5, 0, 3), b = d.train_rows(11, 5, 0, 3);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(std::vector<int64_t>(a.ids.begin(), a.ids.end()), a.labels);
  EXPECT_NE(d.train_rows(12, 5, 0, 3).ids, a.ids);
  // Rows [r0, r0+n) of a global batch are the same whoever builds them (data parallel shards).
  const TrainBatch whole = d.train_rows(11, 8, 0, 4), tail = d.train_rows(11, 8, 2, 2);
  EXPECT_EQ(std::vector<int32_t>(whole.ids.begin() + 64, whole.ids.end()), tail.ids);
}

TEST(TrainData, ClearErrors) {
  REQUIRE_ENV();
  const Tokenizer tok = Tokenizer::load(env().spm);
  try {
    TokenDataset::from_text({env().dir + "/missing.txt"}, tok, corpus_opts(), 512);
    ADD_FAILURE() << "no error for a missing corpus";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.txt"), std::string::npos) << e.what();
  }
  const std::string small = env().dir + "/small.txt";
  write_bytes(small, "In the beginning.\n");
  try {
    TokenDataset::from_text({small}, tok, corpus_opts(), 512);
    ADD_FAILURE() << "no error for a corpus shorter than two windows";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
  }
  try {
    TokenDataset::from_text({env().corpus}, tok, corpus_opts(), 100);
    ADD_FAILURE() << "no error for token ids beyond the model's vocabulary";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocabulary [0, 100)"), std::string::npos) << e.what();
  }
}

// A run interrupted after 3 of 6 steps and resumed from its checkpoint ends with bit-identical
// weights, losses and held-out losses.
TEST(Trainer, ResumeIsBitIdentical) {
  REQUIRE_ENV();
  testutil::OneThread one;
  const Tokenizer tok = Tokenizer::load(env().spm);
  const TokenDataset d = TokenDataset::from_text({env().corpus}, tok, corpus_opts(), 512);
  auto comm = world_comm();
  const std::string outA = make_temp_dir("train_full"), outB = make_temp_dir("train_split");
  Trainer full(fresh_params(), d, loop_options(outA), *comm);
  const TrainResult ra = full.run(nullptr);
  EXPECT_EQ(ra.step, 6);
  EXPECT_FALSE(ra.interrupted);
  EXPECT_TRUE(fs::is_directory(outA + "/checkpoint-6"));
  {
    TrainOptions o = loop_options(outB);
    o.steps = 3;  // the schedule still ends at 6
    Trainer first(fresh_params(), d, o, *comm);
    first.run(nullptr);
  }
  Trainer second(fresh_params(), d, loop_options(outB), *comm);
  second.resume(outB);  // picks checkpoint-3
  const TrainResult rb = second.run(nullptr);
  EXPECT_EQ(rb.step, 6);
  ASSERT_EQ(full.params().size(), second.params().size());
  for (size_t i = 0; i < full.params().size(); ++i)
    EXPECT_EQ(full.params().data[i], second.params().data[i]) << full.params().specs[i].name;
  ASSERT_EQ(full.history().size(), second.history().size());
  for (size_t i = 0; i < full.history().size(); ++i) {
    EXPECT_EQ(full.history()[i].loss, second.history()[i].loss) << "step " << i + 1;
    EXPECT_EQ(full.history()[i].grad_norm, second.history()[i].grad_norm) << "step " << i + 1;
  }
  ASSERT_EQ(full.evals().size(), second.evals().size());
  for (size_t i = 0; i < full.evals().size(); ++i)
    EXPECT_EQ(full.evals()[i].loss, second.evals()[i].loss);
  // The run learnt something and the files of both runs hold the same model.
  EXPECT_LT(full.history().back().ce, full.history().front().ce);
  EXPECT_EQ(read_bytes(outA + "/checkpoint-6/model.safetensors"),
            read_bytes(outB + "/checkpoint-6/model.safetensors"));
  EXPECT_EQ(read_bytes(outA + "/checkpoint-6/optimizer.safetensors"),
            read_bytes(outB + "/checkpoint-6/optimizer.safetensors"));
  const std::string svg = read_bytes(outA + "/loss.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
}

TEST(Trainer, StopFlagSavesAndResumeRefusesAnotherSetup) {
  REQUIRE_ENV();
  testutil::OneThread one;
  const Tokenizer tok = Tokenizer::load(env().spm);
  const TokenDataset d = TokenDataset::from_text({env().corpus}, tok, corpus_opts(), 512);
  auto comm = world_comm();
  const std::string out = make_temp_dir("train_stop");
  volatile std::sig_atomic_t stop = 1;
  Trainer t(fresh_params(), d, loop_options(out), *comm);
  const TrainResult r = t.run(&stop);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.step, 0);
  EXPECT_TRUE(fs::is_regular_file(out + "/checkpoint-0/trainer_state.json"));
  TrainOptions other = loop_options(out);
  other.batch = 6;
  Trainer u(fresh_params(), d, other, *comm);
  try {
    u.resume(out);
    ADD_FAILURE() << "resume accepted another batch size";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'batch'"), std::string::npos) << m;
    EXPECT_NE(m.find("4"), std::string::npos) << m;
    EXPECT_NE(m.find("6"), std::string::npos) << m;
  }
  try {
    u.resume(make_temp_dir("train_empty"));
    ADD_FAILURE() << "resume from an empty directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no checkpoint"), std::string::npos) << e.what();
  }
}

// The checkpoint is an HF model directory that the inference path loads: its logits give the
// training loss.
TEST(Trainer, CheckpointLoadsForInferenceWithTheSameLoss) {
  REQUIRE_ENV();
  testutil::OneThread one;
  const Tokenizer tok = Tokenizer::load(env().spm);
  const TokenDataset d = TokenDataset::from_text({env().corpus}, tok, corpus_opts(), 512);
  auto comm = world_comm();
  const std::string out = make_temp_dir("train_hf");
  TrainOptions o = loop_options(out);
  o.steps = 2;
  Trainer t(fresh_params(), d, o, *comm);
  const std::string ck = t.run(nullptr).checkpoint;
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors",
                        "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(ck) / f)) << f;
  // HF names: every parameter once, no lm_head.weight (tied), nothing else.
  auto f = SafetensorsFile::open(ck + "/model.safetensors");
  std::set<std::string> names;
  for (const auto& [n, info] : f->tensors()) names.insert(n);
  const std::vector<std::string> order = hf_parameter_order(loop_config());
  EXPECT_EQ(names, std::set<std::string>(order.begin(), order.end()));
  EXPECT_EQ(names.count("lm_head.weight"), 0u);
  const Model m = Model::load(ck);
  const TrainBatch b = d.heldout_rows(0, 1);
  const double ce = inference_ce(m, b);
  const LossValues lv = train_forward(t.params(), b, {}, nullptr);
  EXPECT_NEAR(ce, lv.loss, tol::kTrainVsInference) << "inference " << ce << " training " << lv.loss;
}

// LoRA: adapters of a frozen base train (the held-out loss falls), a resumed run is
// bit-identical to an uninterrupted one, checkpoints hold a PEFT adapter (no model files), and
// the inference path with that adapter computes the training loss.
TEST(Trainer, LoraTrainsResumesAndLoadsForInference) {
  REQUIRE_ENV();
  testutil::OneThread one;
  const Tokenizer tok = Tokenizer::load(env().spm);
  const TokenDataset d = TokenDataset::from_text({env().corpus}, tok, corpus_opts(), 512);
  auto comm = world_comm();
  const std::string base_dir = make_temp_dir("lora_base");
  const ParamStore base = fresh_params();
  write_hf_model(base_dir, base, DType::F32, env().spm);
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.targets = default_lora_targets();
  auto trainer = [&](const std::string& out, int64_t steps) {
    TrainOptions o = loop_options(out);
    o.steps = steps;
    o.adam.lr = 1e-2;
    o.checkpoint_every = 2;
    return Trainer(lora_param_store(base.cfg, lc, 1), base.view(), lc, d, o, *comm);
  };
  const std::string outA = make_temp_dir("lora_full"), outB = make_temp_dir("lora_split");
  Trainer full = trainer(outA, 6);
  const float before = full.evaluate();
  const TrainResult ra = full.run(nullptr);
  EXPECT_EQ(ra.step, 6);
  EXPECT_LT(full.evals().back().loss, before) << "held-out loss did not fall";
  {
    TrainOptions o = loop_options(outB);
    o.steps = 3;  // the schedule still ends at 6
    o.adam.lr = 1e-2;
    o.checkpoint_every = 2;
    Trainer first(lora_param_store(base.cfg, lc, 1), base.view(), lc, d, o, *comm);
    first.run(nullptr);
  }
  {  // another rank cannot resume these adapters
    TrainOptions o = loop_options(outB);
    LoraConfig other = lc;
    other.rank = 2;
    Trainer wrong(lora_param_store(base.cfg, other, 1), base.view(), other, d, o, *comm);
    const std::string err = testing_util::error_of([&] { wrong.resume(outB); });
    EXPECT_NE(err.find("adapter_config.json"), std::string::npos) << err;
  }
  Trainer second = trainer(outB, 6);
  second.resume(outB);  // checkpoint-3
  second.run(nullptr);
  for (size_t i = 0; i < full.params().size(); ++i)
    EXPECT_EQ(full.params().data[i], second.params().data[i]) << full.params().specs[i].name;
  const std::string ck = outA + "/checkpoint-6";
  EXPECT_TRUE(fs::is_regular_file(ck + "/adapter_config.json"));
  EXPECT_TRUE(fs::is_regular_file(ck + "/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(ck + "/model.safetensors"));
  EXPECT_EQ(read_bytes(ck + "/adapter_model.safetensors"),
            read_bytes(outB + "/checkpoint-6/adapter_model.safetensors"));
  const Model m = Model::load(base_dir, {.lora = ck});
  const TrainBatch b = d.heldout_rows(0, 1);
  const double ce = inference_ce(m, b);
  Weights W = base.view();
  attach_lora_params(W, full.params(), lc);
  const LossValues lv = train_forward(TrainTarget{base.cfg, W}, b, {}, nullptr);
  EXPECT_NEAR(ce, lv.loss, tol::kTrainVsInference) << "inference " << ce << " training " << lv.loss;
  const float base_loss = train_forward(base, b, {}, nullptr).loss;
  EXPECT_GT(std::fabs(lv.loss - base_loss), 1e-3) << "the adapter changed nothing";
}

// ---------------------------------------------------------------------------------------------
// Through the binary.

std::string train_args(const std::string& out) {
  return "train --config " + q(env().config) + " --corpus " + q(env().corpus) + " --tokenizer " +
         q(env().spm) + " --out " + q(out) +
         " --seq-len 32 --holdout 0.05 --batch 4 --lr 3e-3 --warmup 2 --eval-windows 4 --threads 1 --seed 5";
}

RunResult shell(const std::string& cmd, double seconds) {
  RunResult r;
  testutil::Child c = testutil::spawn({"/bin/sh", "-c", cmd});
  if (c.pid < 0) return r;
  std::string none;
  testutil::pump(c, none, true, seconds, r);
  testutil::finish(c, 5, r);
  return r;
}

// Ctrl-C saves a checkpoint and exits 130; --resume continues from it to the same end state as
// an uninterrupted run.
TEST(TrainCli, CtrlCSavesThenResumeMatchesUninterrupted) {
  REQUIRE_ENV();
  const std::string full = make_temp_dir("cli_train_full"), cut = make_temp_dir("cli_train_cut");
  const std::string bin = std::string("'") + JAMBA_BINARY + "' ";
  const RunResult a = shell(bin + train_args(full) + " --steps 30 --log-every 1", 120);
  ASSERT_EQ(a.rc, 0) << describe(a);
  EXPECT_NE(a.err.find("ETA"), std::string::npos) << describe(a);
  EXPECT_NE(a.out.find("perplexity"), std::string::npos) << describe(a);
  // Interrupt once a few steps are done.
  RunResult b;
  testutil::Child c = testutil::spawn(
      {"/bin/sh", "-c", "exec " + bin + train_args(cut) + " --steps 30 --log-every 1"});
  ASSERT_GT(c.pid, 0);
  std::string none;
  const double end = testutil::now_s() + 60;
  while (b.err.find("step      3/30") == std::string::npos && testutil::now_s() < end)
    testutil::pump(c, none, false, 0.05, b);
  ::kill(c.pid, SIGINT);
  testutil::finish(c, 60, b);
  ASSERT_EQ(b.rc, 130) << describe(b);
  EXPECT_NE(b.err.find("interrupted: saved"), std::string::npos) << describe(b);
  const std::string ck = latest_checkpoint(cut);
  ASSERT_FALSE(ck.empty());
  const json st = json::parse(read_bytes(ck + "/trainer_state.json"));
  const int64_t at = st["global_step"].get<int64_t>();
  EXPECT_GE(at, 3);
  EXPECT_LT(at, 30);
  const RunResult r = shell(bin + train_args(cut) + " --steps 30 --resume", 120);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_NE(r.err.find("at step " + std::to_string(at)), std::string::npos) << describe(r);
  EXPECT_EQ(read_bytes(full + "/checkpoint-30/model.safetensors"),
            read_bytes(cut + "/checkpoint-30/model.safetensors"));
  const json sa = json::parse(read_bytes(full + "/checkpoint-30/trainer_state.json"));
  const json sb = json::parse(read_bytes(cut + "/checkpoint-30/trainer_state.json"));
  ASSERT_EQ(sa["log_history"].size(), 30u);
  ASSERT_EQ(sb["log_history"].size(), 30u);
  for (size_t i = 0; i < 30; ++i)
    EXPECT_EQ(sa["log_history"][i]["loss"], sb["log_history"][i]["loss"]) << "step " << i + 1;
}

// `jamba train --init-from --lora-rank` writes PEFT adapters that `jamba generate --lora` loads;
// the option errors are clear.
TEST(TrainCli, LoraTrainThenGenerateWithTheAdapter) {
  REQUIRE_ENV();
  const std::string base = make_temp_dir("cli_lora_base"), out = make_temp_dir("cli_lora_out");
  write_hf_model(base, fresh_params(), DType::BF16, env().spm);
  const std::string bin = std::string("'") + JAMBA_BINARY + "' ";
  const std::string args = "train --init-from " + q(base) + " --corpus " + q(env().corpus) +
                           " --out " + q(out) + " --seq-len 32 --batch 2 --steps 3 --threads 1" +
                           " --eval-windows 2 --lr 5e-2 --warmup 0";
  const std::string merged = out + "/merged";
  const RunResult r =
      shell(bin + args + " --lora-rank 4 --lora-targets in_proj,q_proj,gate_proj,router "
                         "--checkpoint-every 2 --export-dtype f32 --export " + q(merged),
            120);
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_NE(r.err.find("lora: rank 4, alpha 8"), std::string::npos) << describe(r);
  EXPECT_NE(r.out.find("MFU"), std::string::npos) << describe(r);
  const std::string ck = out + "/checkpoint-3";
  const json ac = json::parse(read_bytes(ck + "/adapter_config.json"));
  EXPECT_EQ(ac["r"], 4);
  EXPECT_EQ(ac["peft_type"], "LORA");
  const RunResult g = shell(bin + "generate --model " + q(base) + " --lora " + q(ck) +
                                " --prompt 'In the beginning' -n 4 --greedy --threads 1",
                            60);
  EXPECT_EQ(g.rc, 0) << describe(g);
  // --export with LoRA: the merged model, whose logits are the adapter's on the base.
  const TrainBatch b = TokenDataset::from_text({env().corpus}, Tokenizer::load(env().spm),
                                               corpus_opts(), 512)
                           .heldout_rows(0, 1);
  // (f32 GEMM inputs on the bf16 base: the same arithmetic as the f32 merged weights.)
  const double ce_merged = inference_ce(Model::load(merged), b);
  const double ce_adapter = inference_ce(
      Model::load(base, {.activations = MatmulActivations::F32, .lora = ck}), b);
  EXPECT_NEAR(ce_merged, ce_adapter, tol::kLoraMergedVsOnTheFly) << "merged vs base + adapter";
  const double ce_base = inference_ce(Model::load(base, {.activations = MatmulActivations::F32}), b);
  std::printf("[lora] held-out CE: base %.6f, base + adapter %.6f, merged export %.6f\n", ce_base,
              ce_adapter, ce_merged);
  EXPECT_GT(std::fabs(ce_adapter - ce_base), 10 * tol::kLoraMergedVsOnTheFly)
      << "the adapter changed too little for the comparison to mean anything";
  const RunResult bad = shell(bin + args + " --lora-rank 4 --lora-targets in_proj,nope", 60);
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("nope"), std::string::npos) << describe(bad);
  const RunResult noinit =
      shell(bin + "train --config " + q(env().config) + " --tokenizer " + q(env().spm) +
                " --corpus " + q(env().corpus) + " --out " + q(out + "/x") + " --lora-rank 4",
            60);
  EXPECT_NE(noinit.rc, 0);
  EXPECT_NE(noinit.err.find("--init-from"), std::string::npos) << describe(noinit);
}

// SIGKILL at arbitrary moments while a checkpoint is written every step: every checkpoint-<n>
// directory present afterwards is complete and loadable, and the run resumes.
TEST(TrainCli, SigkillNeverLeavesACorruptCheckpoint) {
  REQUIRE_ENV();
  const std::string out = make_temp_dir("cli_train_kill");
  const std::string bin = std::string("'") + JAMBA_BINARY + "' ";
  const Tokenizer tok = Tokenizer::load(env().spm);
  const TokenDataset d = TokenDataset::from_text({env().corpus}, tok, corpus_opts(), 512);
  auto comm = world_comm();
  int kills = 0;
  for (double delay : {0.35, 0.6, 0.9, 1.3, 1.7}) {
    const std::string resume = latest_checkpoint(out).empty() ? "" : " --resume";
    testutil::Child c = testutil::spawn(
        {"/bin/sh", "-c",
         "exec " + bin + train_args(out) + " --steps 100000 --save-every 1 --keep 3" + resume});
    ASSERT_GT(c.pid, 0);
    RunResult r;
    std::string none;
    testutil::pump(c, none, false, delay, r);
    ::kill(c.pid, SIGKILL);
    testutil::finish(c, 10, r);
    if (r.signaled) ++kills;
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("checkpoint-", 0) != 0) continue;
      SCOPED_TRACE(name);
      // Complete: loads as a model, and its optimizer state and trainer state as a resume point.
      EXPECT_NO_THROW(ParamStore::load(e.path().string()));
      TrainOptions o = loop_options(out);
      o.batch = 4;
      o.seed = 5;
      Trainer probe(fresh_params(), d, o, *comm);
      EXPECT_NO_THROW(probe.resume(e.path().string()));
    }
  }
  EXPECT_GE(kills, 4);
  EXPECT_FALSE(latest_checkpoint(out).empty());
}

// mpirun -np 2: each rank takes half of every global batch; the losses equal one process running
// the same global batch as two micro-batches (the same split of the aux loss).
TEST(TrainMpi, TwoRanksGiveTheLossesOfOneProcess) {
  REQUIRE_ENV();
  const bool ci = std::getenv("CI") != nullptr;
  const bool have_mpirun = std::system("command -v mpirun >/dev/null 2>&1") == 0;
  if (!mpi_available() || !have_mpirun) {
    if (ci) FAIL() << "CI must run the MPI test: build with libopenmpi-dev and install openmpi-bin";
    GTEST_SKIP() << "no MPI (built with MPI: " << mpi_available() << ", mpirun: " << have_mpirun << ")";
  }
  const std::string one = make_temp_dir("mpi_one"), two = make_temp_dir("mpi_two");
  const std::string bin = std::string("'") + JAMBA_BINARY + "' ";
  const RunResult a = shell(bin + train_args(one) + " --steps 4 --micro-batch 2", 120);
  ASSERT_EQ(a.rc, 0) << describe(a);
  // Root in containers and CI; leak checking off for the MPI library's own allocations (ASan build).
  const std::string env_vars =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
      "ASAN_OPTIONS=detect_leaks=0 ";
  const RunResult b =
      shell(env_vars + "mpirun -np 2 " + bin + train_args(two) + " --steps 4", 180);
  ASSERT_EQ(b.rc, 0) << describe(b);
  EXPECT_NE(b.err.find("MPI, 2 ranks"), std::string::npos) << describe(b);
  const json sa = json::parse(read_bytes(one + "/checkpoint-4/trainer_state.json"));
  const json sb = json::parse(read_bytes(two + "/checkpoint-4/trainer_state.json"));
  EXPECT_EQ(sb["world_size"], 2);
  ASSERT_EQ(sa["log_history"].size(), 4u);
  ASSERT_EQ(sb["log_history"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    for (const char* k : {"loss", "ce_loss", "aux_loss", "grad_norm"}) {
      const double x = sa["log_history"][i][k].get<double>(), y = sb["log_history"][i][k].get<double>();
      EXPECT_NEAR(x, y, tol::kMpiVsOneProcess * std::max(1.0, std::abs(x)))
          << k << " at step " << i + 1;
    }
  }
  const double ea = sa["eval_history"].back()["loss"].get<double>();
  const double eb = sb["eval_history"].back()["loss"].get<double>();
  EXPECT_NEAR(ea, eb, tol::kMpiVsOneProcess * std::max(1.0, ea));
  // Rank 0 alone wrote the checkpoint and it loads.
  EXPECT_NO_THROW(ParamStore::load(two + "/checkpoint-4"));
}

}  // namespace
}  // namespace jamba
