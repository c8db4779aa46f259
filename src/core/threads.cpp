#include "core/threads.h"

#include <cblas.h>
#include <omp.h>

#include <thread>

namespace jamba {

namespace {
int g_threads = 0;
}

void set_num_threads(int n) {
  if (n <= 0) n = int(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

}  // namespace jamba
