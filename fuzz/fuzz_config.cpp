// libFuzzer target: config.json (JambaConfig::from_file, then Model::load over an empty
// checkpoint, which reads quantization_config and sizes the expected weights from the config:
// what `jamba info` / `jamba generate` do before any tensor is read; and param_list /
// model_stats, what `jamba init` and `jamba info` compute from a config alone).
//
// Properties of a config that parses: it validates again, the layer schedule has
// num_hidden_layers entries, to_json_text() re-parses to the same config, and the parameter list
// agrees with checked_param_count() (the bound validate() enforces).
#include "core/error.h"
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "model/model_info.h"
#include "model/param_list.h"

using namespace jamba;

namespace {

struct Fixture {
  fuzz::ScratchDir dir{"config"};
  Fixture() {
    // A valid safetensors file without tensors: Model::load gets past the checkpoint to the
    // config-driven weight checks, and fails at the first expected tensor.
    SafetensorsWriter w;
    w.write(dir.file("model.safetensors"));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  const std::string path = fx.dir.file("config.json");
  fuzz::write_file(path, fuzz::as_text(data, size));
  JambaConfig cfg;
  try {
    cfg = JambaConfig::from_file(path);
  } catch (const Error&) {
    return 0;
  }
  try {
    cfg.validate("again");
  } catch (const Error& e) {
    FUZZ_CHECK(false, "a parsed config fails validate(): ", e.what());
  }
  FUZZ_CHECK(int64_t(cfg.layers.size()) == cfg.num_hidden_layers, "schedule has ",
             cfg.layers.size(), " layers, config ", cfg.num_hidden_layers);

  const std::string text = cfg.to_json_text();
  JambaConfig again;
  try {
    again = JambaConfig::from_json_text(text, "to_json_text");
  } catch (const Error& e) {
    FUZZ_CHECK(false, "to_json_text() does not parse back: ", e.what(), "\n", text);
  }
  FUZZ_CHECK(again.to_json_text() == text, "to_json_text round trip differs:\n", text, "\nvs\n",
             again.to_json_text());

  const int64_t n_params = cfg.checked_param_count("fuzz");
  const ModelStats st = model_stats(cfg);
  FUZZ_CHECK(st.params_total == n_params, "model_stats params ", st.params_total,
             " vs checked_param_count ", n_params);
  FUZZ_CHECK(st.params_active >= 0 && st.params_active <= st.params_total, "active params ",
             st.params_active, " of ", st.params_total);
  int64_t listed = 0;
  for (const ParamSpec& p : param_list(cfg)) {
    int64_t n = 1;
    for (int64_t d : p.shape) {
      FUZZ_CHECK(d > 0, "param '", p.name, "' has dimension ", d);
      n = checked_mul(n, d, "harness");
    }
    listed = checked_add(listed, n, "harness");
  }
  FUZZ_CHECK(listed == n_params, "param_list holds ", listed, " parameters, checked_param_count ",
             n_params);

  try {
    Model::load(fx.dir.path().string());
    FUZZ_CHECK(false, "Model::load succeeded on a checkpoint without tensors");
  } catch (const Error&) {
  }
  return 0;
}
