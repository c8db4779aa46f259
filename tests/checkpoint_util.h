// Test helpers for building damaged / re-laid-out copies of the golden checkpoints
// (../shared/golden is read-only: every edit happens on a copy in a fresh temp directory).
#pragma once
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace jamba::testutil {

namespace fs = std::filesystem;
using json = nlohmann::json;

inline std::string golden_dir(const std::string& name) {
  return std::string(JAMBA_SHARED_DIR) + "/golden/" + name;
}

// Removes the directories made by make_temp_dir at process exit (kept if JAMBA_KEEP_TEMP is set).
struct TempDirRegistry {
  std::vector<fs::path> dirs;
  ~TempDirRegistry() {
    if (std::getenv("JAMBA_KEEP_TEMP")) return;
    std::error_code ec;
    for (const auto& d : dirs) fs::remove_all(d, ec);
  }
};

// A fresh, empty directory under the gtest temp dir (unique per call and per process).
inline std::string make_temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  static TempDirRegistry registry;
  const fs::path p = fs::path(::testing::TempDir()) /
                     ("jamba_" + tag + "_" + std::to_string(::getpid()) + "_" +
                      std::to_string(counter++));
  fs::remove_all(p);
  fs::create_directories(p);
  registry.dirs.push_back(p);
  return p.string();
}

// Copies config.json + model.safetensors of a golden case into a fresh writable temp dir.
inline std::string copy_case(const std::string& name) {
  const std::string dst = make_temp_dir(name);
  for (const char* f : {"config.json", "model.safetensors"}) {
    fs::copy_file(fs::path(golden_dir(name)) / f, fs::path(dst) / f);
    fs::permissions(fs::path(dst) / f, fs::perms::owner_read | fs::perms::owner_write);
  }
  return dst;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline json read_json(const std::string& path) { return json::parse(read_bytes(path)); }
inline void write_json(const std::string& path, const json& j) { write_bytes(path, j.dump(2)); }

// Rewrites config.json of `dir` through `edit`.
inline void edit_config(const std::string& dir, const std::function<void(json&)>& edit) {
  const std::string p = dir + "/config.json";
  json j = read_json(p);
  edit(j);
  write_json(p, j);
}

// One tensor held in memory (a copy of the file's bytes).
struct RawTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  std::vector<float> f32() const {
    std::vector<float> v(bytes.size() / dtype_size(dtype));
    convert_to_f32(dtype, bytes.data(), v.data(), v.size());
    return v;
  }
  static RawTensor from_f32(std::string name, std::vector<int64_t> shape,
                            const std::vector<float>& v) {
    RawTensor t{std::move(name), DType::F32, std::move(shape), {}};
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    return t;
  }
};

// All tensors of a safetensors file, sorted by name.
inline std::vector<RawTensor> read_tensors(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::vector<RawTensor> out;
  for (const auto& [name, t] : f->tensors())
    out.push_back({name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
  return out;
}

inline void write_tensors(const std::string& path, const std::vector<RawTensor>& ts) {
  SafetensorsWriter w;
  for (const auto& t : ts) w.add(t.name, t.dtype, t.shape, t.bytes.data());
  w.write(path);
}

inline RawTensor* find_tensor(std::vector<RawTensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return &t;
  return nullptr;
}

// Rewrites `dir`/model.safetensors through `edit` (rename / drop / add / reshape tensors).
inline void edit_tensors(const std::string& dir,
                         const std::function<void(std::vector<RawTensor>&)>& edit) {
  const std::string p = dir + "/model.safetensors";
  auto ts = read_tensors(p);
  edit(ts);
  write_tensors(p, ts);
}

inline void drop_tensor(std::vector<RawTensor>& ts, const std::string& name) {
  const size_t n = ts.size();
  std::erase_if(ts, [&](const RawTensor& t) { return t.name == name; });
  ASSERT_EQ(ts.size() + 1, n) << "no tensor " << name;
}

// Converts every F32 tensor to BF16 or F16 (round to nearest even).
inline void convert_all(std::vector<RawTensor>& ts, DType to) {
  for (auto& t : ts) {
    if (t.dtype != DType::F32) continue;
    const auto v = t.f32();
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      h[i] = to == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
    t.dtype = to;
    t.bytes.assign(reinterpret_cast<const uint8_t*>(h.data()),
                   reinterpret_cast<const uint8_t*>(h.data()) + h.size() * 2);
  }
}

// Raw file surgery: the header JSON and the data area of a safetensors file.
struct RawFile {
  json header;
  std::string data;
};
inline RawFile read_raw(const std::string& path) {
  const std::string b = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  return {json::parse(b.substr(8, n)), b.substr(8 + n)};
}
// Writes `header_text` (verbatim) with its u64 length prefix, then `data`.
inline void write_raw_text(const std::string& path, const std::string& header_text,
                           const std::string& data) {
  const uint64_t n = header_text.size();
  std::string b(reinterpret_cast<const char*>(&n), 8);
  write_bytes(path, b + header_text + data);
}
inline void edit_header(const std::string& path, const std::function<void(json&)>& edit) {
  RawFile r = read_raw(path);
  edit(r.header);
  write_raw_text(path, r.header.dump(), r.data);
}

// Asserts that Model::load(dir) throws jamba::Error whose message contains every `parts`.
inline void expect_load_error(const std::string& dir, const std::vector<std::string>& parts) {
  try {
    Model::load(dir);
    ADD_FAILURE() << "Model::load(" << dir << ") did not throw; expected an error with '"
                  << (parts.empty() ? "" : parts[0]) << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks '" << p << "': " << msg;
  }
}

}  // namespace jamba::testutil
