// End-to-end tests of the `jamba` command-line tool: every subcommand is run as a child process
// (stdout, stderr and the exit status captured) on the golden checkpoints, on freshly initialised
// checkpoints and on damaged inputs.
//
// Generation needs a tokenizer whose vocabulary fits the golden models (512 ids): one 512-piece
// BPE SentencePiece model is trained once per test binary run, from generated English text, and
// copied next to a golden checkpoint.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
// GCC 12 reports libstdc++'s own std::regex internals as maybe-uninitialized under -O2 +
// sanitizers (a known false positive); silence it for this file only.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#include <sentencepiece_trainer.h>
#include <string>
#include <vector>

#include "checkpoint_util.h"
#include "cli_util.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "tolerances.h"


namespace jamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testutil::golden_dir;
using testutil::make_temp_dir;
using testutil::read_bytes;
using testutil::write_bytes;
using testutil::Child;
using testutil::RunResult;
using testutil::contains;
using testutil::describe;
using testutil::expect_clean_error;
using testutil::finish;
using testutil::now_s;
using testutil::pump;
using testutil::q;
using testutil::run;
using testutil::spawn;
using testutil::training_text;

// The speed line of generate/chat: "[prompt: P tokens (R reused from cache) ... finish: F]".
struct Speed {
  int64_t prompt = -1, reused = -1, generated = -1;
  std::string finish;
};
std::vector<Speed> speed_lines(const std::string& err) {
  static const std::regex re(
      R"(\[prompt: (\d+) tokens \((\d+) reused from cache\)[^|]*\| generation: (\d+) tokens[^|]*\| finish: (\w+)\])");
  std::vector<Speed> v;
  for (std::sregex_iterator it(err.begin(), err.end(), re), e; it != e; ++it)
    v.push_back({std::stoll((*it)[1]), std::stoll((*it)[2]), std::stoll((*it)[3]), (*it)[4]});
  return v;
}


// ---------------------------------------------------------------------------------------------
// Shared fixtures, built once per test binary run.


struct Env {
  std::string error;       // why building the environment failed (empty: fine)
  std::string spm;         // the trained 512-piece tokenizer.model
  std::string dense;       // golden dense-tiny + tokenizer.model
};

const Env& env() {
  static const Env e = [] {
    Env e;
    const std::string dir = make_temp_dir("cli_spm");
    const std::string corpus = dir + "/corpus.txt";
    write_bytes(corpus, training_text());
    // The Jamba 1.5 chat markup as user-defined pieces: the tokenizer treats "<...>" user-defined
    // pieces as special, so chat prompts split on them and an earlier prompt stays a token prefix
    // of the next one (what chat's prefix cache relies on).
    const std::string args =
        "--input=" + corpus + " --model_prefix=" + dir +
        "/spm --vocab_size=512 --model_type=bpe --byte_fallback=true --character_coverage=1.0 "
        "--bos_id=1 --eos_id=2 --pad_id=0 --unk_id=3 --add_dummy_prefix=false "
        "--user_defined_symbols=<|startoftext|>,<|bom|>,<|eom|>,<|system|>,<|user|>,"
        "<|assistant|>,<|tool|> --num_threads=1 --minloglevel=2";
    const auto st = sentencepiece::SentencePieceTrainer::Train(args);
    if (!st.ok()) {
      e.error = "sentencepiece training failed: " + st.ToString();
      return e;
    }
    e.spm = dir + "/spm.model";
    e.dense = testutil::copy_case("dense-tiny");
    fs::copy_file(e.spm, e.dense + "/tokenizer.model");
    return e;
  }();
  return e;
}

#define REQUIRE_ENV()                              \
  do {                                             \
    ASSERT_TRUE(env().error.empty()) << env().error; \
  } while (0)

const std::string kJambaTokenizer = std::string(JAMBA_SHARED_DIR) + "/tokenizers/jamba.model";

// `jamba init --config tiny` with the real Jamba tokenizer, once.
const std::string& tiny_model() {
  static const std::string dir = [] {
    const std::string d = make_temp_dir("cli_tiny") + "/model";
    const RunResult r = run("init --config tiny --out " + q(d) + " --tokenizer " +
                            q(kJambaTokenizer) + " --seed 1");
    EXPECT_OK(r);
    return d;
  }();
  return dir;
}

std::vector<float> read_f32(const std::string& file, const std::string& name) {
  return tensor_to_f32(SafetensorsFile::open(file)->get(name));
}

// max |a - b| over rows of width w whose mask entry (if any) is 1.
float max_diff(const std::vector<float>& a, const std::vector<float>& b, int64_t w,
               const std::vector<int64_t>& mask = {}) {
  return testing_util::max_row_diff(a, b, w, mask);
}

// ---------------------------------------------------------------------------------------------
// 1. jamba forward on every golden case.

class CliForward : public ::testing::TestWithParam<std::string> {};

TEST_P(CliForward, MatchesGolden) {
  const std::string name = GetParam();
  const std::string gdir = golden_dir(name);
  const std::string gfile = gdir + "/golden.safetensors";
  auto g = SafetensorsFile::open(gfile);
  const json cfg = testutil::read_json(gdir + "/config.json");
  const int64_t V = cfg["vocab_size"], D = cfg["hidden_size"], L = cfg["num_hidden_layers"];
  const TensorInfo& ids_t = g->get("input_ids");
  const int64_t B = ids_t.shape[0], T = ids_t.shape[1];
  const auto ids = tensor_to_i64(ids_t);
  const bool padded = g->find("attention_mask") != nullptr;
  const auto mask = padded ? tensor_to_i64(g->get("attention_mask")) : std::vector<int64_t>{};
  const std::string tmp = make_temp_dir("cli_fwd");

  // The input file, built with the writer (input_ids + attention_mask only).
  const std::string in = tmp + "/in.safetensors";
  {
    SafetensorsWriter w;
    w.add_i64("input_ids", {B, T}, ids.data());
    if (padded) w.add_i64("attention_mask", {B, T}, mask.data());
    w.write(in);
  }

  // Full forward with hidden states.
  const std::string out = tmp + "/out.safetensors";
  RunResult r = run("forward --model " + q(gdir) + " --input " + q(in) + " --output " + q(out) +
                    " --hidden-states");
  ASSERT_OK(r);
  const auto want = tensor_to_f32(g->get("logits"));
  const auto got = read_f32(out, "logits");
  const float dl = max_diff(got, want, V, mask);
  EXPECT_LE(dl, tol::kGoldenLogits) << name;
  {
    auto o = SafetensorsFile::open(out);
    EXPECT_EQ(o->get("logits").shape, (std::vector<int64_t>{B, T, V}));
    for (int64_t i = 0; i <= L; ++i) {
      const std::string hn = "hidden_states." + std::to_string(i);
      const TensorInfo* h = o->find(hn);
      ASSERT_NE(h, nullptr) << name << ": no " << hn << " in the output";
      EXPECT_EQ(h->shape, (std::vector<int64_t>{B, T, D})) << hn;
      EXPECT_LE(max_diff(tensor_to_f32(*h), tensor_to_f32(g->get(hn)), D, mask),
                tol::kGoldenHidden)
          << name << " " << hn;
    }
    EXPECT_EQ(o->find("hidden_states." + std::to_string(L + 1)), nullptr);
  }

  // Without --hidden-states: logits only. With --chunk 7: the same logits.
  const std::string out7 = tmp + "/out7.safetensors";
  r = run("forward --model " + q(gdir) + " --input " + q(in) + " --output " + q(out7) +
          " --chunk 7");
  ASSERT_OK(r);
  {
    auto o = SafetensorsFile::open(out7);
    EXPECT_EQ(o->find("hidden_states.0"), nullptr);
  }
  const auto got7 = read_f32(out7, "logits");
  EXPECT_LE(max_diff(got7, want, V, mask), tol::kGoldenLogits) << name << " --chunk 7";
  EXPECT_LE(max_diff(got7, got, V, mask), tol::kReassociation) << name << " --chunk 7 vs one";

  // Greedy decode of the golden prompt.
  const TensorInfo& gen_t = g->get("gen_ids");
  const int64_t N = 16, P = gen_t.shape[1] - N;
  ASSERT_GT(P, 0);
  std::vector<int64_t> pids, pmask;
  const int64_t off = padded ? T - P : 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < P; ++t) {
      pids.push_back(ids[size_t(b * T + off + t)]);
      if (padded) pmask.push_back(mask[size_t(b * T + off + t)]);
    }
  if (padded) {
    EXPECT_EQ(pmask, tensor_to_i64(g->get("gen_prompt_attention_mask")));
  }
  const std::string pin = tmp + "/prompt.safetensors";
  {
    SafetensorsWriter w;
    w.add_i64("input_ids", {B, P}, pids.data());
    if (padded) w.add_i64("attention_mask", {B, P}, pmask.data());
    w.write(pin);
  }
  const std::string gout = tmp + "/gen.safetensors";
  r = run("forward --model " + q(gdir) + " --input " + q(pin) + " --output " + q(gout) +
          " --max-new-tokens 16");
  ASSERT_OK(r);
  auto o = SafetensorsFile::open(gout);
  EXPECT_EQ(o->get("gen_ids").shape, gen_t.shape);
  EXPECT_EQ(tensor_to_i64(o->get("gen_ids")), tensor_to_i64(gen_t)) << name;
  EXPECT_LE(max_diff(tensor_to_f32(o->get("step_logits")), tensor_to_f32(g->get("step_logits")),
                     V),
            tol::kGoldenStepLogits)
      << name;
}

INSTANTIATE_TEST_SUITE_P(CliGolden, CliForward,
                         ::testing::Values("dense-tiny", "gqa-moe", "long-seq", "padded-batch",
                                           "jamba-layout", "tied-embeddings"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

// ---------------------------------------------------------------------------------------------
// 2. jamba info.

// Parameter count by hand from config.json (HF tensor shapes; golden README "model.safetensors").
struct Count {
  int64_t total = 0, active = 0;
};
Count hand_count(const json& c) {
  const int64_t H = c["hidden_size"], V = c["vocab_size"], I = c["intermediate_size"];
  const int64_t L = c["num_hidden_layers"], nh = c["num_attention_heads"],
                nkv = c["num_key_value_heads"];
  const int64_t E = c["num_experts"], k = c["num_experts_per_tok"];
  const int64_t Di = int64_t(c["mamba_expand"]) * H, R = c["mamba_dt_rank"],
                N = c["mamba_d_state"], K = c["mamba_d_conv"];
  const int64_t hd = H / nh;
  const bool conv_bias = c["mamba_conv_bias"], proj_bias = c["mamba_proj_bias"];
  const bool tied = c["tie_word_embeddings"];
  Count n;
  n.total = V * H + H + (tied ? 0 : V * H);  // embed, final norm, lm_head
  n.active = n.total;
  for (int64_t i = 0; i < L; ++i) {
    int64_t layer = 2 * H;  // input_layernorm, pre_ff_layernorm
    if (i % int64_t(c["attn_layer_period"]) == int64_t(c["attn_layer_offset"])) {
      layer += nh * hd * H + 2 * nkv * hd * H + H * nh * hd;  // q, k, v, o
    } else {
      layer += 2 * Di * H + (proj_bias ? 2 * Di : 0);  // in_proj
      layer += Di * K + (conv_bias ? Di : 0);          // conv1d
      layer += (R + 2 * N) * Di;                       // x_proj
      layer += Di * R + Di;                            // dt_proj
      layer += Di * N + Di;                            // A_log, D
      layer += H * Di + (proj_bias ? H : 0);           // out_proj
      layer += R + 2 * N;                              // dt/b/c layernorms
    }
    const int64_t mlp = 3 * I * H;
    if (E > 1 && i % int64_t(c["expert_layer_period"]) == int64_t(c["expert_layer_offset"])) {
      n.total += layer + E * H + E * mlp;
      n.active += layer + E * H + k * mlp;
    } else {
      n.total += layer + mlp;
      n.active += layer + mlp;
    }
  }
  return n;
}

int64_t numel_in_file(const std::string& file) {
  int64_t n = 0;
  const auto f = SafetensorsFile::open(file);  // keeps the map alive through the loop
  for (const auto& [name, t] : f->tensors()) n += t.numel();
  return n;
}

TEST(CliInfo, DenseTinyScheduleAndParameterCount) {
  const std::string dir = golden_dir("dense-tiny");
  const json c = testutil::read_json(dir + "/config.json");
  const Count n = hand_count(c);
  EXPECT_EQ(n.total, numel_in_file(dir + "/model.safetensors"));  // the hand count is right
  EXPECT_EQ(n.total, n.active);                                   // dense: all active
  const RunResult r = run("info --model " + q(dir));
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "layer schedule")) << r.out;
  // dense-tiny: M, A, M, A with dense MLPs.
  EXPECT_TRUE(contains(r.out, "   0 M\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "   1 A\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "   2 M\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "   3 A\n")) << r.out;
  EXPECT_FALSE(contains(r.out, " +moe\n")) << r.out;  // no MoE layer (the legend names +moe)
  EXPECT_TRUE(contains(r.out, "attention layers 2, Mamba layers 2, MoE layers 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "parameters: total " + std::to_string(n.total) + " ")) << r.out;
  EXPECT_TRUE(contains(r.out, "active per token " + std::to_string(n.active) + " ")) << r.out;
}

TEST(CliInfo, MoeScheduleAndParameterCount) {
  const std::string dir = golden_dir("gqa-moe");
  const json c = testutil::read_json(dir + "/config.json");
  const Count n = hand_count(c);
  EXPECT_EQ(n.total, numel_in_file(dir + "/model.safetensors"));
  EXPECT_LT(n.active, n.total);
  const RunResult r = run("info --model " + q(dir));
  ASSERT_OK(r);
  const int64_t L = c["num_hidden_layers"];
  for (int64_t i = 0; i < L; ++i) {
    const bool attn = i % int64_t(c["attn_layer_period"]) == int64_t(c["attn_layer_offset"]);
    const bool moe = i % int64_t(c["expert_layer_period"]) == int64_t(c["expert_layer_offset"]);
    char line[64];
    std::snprintf(line, sizeof line, "  %2lld %s%s\n", (long long)i, attn ? "A" : "M",
                  moe ? " +moe" : "");
    EXPECT_TRUE(contains(r.out, line)) << "missing '" << line << "' in\n" << r.out;
  }
  EXPECT_TRUE(contains(r.out, "parameters: total " + std::to_string(n.total) + " ")) << r.out;
  EXPECT_TRUE(contains(r.out, "active per token " + std::to_string(n.active) + " ")) << r.out;
}

// ---------------------------------------------------------------------------------------------
// 3. jamba init + generate.

TEST(CliInitGenerate, TinyPresetGenerates) {
  const std::string& dir = tiny_model();
  ASSERT_TRUE(fs::exists(dir + "/config.json"));
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors"));
  ASSERT_TRUE(fs::exists(dir + "/tokenizer.model"));
  const std::string cmd = "generate --model " + q(dir) + " -p Hello -n 8 --seed 3";
  const RunResult a = run(cmd);
  ASSERT_OK(a);
  EXPECT_EQ(a.out.rfind("Hello", 0), 0u) << a.out;  // the prompt, then the continuation
  EXPECT_GT(a.out.size(), std::string("Hello\n").size()) << a.out;
  EXPECT_TRUE(contains(a.err, "tokens/s")) << a.err;
  const auto sp = speed_lines(a.err);
  ASSERT_EQ(sp.size(), 1u) << a.err;
  EXPECT_GT(sp[0].prompt, 0);
  EXPECT_GE(sp[0].generated, 1);
  EXPECT_LE(sp[0].generated, 8);
  // Same seed, same text.
  const RunResult b = run(cmd);
  ASSERT_OK(b);
  EXPECT_EQ(a.out, b.out);
  // Greedy: deterministic too.
  const std::string gcmd = "generate --model " + q(dir) + " -p Hello -n 8 --greedy";
  const RunResult g1 = run(gcmd), g2 = run(gcmd);
  ASSERT_OK(g1);
  ASSERT_OK(g2);
  EXPECT_EQ(g1.out, g2.out);
  EXPECT_TRUE(contains(g1.err, "tokens/s"));
}

TEST(CliInitGenerate, FromConfigFileAndBf16) {
  const std::string tmp = make_temp_dir("cli_init");
  // A config.json of another shape (gqa-moe: 8 layers, MoE) at the Jamba tokenizer's vocab.
  json c = testutil::read_json(golden_dir("gqa-moe") + "/config.json");
  c["vocab_size"] = 65536;
  testutil::write_json(tmp + "/my_config.json", c);
  const std::string d1 = tmp + "/from_file";
  RunResult r = run("init --config " + q(tmp + "/my_config.json") + " --out " + q(d1) +
                    " --tokenizer " + q(kJambaTokenizer));
  ASSERT_OK(r);
  r = run("info --model " + q(d1));
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "   7 M +moe\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "parameters: total " + std::to_string(hand_count(c).total) + " "))
      << r.out;
  r = run("generate --model " + q(d1) + " -p Hello -n 4 --seed 1");
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.err, "tokens/s"));

  const std::string d2 = tmp + "/bf16";
  r = run("init --config tiny --dtype bf16 --out " + q(d2) + " --tokenizer " +
          q(kJambaTokenizer));
  ASSERT_OK(r);
  const auto bf16_file = SafetensorsFile::open(d2 + "/model.safetensors");
  for (const auto& [name, t] : bf16_file->tensors()) EXPECT_EQ(t.dtype, DType::BF16) << name;
  r = run("generate --model " + q(d2) + " -p Hello -n 4 --greedy");
  ASSERT_OK(r);
  EXPECT_EQ(r.out.rfind("Hello", 0), 0u) << r.out;
  EXPECT_TRUE(contains(r.err, "tokens/s"));
}

// ---------------------------------------------------------------------------------------------
// 4. jamba chat.

std::string chat_cmd(const std::string& extra = "") {
  return "chat --model " + q(env().dense) + " -n 8 --seed 5 " + extra;
}

TEST(CliChat, TwoTurnsReuseThePrefix) {
  REQUIRE_ENV();
  const RunResult r = run(chat_cmd(), "hello\nhow are you\\\ntoday, my friend?\n/exit\n");
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.err, "jamba chat")) << r.err;
  const auto sp = speed_lines(r.err);
  // Two turns: the backslash joined "how are you" and "today, ..." into one message.
  ASSERT_EQ(sp.size(), 2u) << describe(r);
  EXPECT_EQ(sp[0].reused, 0);
  EXPECT_GT(sp[1].reused, 0) << "the first prompt is a prefix of the second: " << describe(r);
  EXPECT_LT(sp[1].reused, sp[1].prompt);
  EXPECT_GT(sp[1].prompt, sp[0].prompt);
}

TEST(CliChat, TripleQuoteBlockIsOneMessage) {
  REQUIRE_ENV();
  const RunResult r =
      run(chat_cmd(), "\"\"\"\nfirst line\n\nsecond line\nthird line\n\"\"\"\n/exit\n");
  ASSERT_OK(r);
  // One turn: the three lines (and the empty one) between the quotes are a single message.
  EXPECT_EQ(speed_lines(r.err).size(), 1u) << describe(r);
}

TEST(CliChat, EndOfInputWithoutExit) {
  REQUIRE_ENV();
  const RunResult r = run(chat_cmd(), "hello");  // no newline, no /exit: EOF ends the chat
  ASSERT_OK(r);
  EXPECT_EQ(speed_lines(r.err).size(), 1u) << describe(r);
  const RunResult e = run(chat_cmd(), "");
  ASSERT_OK(e);
  EXPECT_TRUE(speed_lines(e.err).empty());
}

TEST(CliChat, ResetClearsHistory) {
  REQUIRE_ENV();
  const RunResult r = run(chat_cmd(), "hello\n/reset\nhello\n/exit\n");
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "[history cleared]")) << r.out;
  const auto sp = speed_lines(r.err);
  ASSERT_EQ(sp.size(), 2u) << describe(r);
  EXPECT_EQ(sp[0].prompt, sp[1].prompt);  // the same first turn again
  EXPECT_EQ(sp[1].reused, 0);             // and the cache was cleared
}

TEST(CliChat, CtrlCStopsTheAnswerNotTheChat) {
  REQUIRE_ENV();
  // Started directly (not under timeout(1)) so that SIGINT goes to jamba itself; pump() and
  // finish() bound the time instead.
  Child c = spawn({JAMBA_BINARY, "chat", "--model", env().dense, "-n", "100000", "--greedy"});
  ASSERT_GT(c.pid, 0);
  RunResult r;
  std::string input = "tell me a very long story\n";
  // Wait until the answer is streaming (the banner on stderr comes after the SIGINT handler is
  // installed; stdout holds more than the "\n> " prompt), then let it run for a second.
  const double deadline = now_s() + 60;
  while (now_s() < deadline && !(contains(r.err, "jamba chat") && r.out.size() > 8) &&
         c.out >= 0)
    pump(c, input, false, 0.05, r);
  if (!(contains(r.err, "jamba chat") && r.out.size() > 8)) {
    ::kill(c.pid, SIGKILL);
    finish(c, 1, r);
    FAIL() << "the answer never started streaming\n" << describe(r);
  }
  pump(c, input, false, 1.0, r);
  ::kill(c.pid, SIGINT);
  pump(c, input, false, 0.5, r);
  input = "/exit\n";
  pump(c, input, true, 60, r);
  finish(c, 5, r);
  EXPECT_EQ(r.rc, 0) << describe(r);
  EXPECT_FALSE(r.signaled) << describe(r);
  EXPECT_TRUE(contains(r.err, "[interrupted]")) << describe(r);
  const auto sp = speed_lines(r.err);
  ASSERT_EQ(sp.size(), 1u) << describe(r);
  EXPECT_LT(sp[0].generated, 100000);
  // Greedy decoding of this model does not produce EOS for thousands of tokens, so the answer
  // was still running when SIGINT came.
  EXPECT_EQ(sp[0].finish, "cancelled") << describe(r);
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input: a clear message and a nonzero exit status, never a crash.

TEST(CliErrors, BadOptions) {
  REQUIRE_ENV();
  expect_clean_error(run("generate --model " + q(env().dense) + " -p hi --no-such-option"),
                     {"--no-such-option"});
  expect_clean_error(run("generate -p hi"), {"--model"});
  expect_clean_error(run("forward --input x --output y"), {"--model"});
  expect_clean_error(run("frobnicate"), {"subcommand"});
  expect_clean_error(run(""), {"subcommand"});
  expect_clean_error(run("init --config tiny --out " + q(make_temp_dir("cli_f16")) +
                         "/m --dtype f16"),
                     {"f16"});
  expect_clean_error(run("init --config no-such-preset --out " + q(make_temp_dir("cli_bad"))),
                     {"no-such-preset"});
  expect_clean_error(run("generate --model " + q(env().dense) + " -p hi --top-p 2"), {"top_p"});
}

TEST(CliErrors, BadModel) {
  REQUIRE_ENV();
  const std::string tmp = make_temp_dir("cli_err");
  expect_clean_error(run("generate --model " + q(tmp + "/nowhere") + " -p hi"), {"nowhere"});
  expect_clean_error(run("info --model " + q(tmp + "/nowhere")), {"nowhere"});
  // A checkpoint without tokenizer.model cannot generate.
  const std::string notok = testutil::copy_case("dense-tiny");
  expect_clean_error(run("generate --model " + q(notok) + " -p hi"), {"tokenizer"});
  // The real Jamba tokenizer does not fit a 512-token model.
  expect_clean_error(
      run("generate --model " + q(notok) + " --tokenizer " + q(kJambaTokenizer) + " -p hi"),
      {"vocab"});
  // A truncated model.safetensors.
  const std::string trunc = testutil::copy_case("dense-tiny");
  const std::string bytes = read_bytes(trunc + "/model.safetensors");
  write_bytes(trunc + "/model.safetensors", bytes.substr(0, bytes.size() / 2));
  fs::copy_file(env().spm, trunc + "/tokenizer.model");
  expect_clean_error(run("info --model " + q(trunc)), {"model.safetensors"});
  expect_clean_error(run("generate --model " + q(trunc) + " -p hi"), {"model.safetensors"});
  const std::string in = tmp + "/in.safetensors";
  {
    const std::vector<int64_t> ids{5, 6, 7};
    SafetensorsWriter w;
    w.add_i64("input_ids", {1, 3}, ids.data());
    w.write(in);
  }
  expect_clean_error(run("forward --model " + q(trunc) + " --input " + q(in) + " --output " +
                         q(tmp + "/o.safetensors")),
                     {"model.safetensors"});
  // A header that is cut off.
  write_bytes(trunc + "/model.safetensors", bytes.substr(0, 20));
  expect_clean_error(run("info --model " + q(trunc)), {"model.safetensors"});
}

TEST(CliErrors, PromptLongerThanContext) {
  REQUIRE_ENV();
  const RunResult r = run("generate --model " + q(env().dense) +
                          " --ctx-size 4 -n 4 -p " +
                          q("this prompt has many more than four tokens in it, surely"));
  expect_clean_error(r, {"longer than the context"});
}

TEST(CliErrors, BadForwardInputs) {
  const std::string model = golden_dir("dense-tiny");
  const std::string tmp = make_temp_dir("cli_fin");
  const std::string out = tmp + "/out.safetensors";
  auto fwd = [&](const std::string& in) {
    return run("forward --model " + q(model) + " --input " + q(in) + " --output " + q(out));
  };
  // No input_ids.
  {
    const std::vector<int64_t> v{5, 6, 7};
    SafetensorsWriter w;
    w.add_i64("tokens", {1, 3}, v.data());
    w.write(tmp + "/noids.safetensors");
  }
  expect_clean_error(fwd(tmp + "/noids.safetensors"), {"input_ids"});
  // A token id >= vocab (512).
  {
    const std::vector<int64_t> v{5, 512, 7};
    SafetensorsWriter w;
    w.add_i64("input_ids", {1, 3}, v.data());
    w.write(tmp + "/bigid.safetensors");
  }
  expect_clean_error(fwd(tmp + "/bigid.safetensors"), {"512"});
  // A negative token id.
  {
    const std::vector<int64_t> v{5, -1, 7};
    SafetensorsWriter w;
    w.add_i64("input_ids", {1, 3}, v.data());
    w.write(tmp + "/negid.safetensors");
  }
  expect_clean_error(fwd(tmp + "/negid.safetensors"), {"-1"});
  // Right padding.
  {
    const std::vector<int64_t> v{5, 6, 7, 8}, m{1, 1, 1, 0};
    SafetensorsWriter w;
    w.add_i64("input_ids", {1, 4}, v.data());
    w.add_i64("attention_mask", {1, 4}, m.data());
    w.write(tmp + "/rightpad.safetensors");
  }
  expect_clean_error(fwd(tmp + "/rightpad.safetensors"), {"attention_mask", "padding"});
  // input_ids of the wrong rank.
  {
    const std::vector<int64_t> v{5, 6, 7};
    SafetensorsWriter w;
    w.add_i64("input_ids", {3}, v.data());
    w.write(tmp + "/rank1.safetensors");
  }
  expect_clean_error(fwd(tmp + "/rank1.safetensors"), {"input_ids"});
  // Not a safetensors file at all; a missing file.
  write_bytes(tmp + "/garbage.safetensors", "this is not a safetensors file");
  expect_clean_error(fwd(tmp + "/garbage.safetensors"), {"garbage.safetensors"});
  expect_clean_error(fwd(tmp + "/missing.safetensors"), {"missing.safetensors"});
  EXPECT_FALSE(fs::exists(out));
}

TEST(CliErrors, DamagedPromptCache) {
  REQUIRE_ENV();
  const std::string tmp = make_temp_dir("cli_pc_bad");
  const std::string cache = tmp + "/session.bin";
  write_bytes(cache, std::string(100, 'x') + "garbage garbage garbage");
  const RunResult r = run("generate --model " + q(env().dense) + " -p Hello -n 4 --greedy " +
                          "--prompt-cache " + q(cache));
  expect_clean_error(r, {"session.bin"});
}

// ---------------------------------------------------------------------------------------------
// 6. --prompt-cache.

TEST(CliPromptCache, SaveThenReuse) {
  REQUIRE_ENV();
  const std::string tmp = make_temp_dir("cli_pc");
  const std::string cache = tmp + "/prompt.session";
  const std::string cmd = "generate --model " + q(env().dense) +
                          " -p 'The quick brown fox jumps over the lazy dog' -n 8 --greedy "
                          "--prompt-cache " +
                          q(cache);
  const RunResult a = run(cmd);
  ASSERT_OK(a);
  EXPECT_TRUE(contains(a.err, "saved")) << a.err;
  EXPECT_TRUE(fs::exists(cache));
  const auto sa = speed_lines(a.err);
  ASSERT_EQ(sa.size(), 1u) << a.err;
  EXPECT_EQ(sa[0].reused, 0);

  const RunResult b = run(cmd);
  ASSERT_OK(b);
  const auto sb = speed_lines(b.err);
  ASSERT_EQ(sb.size(), 1u) << b.err;
  EXPECT_EQ(sb[0].prompt, sa[0].prompt);
  EXPECT_EQ(sb[0].reused, sb[0].prompt) << b.err;  // the whole prompt came from the file
  EXPECT_EQ(a.out, b.out);                         // and the greedy text is the same

  // A longer prompt that extends the cached one resumes from it.
  const RunResult c = run("generate --model " + q(env().dense) +
                          " -p 'The quick brown fox jumps over the lazy dog and runs away' -n 4 "
                          "--greedy --prompt-cache " +
                          q(cache));
  ASSERT_OK(c);
  const auto sc = speed_lines(c.err);
  ASSERT_EQ(sc.size(), 1u) << c.err;
  EXPECT_GT(sc[0].prompt, sa[0].prompt);
  EXPECT_EQ(sc[0].reused, sa[0].prompt) << c.err;

  // A session file of another model is refused with a clear message.
  const RunResult d = run("generate --model " + q(tiny_model()) + " -p Hello -n 2 --greedy " +
                          "--prompt-cache " + q(cache));
  expect_clean_error(d, {"prompt.session"});
}

}  // namespace
}  // namespace jamba
