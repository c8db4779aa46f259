// Timing helpers shared by the measuring commands (`jamba explore`; written so that `jamba bench`
// can use them too: the same feed / decode / peak-RSS logic as its own copies): synthetic
// prompts, chunked prefill and decode on one sequence's state, peak resident memory, medians.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace jamba::app::bench {

using Clock = std::chrono::steady_clock;
inline double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// n token ids in [3, V): a fixed pseudo-random pattern per salt (no special ids 0..2).
std::vector<int32_t> synthetic_tokens(int64_t n, int64_t V, int64_t salt);

// Feeds `toks` through `st` in forwards of at most `chunk` tokens (logits of the last position
// only, in the last forward); returns seconds.
double feed(const Model& m, SequenceState& st, const std::vector<int32_t>& toks, int64_t chunk);

// G single-token forwards on `st` (each with the last position's logits, as generation does),
// the tokens synthetic; returns seconds.
double decode(const Model& m, SequenceState& st, int64_t G, int64_t salt = 0);

// Peak resident memory of this process since the last reset_peak_rss() (Linux VmHWM; the reset
// writes "5" to /proc/self/clear_refs, which sets the peak to the current resident size).
// Returns bytes, 0 where /proc does not say.
void reset_peak_rss();
int64_t peak_rss_bytes();
int64_t current_rss_bytes();
// Gives the heap's free memory back to the kernel (malloc_trim): main.cpp keeps freed blocks
// for reuse, so without this the memory of a previous measurement would count in the next one.
void release_free_heap();

// The machine's limits, measured now with the current thread count.
struct Peaks {
  double gemm_gflops = 0, bw_gbs = 0, bw_lo = 0, bw_hi = 0;
  double bw_bytes = 0;  // bytes of one read
};
// The GEMM peak is the rate of the kernel the model's matrices run, on a prefill chunk's product
// (M = 512, N = K = 2048): OpenBLAS sgemm for f32, cpu::gemm_bf16 with bf16 activations
// (oneDNN when built in) for bf16, the int8 / q4 kernels for those. The read bandwidth is the
// median of 7 reads of an array as large as the model's matrices (at least 256 MiB, beyond the
// caches; at most 2 GiB), after one untimed pass: a decode token reads that kind of stream.
Peaks measure_peaks(WeightType wt, bool a16, double model_bytes);

struct Stat {
  double median = 0, lo = 0, hi = 0;
};
Stat stats(std::vector<double> v);  // v non-empty; median of an even count: mean of the middle two

// Token counts of a CLI list: "4096", "4k" / "4K" (x1024), "1m" / "1M" (x1048576); throws
// naming `option`, the expected form and the value for anything else, zero or above `max`.
int64_t parse_token_count(const std::string& text, const std::string& option, int64_t max);
// Each of `texts`, sorted ascending, duplicates removed.
std::vector<int64_t> parse_token_counts(const std::vector<std::string>& texts,
                                        const std::string& option, int64_t max);

// One-minute load average (/proc/loadavg), or -1.
double load_average();
// User + system CPU seconds of this process so far (all threads; getrusage).
double process_cpu_seconds();

}  // namespace jamba::app::bench
