#include "core/threads.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
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
