// Thread count for OpenMP kernels and the BLAS library, set once per process/command, and the
// tuner that runs a repeated small step (a decode step) on fewer threads when that is faster.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace jamba {

void set_num_threads(int n);  // n <= 0: all hardware threads
int num_threads();            // the count set above: the most any step uses

// For the duration of a scope, parallel regions started by this thread use n threads (n <= 0
// or n >= num_threads(): all of them); the configured count is restored at the end.
class ScopedThreads {
 public:
  explicit ScopedThreads(int n);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  bool changed_ = false;
};

// Chooses the thread count of a step repeated many times (decode steps, keyed by batch size),
// by measuring: each candidate (num_threads(), half of it, ..., 1) is timed, the fastest runs,
// and every kProbeEvery..kProbeMax steps one of the others is timed again. A step of small matrices needs a
// barrier per operation, and a barrier waits for the slowest thread: when another process takes
// a core (a server shares its machine), a thread that lost its core stalls every barrier for a
// scheduler time slice, and fewer threads than cores run several times faster (measured: moe1b
// decode with one core busy, 2 threads 6.6 t/s, 1 thread 13.3; quiet 22.8 and 13.9).
class ThreadTuner {
 public:
  // Steps between two timings of another count: kProbeEvery, doubled after each timing that lost
  // (a probe on a busy machine costs a scheduler time slice) up to kProbeMax.
  static constexpr int64_t kProbeEvery = 16;
  static constexpr int64_t kProbeMax = 256;
  static constexpr double kKeep = 0.75;       // weight of the running average per new timing

  // The count for the next step of this kind (>= 1).
  int choose(int64_t key);
  // The step of this kind ran on `threads` threads in `seconds`.
  void record(int64_t key, int threads, double seconds);
  // The running average time of a kind at a count (0 when not measured yet).
  double average(int64_t key, int threads) const;

 private:
  struct Arm {
    int threads = 0;
    double avg = 0;  // seconds per step; 0 = not measured yet
  };
  struct Kind {
    std::vector<Arm> arms;
    int64_t steps = 0;
    int64_t interval = kProbeEvery;  // steps between probes
    int64_t next_probe = kProbeEvery;
    bool probing = false;  // the step chosen last is a probe
    size_t best = 0;   // index of the fastest arm
    size_t probe = 0;  // the next arm to time again
  };
  Kind& kind(int64_t key);
  std::map<int64_t, Kind> kinds_;
};

}  // namespace jamba
