#include "apps/bench_util.h"

#include <cblas.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace jamba::app::bench {

std::vector<int32_t> synthetic_tokens(int64_t n, int64_t V, int64_t salt) {
  JAMBA_CHECK(V > 3, "[bench] vocab_size ", V, ": expected > 3 for synthetic tokens");
  std::vector<int32_t> t;
  t.reserve(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) t.push_back(int32_t(3 + (i * 7919 + salt * 104729) % (V - 3)));
  return t;
}

double feed(const Model& m, SequenceState& st, const std::vector<int32_t>& toks, int64_t chunk) {
  JAMBA_CHECK(chunk >= 1, "[bench] chunk ", chunk, ": expected >= 1");
  const auto t0 = Clock::now();
  ForwardOutput out;
  for (size_t i = 0; i < toks.size(); i += size_t(chunk)) {
    const size_t n = std::min(toks.size() - i, size_t(chunk));
    const LogitsMode lm = i + n == toks.size() ? LogitsMode::Last : LogitsMode::None;
    std::vector<BatchItem> items{{&st, {toks.data() + i, n}, {}, lm}};
    m.forward(items, &out);
  }
  return seconds(t0, Clock::now());
}

double decode(const Model& m, SequenceState& st, int64_t G, int64_t salt) {
  const int64_t V = m.config().vocab_size;
  const std::vector<int32_t> toks = synthetic_tokens(G, V, 1000 + salt);
  ForwardOutput out;
  const auto t0 = Clock::now();
  for (int64_t g = 0; g < G; ++g) {
    std::vector<BatchItem> items{{&st, {&toks[size_t(g)], 1}, {}, LogitsMode::Last}};
    m.forward(items, &out);
  }
  return seconds(t0, Clock::now());
}

void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";
}

namespace {
int64_t status_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size()));
  return 0;
}
}  // namespace

int64_t peak_rss_bytes() {
  return status_kib("VmHWM") * 1024;
}
int64_t current_rss_bytes() {
  return status_kib("VmRSS") * 1024;
}

void release_free_heap() {
  ::malloc_trim(0);
}

Stat stats(std::vector<double> v) {
  JAMBA_CHECK(!v.empty(), "[bench] no measurements");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return {median, v.front(), v.back()};
}

int64_t parse_token_count(const std::string& text, const std::string& option, int64_t max) {
  auto bad = [&](const char* why) {
    fail("[", option, "] expected a token count such as 4096, 4k or 1m (k = 1024, m = 1048576)",
         why, ", got '", text, "'");
  };
  size_t i = 0;
  int64_t v = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    if (v > (int64_t(1) << 40)) bad(" (too large)");
    v = v * 10 + (text[i++] - '0');
  }
  if (i == 0) bad("");
  int64_t mult = 1;
  if (i < text.size()) {
    const char u = char(std::tolower(static_cast<unsigned char>(text[i++])));
    if (u == 'k')
      mult = 1024;
    else if (u == 'm')
      mult = 1024 * 1024;
    else
      bad("");
    if (i != text.size()) bad("");
  }
  if (v == 0) bad(" (at least 1)");
  if (v > max / mult) fail("[", option, "] expected at most ", max, " tokens, got '", text, "'");
  return v * mult;
}

std::vector<int64_t> parse_token_counts(const std::vector<std::string>& texts,
                                        const std::string& option, int64_t max) {
  JAMBA_CHECK(!texts.empty(), "[", option, "] expected at least one token count, got none");
  std::vector<int64_t> v;
  for (const std::string& t : texts) v.push_back(parse_token_count(t, option, max));
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double l = -1;
  if (!(f >> l)) return -1;
  return l;
}

double process_cpu_seconds() {
  rusage u{};
  if (::getrusage(RUSAGE_SELF, &u) != 0) return 0;
  auto sec = [](const timeval& t) { return double(t.tv_sec) + 1e-6 * double(t.tv_usec); };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

Peaks measure_peaks(WeightType wt, bool a16, double model_bytes) {
  Peaks p;
  const int mr = 512, n = 2048;
  std::vector<float> a(static_cast<size_t>(mr) * n), b(static_cast<size_t>(n) * n),
      c(static_cast<size_t>(mr) * n);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& x : a) x = nd(rng);
  for (float& x : b) x = nd(rng);
  std::vector<uint16_t> w16;
  std::vector<int8_t> w8;
  std::vector<uint8_t> w4;
  std::vector<float> sc;
  std::vector<uint16_t> sc4;  // q4: bf16 group scales
  const bool q8 = wt == WeightType::Int8 || wt == WeightType::Int8Experts, q4 = wt == WeightType::Q4;
  if (a16) {
    w16.resize(b.size());
    for (size_t i = 0; i < b.size(); ++i) w16[i] = f32_to_bf16(b[i]);
  } else if (q8) {
    w8.resize(b.size());
    sc.resize(size_t(n));
    for (int r = 0; r < n; ++r) quantize_row_int8(b.data() + size_t(r) * n, n, w8.data() + size_t(r) * n, &sc[size_t(r)]);
  } else if (q4) {
    w4.resize(size_t(n * q4_row_bytes(n)));
    sc4.resize(size_t(n * q4_groups(n)));
    for (int r = 0; r < n; ++r)
      quantize_row_q4(b.data() + size_t(r) * n, n, w4.data() + r * q4_row_bytes(n), sc4.data() + r * q4_groups(n));
  }
  double best = 0;
  for (int r = 0; r < 4; ++r) {
    auto t0 = Clock::now();
    if (a16)
      cpu::gemm_bf16({.M = mr, .N = n, .K = n, .A = a.data(), .lda = n, .W = w16.data(), .ldw = n,
                      .C = c.data(), .ldc = n, .bf16_activations = true});
    else if (q8)
      cpu::gemm_q8({.M = mr, .N = n, .K = n, .A = a.data(), .lda = n, .W = w8.data(), .ldw = n,
                    .scale = sc.data(), .C = c.data(), .ldc = n});
    else if (q4)
      cpu::gemm_q4({.M = mr, .N = n, .K = n, .A = a.data(), .lda = n, .W = w4.data(),
                    .ldw = q4_row_bytes(n), .scale = sc4.data(), .lds = q4_groups(n), .C = c.data(),
                    .ldc = n});
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mr, n, n, 1.0f, a.data(), n, b.data(), n,
                  0.0f, c.data(), n);
    best = std::max(best, 2.0 * mr * n * n / seconds(t0, Clock::now()) / 1e9);
  }
  p.gemm_gflops = best;
  const size_t m = std::clamp<size_t>(size_t(model_bytes) / 64 * 64, size_t(256) << 20, size_t(2) << 30);
  std::vector<float> big(m / sizeof(float));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < big.size(); ++i) big[i] = float(i & 7);
  std::vector<double> bws;
  for (int r = 0; r < 8; ++r) {
    float s = 0;
    auto t0 = Clock::now();
#pragma omp parallel for simd reduction(+ : s) schedule(static)
    for (size_t i = 0; i < big.size(); ++i) s += big[i];
    const double t = seconds(t0, Clock::now());
    if (s == -1.0f) std::printf(" ");  // keep the sum alive
    if (r > 0) bws.push_back(double(m) / t / 1e9);  // the first pass is a warm-up
  }
  std::sort(bws.begin(), bws.end());
  p.bw_gbs = bws[bws.size() / 2];
  p.bw_lo = bws.front();
  p.bw_hi = bws.back();
  p.bw_bytes = double(m);
  return p;
}

}  // namespace jamba::app::bench
