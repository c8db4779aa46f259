// libFuzzer target: a safetensors file (SafetensorsFile::open, what Model::load / Checkpoint::open
// and `jamba forward --input` read). The input is the whole file.
//
// Properties of a file that opens: every tensor's bytes are the bytes its header entry names
// (checked against the input itself), nbytes = numel * dtype size, the mapped and the in-memory
// reads agree, float / integer conversions have numel elements, and writing the tensors back with
// SafetensorsWriter gives a file that reads back the same (names, dtypes, shapes, bytes, metadata).
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/json_limits.h"
#include "io/safetensors.h"

using namespace jamba;
using jamba::fuzz::ScratchDir;

namespace {

bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

void check_file(const SafetensorsFile& f, const uint8_t* data, size_t size) {
  // The header is valid JSON of bounded depth (open() accepted it): the harness reads the offsets
  // itself and compares each tensor's bytes with the input's.
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  const nlohmann::json header =
      parse_json_limited(std::string_view(reinterpret_cast<const char*>(data + 8), n), "harness");
  const uint8_t* area = data + 8 + n;
  const size_t area_size = size - 8 - n;
  size_t n_tensors = 0;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ++n_tensors;
    const TensorInfo* t = f.find(it.key());
    FUZZ_CHECK(t != nullptr, "tensor '", it.key(), "' of the header is not in tensors()");
    const uint64_t b = it.value()["data_offsets"][0].get<uint64_t>();
    const uint64_t e = it.value()["data_offsets"][1].get<uint64_t>();
    FUZZ_CHECK(b <= e && e <= area_size, "accepted offsets [", b, ",", e, "] outside ", area_size);
    FUZZ_CHECK(t->nbytes == e - b, "tensor '", t->name, "': nbytes ", t->nbytes, " vs ", e - b);
    const int64_t numel = t->numel();
    FUZZ_CHECK(numel >= 0, "negative numel");
    FUZZ_CHECK(uint64_t(numel) * dtype_size(t->dtype) == t->nbytes, "tensor '", t->name,
               "': numel ", numel, " x ", dtype_size(t->dtype), " != nbytes ", t->nbytes);
    FUZZ_CHECK(t->nbytes == 0 || std::memcmp(t->data, area + b, t->nbytes) == 0, "tensor '",
               t->name, "': bytes differ from the file's");
  }
  FUZZ_CHECK(n_tensors == f.tensors().size(), "tensor count ", f.tensors().size(), " vs header ",
             n_tensors);
  for (const auto& [name, t] : f.tensors()) {
    if (is_float(t.dtype)) {
      FUZZ_CHECK(tensor_to_f32(t).size() == size_t(t.numel()), "tensor_to_f32 size");
    } else if (t.dtype == DType::I64 || t.dtype == DType::I32) {
      FUZZ_CHECK(tensor_to_i64(t).size() == size_t(t.numel()), "tensor_to_i64 size");
    }
  }
  if (f.find("input_ids")) {
    try {
      int64_t B = 0, T = 0;
      const auto ids = read_token_ids(f, "input_ids", &B, &T);
      FUZZ_CHECK(B >= 0 && T >= 0 && int64_t(ids.size()) == B * T, "read_token_ids: ", ids.size(),
                 " ids for [", B, ",", T, "]");
    } catch (const Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ScratchDir dir("safetensors");
  const std::string path = dir.file("in.safetensors"), copy = dir.file("copy.safetensors");
  fuzz::write_file(path, fuzz::as_text(data, size));
  std::shared_ptr<SafetensorsFile> mapped;
  try {
    mapped = SafetensorsFile::open(path, false);
  } catch (const Error&) {
  }
  std::shared_ptr<SafetensorsFile> loaded;
  try {
    loaded = SafetensorsFile::open(path, true);
  } catch (const Error&) {
  }
  FUZZ_CHECK(bool(mapped) == bool(loaded), "mapped and in-memory open disagree");
  if (!mapped) return 0;
  check_file(*mapped, data, size);
  check_file(*loaded, data, size);
  FUZZ_CHECK(mapped->payload_checksum() == loaded->payload_checksum(), "checksums disagree");

  // Write back and read again.
  SafetensorsWriter w;
  for (const auto& [name, t] : mapped->tensors()) w.add(name, t.dtype, t.shape, t.data);
  for (const auto& [k, v] : mapped->metadata()) w.set_metadata(k, v);
  try {
    w.write(copy);
  } catch (const Error& e) {
    // Names the writer refuses are refused by the reader as well (none are, today).
    FUZZ_CHECK(false, "writer refused what the reader accepted: ", e.what());
  }
  const auto back = SafetensorsFile::open(copy);
  FUZZ_CHECK(back->tensors().size() == mapped->tensors().size(), "round trip: tensor count");
  for (const auto& [name, t] : mapped->tensors()) {
    const TensorInfo* u = back->find(name);
    FUZZ_CHECK(u && u->dtype == t.dtype && u->shape == t.shape && u->nbytes == t.nbytes,
               "round trip: tensor '", name, "' differs");
    FUZZ_CHECK(t.nbytes == 0 || std::memcmp(u->data, t.data, t.nbytes) == 0, "round trip: bytes");
  }
  for (const auto& [k, v] : mapped->metadata()) {
    const auto it = back->metadata().find(k);
    FUZZ_CHECK(it != back->metadata().end() && it->second == v, "round trip: metadata '", k, "'");
  }
  return 0;
}
