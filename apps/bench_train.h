// `jamba bench --train`: training throughput (forward + backward + clipped AdamW step) in tokens/s
// and model FLOP utilisation against the GEMM peak measured in the same run.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace jamba::app {

struct TrainBenchArgs {
  std::string model;                 // checkpoint directory, or empty: a random `config`
  std::string config;                // preset name or config.json when model is empty
  std::vector<int> threads{0};
  int reps = 3;
  int64_t batch = 8, seq = 256;
  std::string jsonl;
  std::function<double()> gemm_peak_gflops;  // measured with the current thread count
};

int run_train_bench(const TrainBenchArgs& a);

}  // namespace jamba::app
