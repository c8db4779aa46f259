// A whole file, read-only in memory (RAII, move-only).
//
// Memory-mapped by default. read_into_memory: the file is read into anonymous memory (asking for
// transparent huge pages) instead, for checkpoints whose weights are used in place: on this VM
// streaming a 5.8 GB file-backed mapping ran at 5 GB/s where the same bytes in anonymous memory
// stream at 25 GB/s (one thread), and decode reads every weight once per token. Resident memory
// is the same (touched mapped pages count too); the cost is the read at load (~1 s per 5 GB from
// the page cache). JAMBA_MMAP=1 in the environment maps anyway. When read, byte `align_at` of the
// file lands on a 64-byte boundary (a safetensors file's data section: its tensors' rows then
// start on cache lines, which the vector kernels load fastest).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace jamba {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path, bool read_into_memory = false,
                      uint64_t align_at = 0);  // throws naming the path
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;  // what munmap releases: data_ less the alignment shift
  size_t map_size_ = 0;
};

// Streams a file into `path.tmp.<pid>` and renames it over `path` on commit(); if destroyed
// before commit() (error, exception) the temp file is removed and `path` is left untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(const void* bytes, size_t n);
  void commit();  // fsync + rename

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// The whole file as bytes; throws naming the path when it cannot be read.
std::string read_file_text(const std::string& path);

// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
void write_file_atomic(const std::string& path, const void* bytes, size_t n);
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace jamba
