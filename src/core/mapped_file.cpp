#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "core/error.h"

namespace jamba {

MappedFile::MappedFile(const std::string& path, bool read_into_memory, uint64_t align_at)
    : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    const char* env = std::getenv("JAMBA_MMAP");
    const bool map_file = !read_into_memory || (env && std::strcmp(env, "0") != 0);
    const size_t shift = map_file ? 0 : (64 - align_at % 64) % 64;
    map_size_ = size_ + shift;
    void* p = map_file ? ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0)
                       : ::mmap(nullptr, map_size_, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(path, map_file ? ": mmap failed: " : ": cannot allocate memory for the file: ",
           std::strerror(e));
    }
    if (!map_file) {
      ::madvise(p, map_size_, MADV_HUGEPAGE);  // a hint: without THP the copy still streams fast
      // 16 MB chunks read by all threads: the first touch of fresh pages (zeroing, and on a VM
      // the host's own fault) dominates, and it runs in parallel.
      auto* dst = static_cast<uint8_t*>(p) + shift;
      constexpr size_t kChunk = size_t(1) << 24;
      const int64_t nchunks = int64_t((size_ + kChunk - 1) / kChunk);
      int64_t bad_off = -1;
      int bad_errno = 0;
#pragma omp parallel for schedule(dynamic)
      for (int64_t c = 0; c < nchunks; ++c) {
        size_t off = size_t(c) * kChunk;
        const size_t end = std::min(size_, off + kChunk);
        while (off < end) {
          const ssize_t r = ::pread(fd, dst + off, end - off, off_t(off));
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) {
#pragma omp critical(jamba_read_error)
            if (bad_off < 0 || int64_t(off) < bad_off) {
              bad_off = int64_t(off);
              bad_errno = r < 0 ? errno : 0;
            }
            break;
          }
          off += size_t(r);
        }
      }
      if (bad_off >= 0) {
        ::munmap(p, map_size_);
        ::close(fd);
        fail(path, ": read failed at byte ", bad_off, " of ", size_, ": ",
             bad_errno ? std::strerror(bad_errno) : "unexpected end of file");
      }
      ::mprotect(p, map_size_, PROT_READ);
    }
    map_ = p;
    data_ = static_cast<const uint8_t*>(p) + shift;
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (map_) ::munmap(map_, map_size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)), map_(std::exchange(o.map_, nullptr)),
      map_size_(std::exchange(o.map_size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_size_);
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
  }
  return *this;
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(tmp_, ": cannot create: ", std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::write(const void* bytes, size_t n) {
  const auto* p = static_cast<const uint8_t*>(bytes);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(tmp_, ": write failed: ", std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}

void AtomicFileWriter::commit() {
  if (::fsync(fd_) != 0) fail(tmp_, ": fsync failed: ", std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    ::unlink(tmp_.c_str());
    fail(tmp_, ": close failed: ", std::strerror(errno));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp_.c_str());
    fail(path_, ": rename from ", tmp_, " failed: ", std::strerror(e));
  }
}

void write_file_atomic(const std::string& path, const void* bytes, size_t n) {
  AtomicFileWriter w(path);
  w.write(bytes, n);
  w.commit();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

std::string read_file_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": read error");
  return ss.str();
}

}  // namespace jamba
