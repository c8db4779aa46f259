// Process-wide allocator setting.
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

namespace jamba {

// A forward (or a training step) allocates and frees the same large activation buffers again
// and again. glibc gives blocks above its mmap threshold back to the kernel at once, so every
// forward paid page faults and kernel zeroing for all of them: single-threaded work that was
// ~20% of a 2-thread prefill (moe1b bf16 pp512: 174 -> 243 tokens/s with this set). Raises the
// mmap and trim thresholds to 1 GiB so freed blocks stay in the heap for reuse. Call once, early.
void keep_freed_memory_for_reuse();

// A float buffer left uninitialised, for activations whose every element is written before it is
// read (std::vector<float>(n) zeroes them first: memsets that were 6% of a moe1b prefill).
class Scratch {
 public:
  explicit Scratch(size_t n) : p_(new float[n]), n_(n) {}
  float* data() { return p_.get(); }
  const float* data() const { return p_.get(); }
  size_t size() const { return n_; }
  float& operator[](size_t i) { return p_[i]; }
  float operator[](size_t i) const { return p_[i]; }
  std::vector<float> to_vector() const { return std::vector<float>(p_.get(), p_.get() + n_); }

 private:
  std::unique_ptr<float[]> p_;
  size_t n_;
};

}  // namespace jamba
