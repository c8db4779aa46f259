// Process-wide allocator setting.
#pragma once
#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

namespace jamba {

// A forward (or a training step) allocates and frees the same large activation buffers again
// and again. glibc gives blocks above its mmap threshold back to the kernel at once, so every
// forward paid page faults and kernel zeroing for all of them: single-threaded work that was
// ~20% of a 2-thread prefill (moe1b bf16 pp512: 174 -> 243 tokens/s with this set). Raises the
// mmap and trim thresholds to 1 GiB so freed blocks stay in the heap for reuse. Call once, early.
void keep_freed_memory_for_reuse();

// A buffer left uninitialised, for activations whose every element is written before it is
// read (std::vector<float>(n) zeroes them first: memsets that were 6% of a moe1b prefill), and
// 64-byte aligned: a 64-byte vector load that straddles two cache lines costs two (the
// vdpbf16ps decode kernel ran 3x slower from L1 on misaligned rows).
template <class T>
class Buffer {
  static_assert(std::is_trivially_copyable_v<T>, "elements are left uninitialised");

 public:
  Buffer() : n_(0) {}
  explicit Buffer(size_t n) : p_(static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t(64)))), n_(n) {}
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_.get()[i]; }
  T operator[](size_t i) const { return p_.get()[i]; }
  std::vector<T> to_vector() const { return std::vector<T>(p_.get(), p_.get() + n_); }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<T, Free> p_;
  size_t n_;
};
using Scratch = Buffer<float>;

namespace detail {
// 64-byte aligned; from kHugeBytes on, 2 MiB aligned and advised for transparent huge pages
// (MADV_HUGEPAGE: this kernel's THP mode is often `madvise`), so a decode step streaming the
// weights walks 2 MiB pages rather than 4 KiB ones.
inline constexpr size_t kHugeBytes = size_t(4) << 20;
void* alloc_aligned(size_t bytes);
void free_aligned(void* p, size_t bytes);
}  // namespace detail

// std::vector storage on 64-byte boundaries (weights converted or quantized at load: their rows
// then start on cache lines, as the rows of a checkpoint read into memory do), on huge pages
// when large (detail::alloc_aligned).
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(detail::alloc_aligned(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { detail::free_aligned(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
};
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace jamba
