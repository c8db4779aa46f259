// `jamba explore`: layout parsing and the configs built from it (src/model/layer_layout.h), the
// SVG chart writer (src/io/svg_chart.h), and the command end to end on the tiny preset (speed,
// memory plan, RSS check, a --train run) through the CLI binary.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint_util.h"
#include "cli_util.h"
#include "core/error.h"
#include "io/svg_chart.h"
#include "model/config.h"
#include "model/layer_layout.h"
#include "model/presets.h"

namespace jamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testutil::contains;
using testutil::describe;
using testutil::expect_clean_error;
using testutil::make_temp_dir;
using testutil::q;
using testutil::read_bytes;
using testutil::run;
using testutil::RunResult;

// Layers il of cfg that are attention.
std::vector<int64_t> attention_layers(const JambaConfig& cfg) {
  std::vector<int64_t> v;
  for (size_t il = 0; il < cfg.layers.size(); ++il)
    if (cfg.layers[il].mixer == MixerKind::Attention) v.push_back(int64_t(il));
  return v;
}

JambaConfig eight_layers() {
  JambaConfig c = preset_config("tiny");
  c.num_hidden_layers = 8;
  c.validate("test");
  c.derive();
  return c;
}

TEST(ExploreLayout, ParsesRatiosReducedByGcd) {
  const LayerLayout a = parse_layer_layout("1:7");
  EXPECT_EQ(a.name, "1:7");
  EXPECT_EQ(a.attn, 1);
  EXPECT_EQ(a.mamba, 7);
  const LayerLayout b = parse_layer_layout("2:6");  // = 1:3
  EXPECT_EQ(b.name, "2:6");
  EXPECT_EQ(b.attn, 1);
  EXPECT_EQ(b.mamba, 3);
  const LayerLayout c = parse_layer_layout("4:4");  // = 1:1
  EXPECT_EQ(c.attn, 1);
  EXPECT_EQ(c.mamba, 1);
  EXPECT_TRUE(parse_layer_layout("all-mamba").all_mamba());
  EXPECT_FALSE(parse_layer_layout("all-mamba").all_attention());
  EXPECT_TRUE(parse_layer_layout("all-attention").all_attention());
  EXPECT_TRUE(parse_layer_layout("0:5").all_mamba());      // gcd(0, 5) = 5 -> 0:1
  EXPECT_TRUE(parse_layer_layout("3:0").all_attention());  // gcd(3, 0) = 3 -> 1:0
}

TEST(ExploreLayout, RejectsBadStrings) {
  for (const char* s : {"", "1", "1:", ":3", "a:b", "1:2:3", "-1:3", "1:-3", " 1:7", "1:7 ",
                        "all_mamba", "attention", "1.5:3", "0:0", "1234567890:1"}) {
    try {
      parse_layer_layout(s);
      ADD_FAILURE() << "accepted '" << s << "'";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "[layout] '" + std::string(s) + "'")) << e.what();
    }
  }
}

TEST(ExploreLayout, MoreThanOneAttentionLayerPerPeriodIsAClearError) {
  for (const char* s : {"3:5", "2:3", "6:10"}) {
    try {
      parse_layer_layout(s);
      ADD_FAILURE() << "accepted '" << s << "'";
    } catch (const Error& e) {
      const std::string w = e.what();
      EXPECT_TRUE(contains(w, "'" + std::string(s) + "'")) << w;
      EXPECT_TRUE(contains(w, "one attention layer per period")) << w;
      EXPECT_TRUE(contains(w, "attn_layer_period")) << w;
    }
  }
  try {
    parse_layer_layout("6:10");  // gcd 2 -> 3:5, still 3 attention layers per period
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "is 3:5 after dividing by gcd 2")) << e.what();
  }
}

TEST(ExploreLayout, SchedulesBuiltAsAsked) {
  const JambaConfig base = eight_layers();
  struct Case {
    const char* layout;
    int64_t period, offset;
    std::vector<int64_t> attn;
  };
  const Case cases[] = {
      {"1:7", 8, 4, {4}},  // Jamba's own layout
      {"1:3", 4, 2, {2, 6}},       {"2:6", 4, 2, {2, 6}},
      {"1:1", 2, 1, {1, 3, 5, 7}}, {"all-attention", 1, 0, {0, 1, 2, 3, 4, 5, 6, 7}},
      {"all-mamba", 9, 8, {}},
  };
  for (const Case& c : cases) {
    const JambaConfig cfg = with_layer_layout(base, parse_layer_layout(c.layout));
    EXPECT_EQ(cfg.attn_layer_period, c.period) << c.layout;
    EXPECT_EQ(cfg.attn_layer_offset, c.offset) << c.layout;
    EXPECT_EQ(attention_layers(cfg), c.attn) << c.layout;
    EXPECT_EQ(cfg.n_attention_layers(), int64_t(c.attn.size())) << c.layout;
    // Same width, depth and FFN schedule as the base.
    EXPECT_EQ(cfg.hidden_size, base.hidden_size);
    ASSERT_EQ(cfg.layers.size(), base.layers.size());
    for (size_t il = 0; il < cfg.layers.size(); ++il)
      EXPECT_EQ(cfg.layers[il].ffn, base.layers[il].ffn);
    // What `jamba init` writes is what Model::load reads back: config.json round trip.
    JambaConfig back = JambaConfig::from_json_text(cfg.to_json_text(), c.layout);
    back.validate(c.layout);
    back.derive();
    EXPECT_EQ(attention_layers(back), c.attn) << c.layout;
  }
  // The 4-layer tiny preset: all-mamba is period 5 offset 4, accepted by validate().
  const JambaConfig tiny =
      with_layer_layout(preset_config("tiny"), parse_layer_layout("all-mamba"));
  EXPECT_EQ(tiny.attn_layer_period, 5);
  EXPECT_EQ(tiny.attn_layer_offset, 4);
  EXPECT_EQ(tiny.n_attention_layers(), 0);
}

TEST(ExploreChart, LogAxisOrderAndEscaping) {
  LineChart c{.title = "a <b> & c",
              .x_label = "context",
              .y_label = "t/s",
              .log_x = true,
              .x_ticks = {{1024, "1K"}, {262144, "256K"}}};
  c.series.push_back({.name = "1:7", .points = {{1024, 10}, {4096, 20}, {262144, 5}}});
  c.series.push_back({.name = "x", .points = {{-1, 3}, {2048, std::nan("")}}});  // both skipped
  const std::string s = line_chart_svg(c);
  EXPECT_TRUE(contains(s, "a &lt;b&gt; &amp; c"));
  EXPECT_TRUE(contains(s, ">256K</text>"));
  // The first series' polyline: x pixels increasing with the (log) x values.
  const size_t p = s.find("points=\"");
  ASSERT_NE(p, std::string::npos);
  const std::string pts = s.substr(p + 8, s.find('"', p + 8) - p - 8);
  std::vector<double> xs;
  for (size_t i = 0; i < pts.size();) {
    const size_t comma = pts.find(',', i);
    if (comma == std::string::npos) break;
    xs.push_back(std::stod(pts.substr(i, comma - i)));
    i = pts.find(' ', comma) + 1;
  }
  ASSERT_EQ(xs.size(), 3u);
  EXPECT_LT(xs[0], xs[1]);
  EXPECT_LT(xs[1], xs[2]);
  // log scale: 1K -> 4K is 2 of the 8 doublings from 1K to 256K
  EXPECT_NEAR((xs[1] - xs[0]) / (xs[2] - xs[0]), 2.0 / 8.0, 1e-3);
  EXPECT_EQ(s.find("points=\"", p + 8), std::string::npos);  // nothing drawn for "x"
  EXPECT_EQ(binary_count_label(1024), "1K");
  EXPECT_EQ(binary_count_label(262144), "256K");
  EXPECT_EQ(binary_count_label(100), "100");
}

// --- the command --------------------------------------------------------------------------------

void expect_positive_finite(const json& v, const std::string& what) {
  ASSERT_TRUE(v.is_number()) << what;
  const double d = v.get<double>();
  EXPECT_TRUE(std::isfinite(d)) << what << " = " << d;
  EXPECT_GT(d, 0) << what;
}

TEST(ExploreCli, TinyPresetEndToEnd) {
  const std::string out = make_temp_dir("explore") + "/out";
  const RunResult r =
      run("explore --preset tiny --layouts all-mamba,1:1,all-attention "
          "--context 64,128 --memory-context 1k,256k --threads 2 --out " +
          q(out));
  ASSERT_EQ(r.rc, 0) << describe(r);
  for (const char* f : {"explore.md", "explore.json", "throughput.svg", "memory.svg"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(out) / f)) << f;
  EXPECT_FALSE(fs::exists(fs::path(out) / "perplexity.svg"));  // no --train
  // The table on stdout, and in explore.md.
  const std::string md = read_bytes(out + "/explore.md");
  for (const std::string& s :
       {std::string("| layout | attn / Mamba layers | params |"), std::string("prefill t/s 64"),
        std::string("decode t/s 128"), std::string("memory 256K"),
        std::string("| all-mamba | 0 / 4 |"), std::string("| 1:1 | 2 / 2 |"),
        std::string("| all-attention | 4 / 0 |")}) {
    EXPECT_TRUE(contains(r.out, s)) << s << "\n" << r.out;
    EXPECT_TRUE(contains(md, s)) << s;
  }
  // Progress: one line per step, naming the layout and what is measured.
  EXPECT_TRUE(contains(r.err, "1:1")) << r.err;
  EXPECT_TRUE(contains(r.err, "128 run 1/1: prefill")) << r.err;
  EXPECT_TRUE(contains(r.err, "decode 16 tokens")) << r.err;
  for (const char* f : {"throughput.svg", "memory.svg"}) {
    const std::string svg = read_bytes(out + "/" + f);
    EXPECT_TRUE(contains(svg, "<svg")) << f;
    EXPECT_TRUE(contains(svg, "</svg>")) << f;
    for (const char* l : {"all-mamba", "1:1", "all-attention"}) EXPECT_TRUE(contains(svg, l)) << f;
  }
  auto lines = [](const std::string& svg) {
    size_t n = 0;
    for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1))
      ++n;
    return n;
  };
  EXPECT_EQ(lines(read_bytes(out + "/throughput.svg")), 6u);  // prefill and decode, per layout
  EXPECT_EQ(lines(read_bytes(out + "/memory.svg")), 3u);
  EXPECT_TRUE(contains(read_bytes(out + "/memory.svg"), ">256K</text>"));

  const json j = json::parse(read_bytes(out + "/explore.json"));
  EXPECT_EQ(j["contexts"], json::array({64, 128}));
  EXPECT_EQ(j["memory_contexts"], json::array({1024, 262144}));
  ASSERT_EQ(j["layouts"].size(), 3u);
  const int64_t expect_attn[3] = {0, 2, 4};
  for (size_t i = 0; i < 3; ++i) {
    const json& l = j["layouts"][i];
    EXPECT_EQ(l["n_attention"].get<int64_t>(), expect_attn[i]) << l["layout"];
    EXPECT_EQ(l["n_mamba"].get<int64_t>(), 4 - expect_attn[i]) << l["layout"];
    expect_positive_finite(l["params"], "params");
    ASSERT_EQ(l["runs"].size(), 2u);
    for (const json& run : l["runs"]) {
      expect_positive_finite(run["prefill_tps"], "prefill_tps");
      expect_positive_finite(run["decode_tps"], "decode_tps");
      expect_positive_finite(run["peak_rss_bytes"], "peak_rss_bytes");
      expect_positive_finite(run["state_bytes"], "state_bytes");
      expect_positive_finite(run["plan_total_bytes"], "plan_total_bytes");
      // The model's weights alone are resident: the peak is above the plan's weight share.
      EXPECT_GT(run["peak_rss_bytes"].get<double>(), 0.5 * run["plan_total_bytes"].get<double>());
    }
    ASSERT_EQ(l["memory"].size(), 2u);
    const json& m1k = l["memory"][0];
    const json& m256k = l["memory"][1];
    expect_positive_finite(m1k["total_bytes"], "total_bytes");
    if (expect_attn[i] == 0) {
      EXPECT_EQ(m1k["total_bytes"], m256k["total_bytes"]) << "all-mamba memory must not grow";
      EXPECT_EQ(m256k["kv_bytes"].get<int64_t>(), 0);
    } else {
      EXPECT_GT(m256k["total_bytes"].get<int64_t>(), m1k["total_bytes"].get<int64_t>());
      // K/V grows linearly with the context: 256x from 1K to 256K.
      EXPECT_EQ(m256k["kv_bytes"].get<int64_t>(), 256 * m1k["kv_bytes"].get<int64_t>());
    }
    // More attention layers, more K/V at 256K.
    if (i > 0) {
      EXPECT_GT(m256k["kv_bytes"].get<int64_t>(),
                j["layouts"][i - 1]["memory"][1]["kv_bytes"].get<int64_t>());
    }
  }
  // The state a run holds grows with the context only when the layout has attention.
  const json& am = j["layouts"][0]["runs"];
  const json& aa = j["layouts"][2]["runs"];
  EXPECT_EQ(am[0]["state_bytes"].get<int64_t>() + 64, am[1]["state_bytes"].get<int64_t>())
      << "all-mamba: only the 1-byte key mask per position grows";
  EXPECT_GT(aa[1]["state_bytes"].get<int64_t>(), aa[0]["state_bytes"].get<int64_t>() + 64);
}

TEST(ExploreCli, TrainVariantReportsHeldOutPerplexity) {
  const std::string dir = make_temp_dir("explore_train");
  const std::string corpus = dir + "/corpus.txt";
  testutil::write_bytes(corpus, testutil::training_text());
  const std::string tok = std::string(JAMBA_SOURCE_DIR) + "/models/kjv/tokenizer.model";
  const RunResult r =
      run("explore --preset tiny --layouts all-mamba,1:1 --context 64 "
          "--memory-context 1k --threads 2 --train " +
          q(corpus) + " --tokenizer " + q(tok) +
          " --steps 2 --batch 2 --seq 32 --eval-windows 2 --lr 1e-3 --out " + q(dir + "/out"));
  ASSERT_EQ(r.rc, 0) << describe(r);
  EXPECT_TRUE(fs::is_regular_file(dir + "/out/perplexity.svg"));
  EXPECT_TRUE(contains(r.out, "held-out ppl")) << r.out;
  EXPECT_TRUE(contains(read_bytes(dir + "/out/explore.md"), "## Training")) << r.out;
  const json j = json::parse(read_bytes(dir + "/out/explore.json"));
  EXPECT_EQ(j["train"]["steps"].get<int64_t>(), 2);
  ASSERT_EQ(j["layouts"].size(), 2u);
  for (const json& l : j["layouts"]) {
    ASSERT_TRUE(l.contains("train")) << l["layout"];
    expect_positive_finite(l["train"]["heldout_loss"], "heldout_loss");
    const double p = l["train"]["perplexity"].get<double>();
    EXPECT_TRUE(std::isfinite(p));
    EXPECT_GT(p, 1.0);
    EXPECT_NEAR(std::log(p), l["train"]["heldout_loss"].get<double>(), 1e-6);
    // A random start predicts about uniformly over the 65536 ids; two steps do not blow it up.
    EXPECT_LT(p, 4.0 * 65536);
  }
  const std::string svg = read_bytes(dir + "/out/perplexity.svg");
  EXPECT_TRUE(contains(svg, "all-mamba"));
  EXPECT_TRUE(contains(svg, "<rect x="));
}

TEST(ExploreCli, BadOptionsAreClearErrors) {
  const std::string out = make_temp_dir("explore_bad") + "/out";
  expect_clean_error(run("explore --preset tiny --layouts 1:7,3:5 --out " + q(out)),
                     {"'3:5'", "one attention layer per period"});
  expect_clean_error(run("explore --preset tiny --layouts 1:x --out " + q(out)),
                     {"[layout] '1:x'", "expected all-mamba, all-attention or a:m"});
  expect_clean_error(run("explore --preset tiny --context 4x --out " + q(out)),
                     {"[--context]", "got '4x'", "4k"});
  expect_clean_error(run("explore --preset tiny --context 0 --out " + q(out)),
                     {"[--context]", "got '0'"});
  expect_clean_error(run("explore --preset tiny --memory-context 2000m --out " + q(out)),
                     {"[--memory-context]", "at most", "got '2000m'"});
  expect_clean_error(run("explore --layouts 1:1 --out " + q(out)), {"--preset", "--config"});
  expect_clean_error(run("explore --preset tiny --train x.txt --steps 2 --out " + q(out)),
                     {"--tokenizer"});
  EXPECT_FALSE(fs::exists(out)) << "nothing is written when the options are wrong";
}

}  // namespace
}  // namespace jamba
