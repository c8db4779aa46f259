// safetensors files: memory-mapped reader with full validation, sharded checkpoints
// (model.safetensors.index.json), and an atomic writer.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace jamba {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file
  size_t nbytes = 0;
  std::string file;  // path of the file holding it (for error messages)

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates: header length, JSON, dtypes, shapes, offsets inside the data area and
  // non-overlapping, byte size == numel * dtype size. Throws Error naming file and tensor.
  // read_into_memory: see MappedFile (for weights used in place).
  static std::shared_ptr<SafetensorsFile> open(const std::string& path, bool read_into_memory = false);

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& get(const std::string& name) const;  // throws naming the file
  const std::string& path() const { return file_.path(); }
  // FNV-1a 64 over the tensor bytes, tensors in data-offset order (for integrity checks).
  uint64_t payload_checksum() const;

 private:
  MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: model.safetensors, or model.safetensors.index.json + shards, or
// (fallback) every *.safetensors in the directory. Tensor names are unique across shards.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir, bool read_into_memory = false);
  // Tensors held by the caller (their data must outlive the Checkpoint); `label` names them in
  // error messages.
  static Checkpoint in_memory(const std::string& label, std::map<std::string, TensorInfo> tensors);

  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorInfo> tensors_;
};

// Copies a tensor to float32 (any float dtype). Throws if not a float dtype.
std::vector<float> tensor_to_f32(const TensorInfo& t);
std::vector<int64_t> tensor_to_i64(const TensorInfo& t);  // I64 or I32
// Token ids of a [B, T] integer tensor (`name`, e.g. "input_ids"); throws naming the file and
// tensor on a wrong rank or a value that is not an int32 id >= 0.
std::vector<int32_t> read_token_ids(const SafetensorsFile& f, const std::string& name,
                                    int64_t* B, int64_t* T);

// Writer: collects tensors (copied) and writes the file atomically.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data);
  void add_f32(const std::string& name, std::vector<int64_t> shape, const float* data) {
    add(name, DType::F32, std::move(shape), data);
  }
  void add_i64(const std::string& name, std::vector<int64_t> shape, const int64_t* data) {
    add(name, DType::I64, std::move(shape), data);
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  void write(const std::string& path) const;
  uint64_t payload_checksum() const;  // same definition as SafetensorsFile::payload_checksum

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_{{"format", "pt"}};
};

// Streaming writer for files too large to build in memory: the header is written first, then
// `fill(i, dst)` produces the bytes of tensor i (dst has numel*dtype_size bytes), one tensor at
// a time. Written to a temp file and renamed into place (atomic).
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};
void write_safetensors_streaming(const std::string& path, const std::vector<TensorSpec>& specs,
                                 const std::function<void(size_t, uint8_t*)>& fill,
                                 const std::map<std::string, std::string>& metadata = {
                                     {"format", "pt"}});

}  // namespace jamba
