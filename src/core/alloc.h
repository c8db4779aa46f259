// Process-wide allocator setting.
#pragma once

namespace jamba {

// A forward (or a training step) allocates and frees the same large activation buffers again
// and again. glibc gives blocks above its mmap threshold back to the kernel at once, so every
// forward paid page faults and kernel zeroing for all of them: single-threaded work that was
// ~20% of a 2-thread prefill (moe1b bf16 pp512: 174 -> 243 tokens/s with this set). Raises the
// mmap and trim thresholds to 1 GiB so freed blocks stay in the heap for reuse. Call once, early.
void keep_freed_memory_for_reuse();

}  // namespace jamba
