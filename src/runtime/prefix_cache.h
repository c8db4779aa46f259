// Prefix reuse for hybrid state: snapshots of whole sequence states (KV + conv + SSM) keyed by
// the tokens they consumed. A new prompt resumes from the longest stored snapshot whose tokens
// are a prefix of it. Recurrent state cannot be rolled back, so snapshots are the only way back.
//
// Layout: a radix tree over token ids (each edge a run of tokens, children keyed by their first
// token); a snapshot hangs on the node where its tokens end. lookup() walks the prompt down the
// tree once (O(prompt length), whatever the number of snapshots) and keeps the deepest usable
// snapshot on the way. Memory is bounded by max_bytes with least-recently-used eviction; nodes
// left without a snapshot or children are pruned.
#pragma once
#include <cstdint>
#include <list>
#include <map>
#include <memory>
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

struct PrefixCacheStats {
  uint64_t lookups = 0, hits = 0;  // hits: lookups that found a snapshot
  uint64_t tokens_reused = 0;      // sum of the hit snapshots' token counts
  uint64_t inserts = 0, evictions = 0;
};

class PrefixCache {
 public:
  explicit PrefixCache(size_t max_bytes = size_t(1) << 30);
  ~PrefixCache();
  PrefixCache(PrefixCache&&) noexcept;
  PrefixCache& operator=(PrefixCache&&) noexcept;

  // Longest snapshot whose tokens are a prefix of `prompt` (null if none); one covering the whole
  // prompt only if it has last_logits. Marks it recently used. The pointer stays valid until the
  // next insert() or clear().
  const Snapshot* lookup(std::span<const int32_t> prompt);
  // Stores a snapshot (replacing one with identical tokens); evicts least recently used entries
  // beyond the byte budget. A snapshot larger than the whole budget is not kept.
  void insert(Snapshot snap);
  void clear();
  size_t size() const { return lru_.size(); }
  size_t bytes() const { return bytes_; }
  size_t max_bytes() const { return max_bytes_; }
  const PrefixCacheStats& stats() const { return stats_; }

 private:
  struct Node;
  void evict_one();
  void prune(Node* n);

  size_t max_bytes_;
  size_t bytes_ = 0;
  std::unique_ptr<Node> root_;
  std::list<Node*> lru_;  // nodes holding a snapshot, front = most recently used
  PrefixCacheStats stats_;
};

}  // namespace jamba
