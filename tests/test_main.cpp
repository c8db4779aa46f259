// The test binary's entry point: the process settings the jamba binary runs with
// (restart_with_runtime_settings: OpenMP spinning, OpenBLAS kernels for this CPU), then GoogleTest.
#include <gtest/gtest.h>

#include "core/threads.h"

int main(int argc, char** argv) {
  jamba::restart_with_runtime_settings(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
