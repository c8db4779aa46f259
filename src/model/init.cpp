#include "model/init.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "model/param_list.h"

namespace jamba {

namespace {
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// Standard normal from two uniforms (Box-Muller), counter-based.
inline float normal_at(uint64_t seed, uint64_t stream, uint64_t i) {
  const uint64_t a = splitmix64(seed ^ splitmix64(stream * 0x100000001b3ull + i));
  const double u1 = (double((a >> 11) & ((1ull << 26) - 1)) + 1.0) / double(1ull << 26);
  const double u2 = double(a >> 37) / double(1ull << 27);
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}
}  // namespace

void init_values(float* dst, size_t n, int kind, int64_t row_len, double std, int64_t pad_row,
                 uint64_t seed, uint64_t stream) {
  const auto k = InitKind(kind);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) {
    float v = 0.0f;
    switch (k) {
      case InitKind::Normal:
        v = float(std) * normal_at(seed, stream, i);
        break;
      case InitKind::Embedding:
        v = (int64_t(i) / row_len == pad_row) ? 0.0f : float(std) * normal_at(seed, stream, i);
        break;
      case InitKind::Zeros:
        v = 0.0f;
        break;
      case InitKind::Ones:
        v = 1.0f;
        break;
      case InitKind::ALog:
        v = std::log(float(int64_t(i) % row_len + 1));
        break;
    }
    dst[i] = v;
  }
}

void init_checkpoint(const JambaConfig& cfg, const std::string& out_dir, uint64_t seed,
                     DType dtype, void (*progress)(size_t, size_t)) {
  JAMBA_CHECK(dtype == DType::F32 || dtype == DType::BF16, "[init] dtype must be F32 or BF16, got ",
              dtype_name(dtype));
  std::filesystem::create_directories(out_dir);
  JambaConfig c = cfg;
  c.torch_dtype = dtype == DType::F32 ? "float32" : "bfloat16";
  const std::vector<ParamSpec> params = param_list(c);
  std::vector<TensorSpec> specs;
  size_t total = 0;
  for (const auto& p : params) {
    specs.push_back({p.name, dtype, p.shape});
    size_t n = dtype_size(dtype);
    for (int64_t d : p.shape) n *= size_t(d);
    total += n;
  }
  size_t done = 0;
  std::vector<float> tmp;
  write_safetensors_streaming(
      out_dir + "/model.safetensors", specs, [&](size_t i, uint8_t* dst) {
        const ParamSpec& p = params[i];
        size_t n = 1;
        for (int64_t d : p.shape) n *= size_t(d);
        tmp.resize(n);
        init_values(tmp.data(), n, int(p.init), p.shape.back(), c.initializer_range,
                    c.pad_token_id, seed, uint64_t(i));
        if (dtype == DType::F32) {
          std::memcpy(dst, tmp.data(), n * 4);
        } else {
          auto* o = reinterpret_cast<uint16_t*>(dst);
#pragma omp parallel for schedule(static) if (n > 65536)
          for (size_t j = 0; j < n; ++j) o[j] = f32_to_bf16(tmp[j]);
        }
        done += n * dtype_size(dtype);
        if (progress) progress(done, total);
      });
  write_file_atomic(out_dir + "/config.json", c.to_json_text());
}

}  // namespace jamba
