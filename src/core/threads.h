// Thread count for OpenMP kernels and the BLAS library, set once per process/command.
#pragma once

namespace jamba {

void set_num_threads(int n);  // n <= 0: all hardware threads
int num_threads();

}  // namespace jamba
