#include "runtime/prefix_cache.h"

#include <algorithm>

namespace jamba {

size_t Snapshot::bytes() const {
  return tokens.size() * sizeof(int32_t) + state.bytes() + last_logits.size() * sizeof(float);
}

struct PrefixCache::Node {
  Node* parent = nullptr;
  std::vector<int32_t> edge;  // tokens from the parent to this node
  std::map<int32_t, std::unique_ptr<Node>> children;  // keyed by the child's edge[0]
  std::unique_ptr<Snapshot> snap;
  std::list<Node*>::iterator lru_pos;  // valid while snap is set
};

PrefixCache::PrefixCache(size_t max_bytes) : max_bytes_(max_bytes), root_(new Node) {}
PrefixCache::~PrefixCache() = default;
PrefixCache::PrefixCache(PrefixCache&&) noexcept = default;
PrefixCache& PrefixCache::operator=(PrefixCache&&) noexcept = default;

void PrefixCache::clear() {
  root_ = std::make_unique<Node>();
  lru_.clear();
  bytes_ = 0;
}

const Snapshot* PrefixCache::lookup(std::span<const int32_t> prompt) {
  ++stats_.lookups;
  Node* best = nullptr;
  Node* n = root_.get();
  size_t depth = 0;  // tokens matched so far (n's full key length)
  for (;;) {
    if (n->snap && (depth < prompt.size() || !n->snap->last_logits.empty())) best = n;
    if (depth == prompt.size()) break;
    auto it = n->children.find(prompt[depth]);
    if (it == n->children.end()) break;
    Node* c = it->second.get();
    const size_t len = c->edge.size();
    if (depth + len > prompt.size() ||
        !std::equal(c->edge.begin(), c->edge.end(), prompt.begin() + depth))
      break;  // the prompt ends or diverges inside this edge: no snapshot below is a prefix
    depth += len;
    n = c;
  }
  if (!best) return nullptr;
  ++stats_.hits;
  stats_.tokens_reused += best->snap->tokens.size();
  lru_.splice(lru_.begin(), lru_, best->lru_pos);
  return best->snap.get();
}

void PrefixCache::insert(Snapshot snap) {
  const size_t b = snap.bytes();
  if (b > max_bytes_) return;  // would evict everything and still not fit
  ++stats_.inserts;
  const std::vector<int32_t>& key = snap.tokens;
  Node* n = root_.get();
  size_t depth = 0;
  while (depth < key.size()) {
    auto it = n->children.find(key[depth]);
    if (it == n->children.end()) {
      auto leaf = std::make_unique<Node>();
      leaf->parent = n;
      leaf->edge.assign(key.begin() + depth, key.end());
      Node* raw = leaf.get();
      n->children.emplace(key[depth], std::move(leaf));
      n = raw;
      depth = key.size();
      break;
    }
    Node* c = it->second.get();
    const size_t len = c->edge.size();
    size_t common = 0;
    while (common < len && depth + common < key.size() && c->edge[common] == key[depth + common])
      ++common;
    if (common < len) {  // split c's edge at `common`: n -> mid -> c
      auto mid = std::make_unique<Node>();
      mid->parent = n;
      mid->edge.assign(c->edge.begin(), c->edge.begin() + common);
      std::unique_ptr<Node> c_owned = std::move(it->second);
      c_owned->edge.erase(c_owned->edge.begin(), c_owned->edge.begin() + common);
      c_owned->parent = mid.get();
      const int32_t first = c_owned->edge[0];
      mid->children.emplace(first, std::move(c_owned));
      Node* raw = mid.get();
      it->second = std::move(mid);
      c = raw;
    }
    n = c;
    depth += common;
  }
  if (n->snap) {  // same tokens: replace
    bytes_ -= n->snap->bytes();
    lru_.erase(n->lru_pos);
  }
  n->snap = std::make_unique<Snapshot>(std::move(snap));
  bytes_ += b;
  lru_.push_front(n);
  n->lru_pos = lru_.begin();
  while (bytes_ > max_bytes_ && lru_.size() > 1) evict_one();
}

void PrefixCache::evict_one() {
  Node* victim = lru_.back();
  lru_.pop_back();
  bytes_ -= victim->snap->bytes();
  victim->snap.reset();
  ++stats_.evictions;
  prune(victim);
}

// Removes n and then its ancestors while they hold neither a snapshot nor children.
void PrefixCache::prune(Node* n) {
  while (n != root_.get() && !n->snap && n->children.empty()) {
    Node* parent = n->parent;
    parent->children.erase(n->edge[0]);  // destroys n
    n = parent;
  }
}

}  // namespace jamba
