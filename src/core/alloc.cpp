#include "core/alloc.h"

#include <malloc.h>
#include <sys/mman.h>

namespace jamba {

namespace detail {

constexpr size_t kHugePage = size_t(2) << 20;

void* alloc_aligned(size_t bytes) {
  if (bytes < kHugeBytes) return ::operator new(bytes, std::align_val_t(64));
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = ::operator new(rounded, std::align_val_t(kHugePage));
  ::madvise(p, rounded, MADV_HUGEPAGE);  // a hint; without THP the memory works the same
  return p;
}

void free_aligned(void* p, size_t bytes) {
  if (bytes < kHugeBytes)
    ::operator delete(p, std::align_val_t(64));
  else
    ::operator delete(p, std::align_val_t(kHugePage));
}

}  // namespace detail

void keep_freed_memory_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace jamba
