#include "core/threads.h"

#include <cblas.h>
#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <thread>

namespace jamba {

namespace {
int g_threads = 0;

void set_active(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = int(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads = n;
  set_active(n);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

const char* blas_core() { return openblas_get_corename(); }

const char* blas_core_override() {
  // OpenBLAS's x86 cores without AVX2: a fallback on any CPU that has it.
  static const char* const kOld[] = {"Prescott",  "Core2",   "Penryn",       "Dunnington",
                                     "Nehalem",   "Atom",    "Katmai",       "Coppermine",
                                     "Northwood", "Banias",  "Barcelona",    "Opteron",
                                     "Opteron_SSE3", "Athlon", "Bobcat",     "Sandybridge",
                                     "Unknown"};
  const char* core = openblas_get_corename();
  if (!core || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return nullptr;
  if (std::none_of(std::begin(kOld), std::end(kOld),
                   [&](const char* c) { return std::strcmp(c, core) == 0; }))
    return nullptr;
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512 ? "SkylakeX" : "Haswell";
}

void restart_with_runtime_settings(char** argv) {
  if (std::getenv("JAMBA_NO_REEXEC")) return;
  bool restart = false;
  if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) {
    ::setenv("GOMP_SPINCOUNT", "5000", 1);
    restart = true;
  }
  if (!std::getenv("OPENBLAS_CORETYPE"))
    if (const char* core = blas_core_override()) {
      ::setenv("OPENBLAS_CORETYPE", core, 1);
      restart = true;
    }
  if (!restart) return;
  ::setenv("JAMBA_NO_REEXEC", "1", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: carry on with the defaults
}

ScopedThreads::ScopedThreads(int n) {
  const int all = num_threads();
  if (n > 0 && n < all) {
    set_active(n);
    changed_ = true;
  }
}

ScopedThreads::~ScopedThreads() {
  if (changed_) set_active(num_threads());
}

ThreadTuner::Kind& ThreadTuner::kind(int64_t key) {
  Kind& k = kinds_[key];
  if (k.arms.empty())
    for (int t = num_threads(); t >= 1; t = t > 1 ? t / 2 : 0) k.arms.push_back({t, 0.0});
  return k;
}

int ThreadTuner::choose(int64_t key) {
  Kind& k = kind(key);
  for (const Arm& a : k.arms)  // time every candidate once first
    if (a.avg == 0) return a.threads;
  k.probing = k.arms.size() > 1 && k.steps >= k.next_probe;
  if (k.probing) {
    k.probe = (k.probe + 1) % k.arms.size();
    if (k.probe == k.best) k.probe = (k.probe + 1) % k.arms.size();
    return k.arms[k.probe].threads;
  }
  return k.arms[k.best].threads;
}

void ThreadTuner::record(int64_t key, int threads, double seconds) {
  Kind& k = kind(key);
  ++k.steps;
  for (size_t i = 0; i < k.arms.size(); ++i) {
    Arm& a = k.arms[i];
    if (a.threads != threads) continue;
    // The arm that runs is averaged; another one's time is old news by its next timing (the load
    // may have changed since), so that timing replaces it.
    a.avg = (i == k.best && a.avg > 0) ? kKeep * a.avg + (1 - kKeep) * seconds : seconds;
  }
  const size_t before = k.best;
  for (size_t i = 0; i < k.arms.size(); ++i)
    if (k.arms[i].avg > 0 && (k.arms[k.best].avg == 0 || k.arms[i].avg < k.arms[k.best].avg))
      k.best = i;
  if (k.probing) {
    k.probing = false;
    k.interval = k.best == before ? std::min(2 * k.interval, kProbeMax) : kProbeEvery;
    k.next_probe = k.steps + k.interval;
  }
}

double ThreadTuner::average(int64_t key, int threads) const {
  auto it = kinds_.find(key);
  if (it == kinds_.end()) return 0;
  for (const Arm& a : it->second.arms)
    if (a.threads == threads) return a.avg;
  return 0;
}

}  // namespace jamba
