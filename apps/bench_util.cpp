#include "apps/bench_util.h"

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <fstream>

#include "core/error.h"

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

}  // namespace jamba::app::bench
