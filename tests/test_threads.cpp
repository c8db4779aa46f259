// ThreadTuner (core/threads.h): which thread count it runs, fed made-up step times; and
// ScopedThreads' effect on the OpenMP thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <functional>

#include "core/threads.h"

namespace jamba {
namespace {

// Restores the process's thread count after a test that changes it.
struct KeepThreads {
  int saved = num_threads();
  ~KeepThreads() { set_num_threads(saved); }
};

// Runs `steps` steps of one kind with step time cost(threads); returns how many ran at each
// count (index = threads).
std::vector<int> drive(ThreadTuner& t, int64_t key, int steps,
                       const std::function<double(int)>& cost) {
  std::vector<int> ran(size_t(num_threads() + 1), 0);
  for (int i = 0; i < steps; ++i) {
    const int th = t.choose(key);
    EXPECT_GE(th, 1);
    EXPECT_LE(th, num_threads());
    ++ran[size_t(th)];
    t.record(key, th, cost(th));
  }
  return ran;
}

TEST(ThreadTuner, TimesEveryCountThenRunsTheFastest) {
  KeepThreads keep;
  set_num_threads(4);  // candidates 4, 2, 1
  ThreadTuner t;
  // Quiet machine: 4 threads fastest.
  auto ran = drive(t, 1, 600, [](int th) { return th == 4 ? 1.0 : th == 2 ? 1.6 : 2.9; });
  EXPECT_GT(ran[4], 570);
  EXPECT_GE(ran[2], 1);
  EXPECT_GE(ran[1], 1);
  EXPECT_DOUBLE_EQ(t.average(1, 4), 1.0);
  // Losing probes back off: after the first ~100 steps at most one per kProbeMax.
  auto later = drive(t, 1, 1024, [](int th) { return th == 4 ? 1.0 : th == 2 ? 1.6 : 2.9; });
  EXPECT_LE(later[2] + later[1], 1024 / ThreadTuner::kProbeMax + 1);
}

TEST(ThreadTuner, FollowsTheLoadBothWays) {
  KeepThreads keep;
  set_num_threads(2);  // candidates 2, 1
  ThreadTuner t;
  drive(t, 7, 300, [](int th) { return th == 2 ? 0.040 : 0.072; });
  EXPECT_EQ(t.choose(7), 2);
  t.record(7, 2, 0.040);
  // Another process takes a core: two threads stall at every barrier.
  auto busy = drive(t, 7, 300, [](int th) { return th == 2 ? 0.150 : 0.075; });
  EXPECT_GT(busy[1], 280) << "should move to 1 thread within a few steps";
  // The load goes away: a probe at 2 threads finds it faster again within kProbeMax steps.
  auto quiet = drive(t, 7, 600, [](int th) { return th == 2 ? 0.040 : 0.072; });
  EXPECT_GT(quiet[2], 600 - ThreadTuner::kProbeMax - 16);
  // Kinds (batch sizes) are timed separately: a batch where 1 thread wins keeps its own choice.
  drive(t, 8, 100, [](int th) { return th == 2 ? 0.9 : 0.5; });
  EXPECT_EQ(t.choose(8), 1);
}

TEST(ThreadTuner, OneThreadHasNothingToTune) {
  KeepThreads keep;
  set_num_threads(1);
  ThreadTuner t;
  auto ran = drive(t, 1, 50, [](int) { return 1.0; });
  EXPECT_EQ(ran[1], 50);
}

TEST(ScopedThreads, SetsAndRestoresTheOpenMPCount) {
  KeepThreads keep;
  set_num_threads(2);
  {
    ScopedThreads s(1);
    EXPECT_EQ(omp_get_max_threads(), 1);
    int in_region = 0;
#pragma omp parallel
    {
#pragma omp single
      in_region = omp_get_num_threads();
    }
    EXPECT_EQ(in_region, 1);
  }
  EXPECT_EQ(omp_get_max_threads(), 2);
  {
    ScopedThreads all(0);  // 0 = all: nothing changes
    EXPECT_EQ(omp_get_max_threads(), 2);
  }
  EXPECT_EQ(num_threads(), 2);
}

}  // namespace
}  // namespace jamba
