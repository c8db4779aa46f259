#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/checked.h"
#include "core/error.h"
#include "io/json_limits.h"

namespace jamba {

namespace fs = std::filesystem;
using json = nlohmann::json;

int64_t TensorInfo::numel() const {
  // SafetensorsFile::open checked that the product fits int64 (checked_shape_bytes).
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // 100 MB, as the reference implementation

bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

// Elements of `shape` times `elem_size` bytes, or -1 when that does not fit int64. Zero
// dimensions count as 1 in the check, so every partial product of the dimensions (which code
// computes for strides and row sizes) fits too, even for an empty tensor.
int64_t checked_shape_bytes(const std::vector<int64_t>& shape, size_t elem_size) {
  int64_t all = int64_t(elem_size), nonzero = int64_t(elem_size);
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(nonzero, std::max<int64_t>(d, 1), &nonzero)) return -1;
    all = d == 0 ? 0 : all * d;  // all <= nonzero: cannot overflow
  }
  return all;
}
}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path,
                                                       bool read_into_memory) {
  auto f = std::make_shared<SafetensorsFile>();
  // Read into memory: the data section (after the 8-byte length and the header) is placed on a
  // 64-byte boundary. A short or unreadable prefix is reported by the checks below.
  uint64_t data_start = 0;
  if (read_into_memory) {
    std::ifstream in(path, std::ios::binary);
    uint64_t n = 0;
    if (in.read(reinterpret_cast<char*>(&n), 8) && n <= kMaxHeader) data_start = 8 + n;
  }
  f->file_ = MappedFile(path, read_into_memory, data_start);
  const size_t size = f->file_.size();
  const uint8_t* base = f->file_.data();
  if (size < 8) fail(path, ": truncated safetensors file: ", size, " bytes, need at least 8");
  uint64_t n = 0;
  std::memcpy(&n, base, 8);  // little-endian host
  if (n > kMaxHeader) fail(path, ": header length ", n, " exceeds limit ", kMaxHeader);
  if (8 + n > size)
    fail(path, ": header length ", n, " runs past end of file (file size ", size, ")");
  const json header = parse_json_limited(
      std::string_view(reinterpret_cast<const char*>(base + 8), size_t(n)), path + ": header");
  if (!header.is_object())
    fail(path, ": header is not a JSON object (got ", header.type_name(), ")");
  const uint8_t* data = base + 8 + n;
  const size_t data_size = size - 8 - n;

  struct Span {
    uint64_t b, e;
    std::string name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, ": __metadata__ must be an object, got ", brief(v));
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(path, ": __metadata__ value for '", m.key(), "' must be a string, got ",
               brief(m.value()));
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      fail(path, ": tensor '", name, "': entry must have dtype, shape and data_offsets, got ",
           brief(v));
    TensorInfo t;
    t.name = name;
    t.file = path;
    if (!v["dtype"].is_string() || !dtype_from_name(v["dtype"].get<std::string>(), &t.dtype))
      fail(path, ": tensor '", name, "': unknown dtype ", brief(v["dtype"]));
    if (!v["shape"].is_array())
      fail(path, ": tensor '", name, "': shape must be an array, got ", brief(v["shape"]));
    for (const auto& d : v["shape"]) {
      // Unsigned values above INT64_MAX read as negative int64: rejected here too.
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        fail(path, ": tensor '", name, "': bad shape ", brief(v["shape"]),
             " (dimensions must be integers in [0, 2^63))");
      t.shape.push_back(d.get<int64_t>());
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      fail(path, ": tensor '", name, "': data_offsets must be two non-negative integers, got ",
           brief(off));
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e) fail(path, ": tensor '", name, "': data_offsets [", b, ",", e, "] are reversed");
    if (e > data_size)
      fail(path, ": tensor '", name, "': data_offsets [", b, ",", e,
           "] run past the end of the data (", data_size, " bytes; file truncated?)");
    // numel * dtype size, checked: [2^32]^4 must not wrap to a small (or zero) byte count.
    const int64_t want = checked_shape_bytes(t.shape, dtype_size(t.dtype));
    if (want < 0)
      fail(path, ": tensor '", name, "': ", dtype_name(t.dtype), shape_str(t.shape),
           " is too large (its byte count does not fit int64); data_offsets give ", e - b,
           " bytes");
    if (uint64_t(want) != e - b)
      fail(path, ": tensor '", name, "': ", dtype_name(t.dtype), shape_str(t.shape), " needs ",
           want, " bytes but data_offsets give ", e - b);
    t.data = data + b;
    t.nbytes = e - b;
    if (e > b) spans.push_back({b, e, name});  // empty tensors occupy no bytes
    f->tensors_.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.b < b.b; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].b < spans[i - 1].e)
      fail(path, ": tensors '", spans[i - 1].name, "' [", spans[i - 1].b, ",", spans[i - 1].e,
           ") and '", spans[i].name, "' [", spans[i].b, ",", spans[i].e, ") overlap");
  return f;
}

namespace {
uint64_t fnv1a(const uint8_t* p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
constexpr uint64_t kFnvBasis = 1469598103934665603ull;
}  // namespace

uint64_t SafetensorsFile::payload_checksum() const {
  std::vector<const TensorInfo*> ts;
  for (const auto& [n, t] : tensors_) ts.push_back(&t);
  std::sort(ts.begin(), ts.end(), [](auto* a, auto* b) { return a->data < b->data; });
  uint64_t h = kFnvBasis;
  for (const TensorInfo* t : ts) h = fnv1a(t->data, t->nbytes, h);
  return h;
}

uint64_t SafetensorsWriter::payload_checksum() const {
  uint64_t h = kFnvBasis;
  for (const auto& e : entries_) h = fnv1a(e.bytes.data(), e.bytes.size(), h);
  return h;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorInfo& SafetensorsFile::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail(path(), ": missing tensor '", name, "'");
  return *t;
}

Checkpoint Checkpoint::in_memory(const std::string& label,
                                 std::map<std::string, TensorInfo> tensors) {
  Checkpoint ck;
  ck.dir_ = label;
  ck.tensors_ = std::move(tensors);
  return ck;
}

Checkpoint Checkpoint::open(const std::string& dir, bool read_into_memory) {
  Checkpoint ck;
  ck.dir_ = dir;
  if (!fs::is_directory(dir)) fail(dir, ": model directory does not exist");
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  std::map<std::string, std::string> weight_map;  // tensor -> shard
  std::vector<std::string> shard_files;
  if (fs::exists(index)) {
    std::ifstream in(index, std::ios::binary);
    if (!in) fail(index.string(), ": cannot open");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const json j = parse_json_limited(text, index.string());
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index.string(), ": missing object 'weight_map'");
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail(index.string(), ": weight_map entry '", it.key(), "' must be a file name, got ",
             brief(it.value()));
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        fail(index.string(), ": weight_map entry '", it.key(), "' names a path outside the "
             "directory: '", shard, "'");
      // A plain file name: an empty or "." name is the directory itself, NUL cuts the name short
      // for the OS, and a name longer than NAME_MAX made std::filesystem throw its own exception
      // (fuzz_safetensors_index, tests/test_fuzz_found.cpp).
      if (shard.empty() || shard == "." || shard.size() > 255 ||
          shard.find('\0') != std::string::npos)
        fail(index.string(), ": weight_map entry '", it.key(), "' is not a valid shard file name: ",
             brief(it.value()));
      weight_map[it.key()] = shard;
      if (std::find(shard_files.begin(), shard_files.end(), shard) == shard_files.end())
        shard_files.push_back(shard);
    }
  } else if (fs::exists(single)) {
    shard_files.push_back("model.safetensors");
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") shard_files.push_back(e.path().filename());
    std::sort(shard_files.begin(), shard_files.end());
    if (shard_files.empty())
      fail(dir, ": no model.safetensors, model.safetensors.index.json or *.safetensors found");
  }
  for (const auto& shard : shard_files) {
    std::error_code ec;
    if (!weight_map.empty() && !fs::exists(fs::path(dir) / shard, ec)) {
      std::string first;  // a tensor the index places in the missing shard
      for (const auto& [name, s] : weight_map)
        if (s == shard) {
          first = name;
          break;
        }
      fail(index.string(), ": shard '", shard, "' (listed for tensor '", first,
           "') does not exist in ", dir);
    }
    auto f = SafetensorsFile::open((fs::path(dir) / shard).string(), read_into_memory);
    for (const auto& [name, t] : f->tensors()) {
      if (!weight_map.empty()) {
        auto w = weight_map.find(name);
        if (w == weight_map.end())
          fail(f->path(), ": tensor '", name, "' is not listed in model.safetensors.index.json");
        if (w->second != shard)
          fail(f->path(), ": tensor '", name, "' is listed in the index under shard '", w->second,
               "'");
      }
      if (ck.tensors_.count(name))
        fail(f->path(), ": tensor '", name, "' also present in ", ck.tensors_[name].file);
      ck.tensors_.emplace(name, t);
    }
    ck.files_.push_back(std::move(f));
  }
  for (const auto& [name, shard] : weight_map)
    if (!ck.tensors_.count(name))
      fail(index.string(), ": tensor '", name, "' listed for shard '", shard,
           "' is missing from that file");
  return ck;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<float> tensor_to_f32(const TensorInfo& t) {
  if (!is_float(t.dtype))
    fail(t.file, ": tensor '", t.name, "': expected a float dtype, got ", dtype_name(t.dtype));
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype, t.data, out.data(), out.size());  // (n = 0: nothing is touched)
  return out;
}

std::vector<int64_t> tensor_to_i64(const TensorInfo& t) {
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  // The data may sit at any offset of the file (the format does not align it): bytes are copied,
  // never read through a typed pointer; an empty tensor's out.data() may be null.
  if (t.dtype == DType::I64) {
    if (!out.empty()) std::memcpy(out.data(), t.data, out.size() * sizeof(int64_t));
  } else if (t.dtype == DType::I32) {
    for (size_t i = 0; i < out.size(); ++i) {
      int32_t v;
      std::memcpy(&v, t.data + i * sizeof(int32_t), sizeof v);
      out[i] = v;
    }
  } else {
    fail(t.file, ": tensor '", t.name, "': expected I64 or I32, got ", dtype_name(t.dtype));
  }
  return out;
}

std::vector<int32_t> read_token_ids(const SafetensorsFile& f, const std::string& name,
                                    int64_t* B, int64_t* T) {
  const TensorInfo& ids = f.get(name);
  if (ids.shape.size() != 2)
    fail(f.path(), ": tensor '", name, "': expected shape [B,T], got ", shape_str(ids.shape));
  *B = ids.shape[0];
  *T = ids.shape[1];
  std::vector<int32_t> out;
  for (int64_t v : tensor_to_i64(ids)) {
    if (v < 0 || v > INT32_MAX) fail(f.path(), ": tensor '", name, "': value ", v, " is not a token id");
    out.push_back(int32_t(v));
  }
  return out;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data) {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= size_t(d);
  Entry e{name, dtype, std::move(shape), std::vector<uint8_t>(n)};
  if (n) std::memcpy(e.bytes.data(), data, n);
  entries_.push_back(std::move(e));
}

namespace {
size_t spec_bytes(const TensorSpec& t) {
  size_t n = dtype_size(t.dtype);
  for (int64_t d : t.shape) n *= size_t(d);
  return n;
}
}  // namespace

void SafetensorsWriter::write(const std::string& path) const {
  std::vector<TensorSpec> specs;
  for (const auto& e : entries_) specs.push_back({e.name, e.dtype, e.shape});
  write_safetensors_streaming(
      path, specs,
      [&](size_t i, uint8_t* dst) {
        // Empty tensors: dst and data() may be null, which memcpy does not allow even for 0.
        if (!entries_[i].bytes.empty())
          std::memcpy(dst, entries_[i].bytes.data(), entries_[i].bytes.size());
      },
      metadata_);
}

void write_safetensors_streaming(const std::string& path, const std::vector<TensorSpec>& specs,
                                 const std::function<void(size_t, uint8_t*)>& fill,
                                 const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  uint64_t off = 0;
  for (const auto& t : specs) {
    const uint64_t n = spec_bytes(t);
    if (header.contains(t.name) || t.name == "__metadata__")
      fail(path, ": cannot write tensor '", t.name, "': the name is ",
           t.name == "__metadata__" ? "reserved" : "already used by another tensor");
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {off, off + n}}};
    off += n;
  }
  header["__metadata__"] = metadata;
  std::string h = header.dump();
  // Spaces up to a 64-byte boundary (the format allows header padding): mapped, every tensor
  // whose offset is a multiple of 64 then starts on a cache line.
  while ((8 + h.size()) % 64) h.push_back(' ');
  AtomicFileWriter out(path);
  const uint64_t hn = h.size();
  out.write(&hn, 8);
  out.write(h.data(), h.size());
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < specs.size(); ++i) {
    buf.resize(spec_bytes(specs[i]));
    fill(i, buf.data());
    out.write(buf.data(), buf.size());
  }
  out.commit();
}

}  // namespace jamba
