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

// Settings the OpenMP runtime and OpenBLAS read once, when the process starts. Unless the user
// chose them (or JAMBA_NO_REEXEC is set), sets them and restarts the process once
// (/proc/self/exe with the same argv; on failure it carries on with the defaults). Call first
// thing in main.
// - GOMP_SPINCOUNT=5000: OpenMP workers spin at barriers for a long time by default (300000,
//   ~4 ms at ~13 ns a pause here). On a machine shared with other work, the spinning worker
//   keeps its core while the thread it waits for is descheduled, and every parallel region then
//   costs a scheduler time slice (measured: decode 20-50x slower under load; ThreadTuner below
//   then also drops to fewer threads). Too short a spin puts workers to sleep between the
//   regions of one decode step (moe1b decode, 2 threads: spin 1000 21-24 t/s, 5000 26-26.5,
//   20000 22-27; the demo model with one core busy: 1000 1140-1480, 5000 1000-1120, 20000
//   520-1040): a spin of ~66 us before sleeping.
// - OPENBLAS_CORETYPE when blas_core_override() names one.
void restart_with_runtime_settings(char** argv);

// The kernels OpenBLAS chose when it loaded (its core name, e.g. "SkylakeX"; `jamba bench`
// prints it).
const char* blas_core();
// OpenBLAS (DYNAMIC_ARCH) picks its kernels from the CPU model when the library loads; 0.3.21
// (Debian 12) does not know newer models (family 6 model 207 among them) and falls back to its
// SSE3 "Prescott" kernels: on such a host f32 GEMM ran 4.7x slower than with its AVX-512 ones
// (2 threads, 512 x 2560 x 2560: 63 vs 296 GFLOP/s). Returns the OPENBLAS_CORETYPE value that
// selects the kernels this CPU can run ("SkylakeX" with AVX-512 F/BW/DQ/VL, "Haswell" with AVX2
// + FMA) when the library chose a core without AVX on a CPU with AVX2 + FMA; else nullptr.
const char* blas_core_override();

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
