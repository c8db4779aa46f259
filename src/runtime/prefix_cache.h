// Prefix reuse for hybrid state: snapshots of whole sequence states (KV + conv + SSM) keyed by
// the tokens they consumed. A new prompt resumes from the longest stored snapshot whose tokens
// are a prefix of it. Recurrent state cannot be rolled back, so snapshots are the only way back.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <vector>

#include "model/state.h"

namespace jamba {

struct Snapshot {
  std::vector<int32_t> tokens;     // tokens consumed by `state`
  SequenceState state;
  std::vector<float> last_logits;  // logits after the last token (so a full match can sample)
  size_t bytes() const;
};

class PrefixCache {
 public:
  explicit PrefixCache(size_t max_bytes = size_t(1) << 30) : max_bytes_(max_bytes) {}

  // Longest snapshot whose tokens are a prefix of `prompt` (null if none); one covering the whole
  // prompt only if it has last_logits. Marks it recently used.
  const Snapshot* lookup(std::span<const int32_t> prompt);
  // Stores a snapshot (replacing one with identical tokens); evicts least recently used entries
  // beyond the byte budget.
  void insert(Snapshot snap);
  void clear() { entries_.clear(); bytes_ = 0; }
  size_t size() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  size_t max_bytes() const { return max_bytes_; }

 private:
  size_t max_bytes_;
  size_t bytes_ = 0;
  std::list<Snapshot> entries_;  // front = most recently used
};

}  // namespace jamba
