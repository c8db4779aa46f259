// libFuzzer target: model.safetensors.index.json, the index of a sharded checkpoint
// (Checkpoint::open, what Model::load reads). The input is the index file; the scratch directory
// holds two small fixed shards it may name:
//   model-00001-of-00002.safetensors: "a" F32 [2], "b" BF16 [3]
//   model-00002-of-00002.safetensors: "c" I64 [1]
// Property of an index that opens: the checkpoint's tensors are exactly the index's weight_map,
// each from the shard the index names.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/json_limits.h"
#include "io/safetensors.h"

using namespace jamba;

namespace {

struct Fixture {
  fuzz::ScratchDir dir{"index"};
  Fixture() {
    const float a[2] = {1.0f, -2.0f};
    const uint16_t b[3] = {0x3f80, 0x4000, 0xc040};
    const int64_t c[1] = {7};
    SafetensorsWriter w1;
    w1.add_f32("a", {2}, a);
    w1.add("b", DType::BF16, {3}, b);
    w1.write(dir.file("model-00001-of-00002.safetensors"));
    SafetensorsWriter w2;
    w2.add_i64("c", {1}, c);
    w2.write(dir.file("model-00002-of-00002.safetensors"));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  const std::string index = fx.dir.file("model.safetensors.index.json");
  fuzz::write_file(index, fuzz::as_text(data, size));
  Checkpoint ck;
  try {
    ck = Checkpoint::open(fx.dir.path().string());
  } catch (const Error&) {
    return 0;
  }
  const nlohmann::json j = parse_json_limited(fuzz::as_text(data, size), "harness");
  const nlohmann::json& map = j.at("weight_map");
  FUZZ_CHECK(map.size() == ck.tensors().size(), "index lists ", map.size(),
             " tensors, checkpoint has ", ck.tensors().size());
  for (const auto& [name, t] : ck.tensors()) {
    FUZZ_CHECK(map.contains(name), "tensor '", name, "' is not in the index");
    const std::string shard = map[name].get<std::string>();
    FUZZ_CHECK(t.file == fx.dir.file(shard), "tensor '", name, "' comes from ", t.file,
               ", the index says ", shard);
  }
  return 0;
}
