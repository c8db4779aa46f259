#include "runtime/prefix_cache.h"

#include <algorithm>

namespace jamba {

size_t Snapshot::bytes() const {
  return tokens.size() * sizeof(int32_t) + state.bytes() + last_logits.size() * sizeof(float);
}

const Snapshot* PrefixCache::lookup(std::span<const int32_t> prompt) {
  auto best = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->tokens.size() > prompt.size()) continue;
    // A whole-prompt match is only usable with the logits to sample the next token from.
    if (it->tokens.size() == prompt.size() && it->last_logits.empty()) continue;
    if (best != entries_.end() && it->tokens.size() <= best->tokens.size()) continue;
    if (std::equal(it->tokens.begin(), it->tokens.end(), prompt.begin())) best = it;
  }
  if (best == entries_.end()) return nullptr;
  entries_.splice(entries_.begin(), entries_, best);
  return &entries_.front();
}

void PrefixCache::insert(Snapshot snap) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->tokens == snap.tokens) {
      bytes_ -= it->bytes();
      entries_.erase(it);
      break;
    }
  bytes_ += snap.bytes();
  entries_.push_front(std::move(snap));
  while (bytes_ > max_bytes_ && entries_.size() > 1) {
    bytes_ -= entries_.back().bytes();
    entries_.pop_back();
  }
  if (bytes_ > max_bytes_) clear();  // a single snapshot over budget is not kept
}

}  // namespace jamba
