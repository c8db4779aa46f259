// Shared helpers of the libFuzzer targets: a per-process scratch directory for entry points that
// take a path, file writing, and a property check that aborts (a libFuzzer crash) with a message.
//
// Contract of every target: parsing untrusted bytes ends in a result or a jamba::Error. Targets
// catch jamba::Error only, so any other exception escapes LLVMFuzzerTestOneInput and aborts.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"

namespace jamba::fuzz {

namespace fs = std::filesystem;

// Reports a violated property and aborts (libFuzzer saves the input as a crash).
[[noreturn]] inline void property_failed(const char* file, int line, const char* cond,
                                         const std::string& what) {
  std::fprintf(stderr, "\n== jamba fuzz property violated at %s:%d: %s\n== %s\n", file, line, cond,
               what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A scratch directory, created on first use and removed at exit: $TMPDIR/jamba_fuzz_<tag>_<pid>.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    std::error_code ec;
    fs::path base = fs::temp_directory_path(ec);
    if (ec) base = "/tmp";
    path_ = base / ("jamba_fuzz_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path_, ec);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) property_failed(__FILE__, __LINE__, "write_file", "cannot write " + path);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
// Written apart from server::valid_utf8 on purpose: fuzz_api_request checks the parser's output
// with it, and an oracle sharing the parser's code would share its bugs.
inline bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (int k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

}  // namespace jamba::fuzz

#define FUZZ_CHECK(cond, ...)                                                               \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::jamba::fuzz::property_failed(__FILE__, __LINE__, #cond, ::jamba::cat(__VA_ARGS__)); \
  } while (0)
