#include "train/data.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace jamba {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open corpus file");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": error reading corpus file");
  return ss.str();
}

}  // namespace

TokenDataset TokenDataset::from_text(const std::vector<std::string>& paths, const Tokenizer& tok,
                                     const CorpusOptions& o, int64_t model_vocab) {
  JAMBA_CHECK(!paths.empty(), "[train] no corpus file given");
  JAMBA_CHECK(o.seq_len >= 2, "[train] --seq-len must be at least 2, got ", o.seq_len);
  JAMBA_CHECK(o.holdout_fraction > 0 && o.holdout_fraction < 0.5,
              "[train] --holdout must be in (0, 0.5), got ", o.holdout_fraction);
  TokenDataset d;
  d.T_ = o.seq_len;
  const int32_t eos = tok.eos_ids().empty() ? -1 : tok.eos_ids().front();
  for (const std::string& path : paths) {
    const std::string text = read_text(path);
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + pos, end - pos);
      pos = end + 1;
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      // Corpus text is data: special-token strings in it are not parsed as control tokens.
      const std::vector<int32_t> ids = tok.encode(line, false, false);
      d.tokens_.insert(d.tokens_.end(), ids.begin(), ids.end());
      if (o.eos_between_lines && eos >= 0) d.tokens_.push_back(eos);
    }
  }
  for (int32_t t : d.tokens_)
    if (t < 0 || t >= model_vocab)
      fail("[train] corpus token id ", t, " is outside the model's vocabulary [0, ", model_vocab,
           "): the tokenizer (vocab ", tok.vocab_size(), ") does not match the model");
  const int64_t n = int64_t(d.tokens_.size());
  const int64_t heldout = std::max<int64_t>(d.T_, int64_t(double(n) * o.holdout_fraction));
  d.heldout_begin_ = n - heldout;
  d.n_train_ = d.heldout_begin_ / d.T_;
  d.n_heldout_ = heldout / d.T_;
  if (d.n_train_ < 1 || d.n_heldout_ < 1)
    fail("[train] corpus too short: ", n, " tokens give ", d.n_train_, " training and ",
         d.n_heldout_, " held-out windows of ", d.T_, " tokens (need at least one of each)");
  // The order of the windows depends on the stream, T and the training/held-out split.
  uint64_t h = 0xcbf29ce484222325ull ^ uint64_t(d.T_) ^ (uint64_t(d.n_train_) << 32);
  for (int32_t t : d.tokens_) h = (h ^ uint64_t(uint32_t(t))) * 0x100000001b3ull;
  d.fingerprint_ = h;
  return d;
}

int64_t TokenDataset::window_of_sample(uint64_t seed, int64_t sample) const {
  const int64_t epoch = sample / n_train_;
  if (epoch != cached_epoch_ || seed != cached_seed_) {
    // Fisher-Yates with a splitmix64 stream seeded by (seed, epoch): the same on every platform.
    perm_.resize(size_t(n_train_));
    for (int64_t i = 0; i < n_train_; ++i) perm_[size_t(i)] = i;
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1;
    for (int64_t i = n_train_ - 1; i > 0; --i) {
      const int64_t j = int64_t(splitmix64(st) % uint64_t(i + 1));
      std::swap(perm_[size_t(i)], perm_[size_t(j)]);
    }
    cached_epoch_ = epoch;
    cached_seed_ = seed;
  }
  return perm_[size_t(sample % n_train_)];
}

TrainBatch TokenDataset::window_batch(const std::vector<int64_t>& starts) const {
  TrainBatch b;
  b.B = int64_t(starts.size());
  b.T = T_;
  b.ids.reserve(size_t(b.B * T_));
  for (int64_t s : starts) b.ids.insert(b.ids.end(), tokens_.begin() + s, tokens_.begin() + s + T_);
  b.labels.assign(b.ids.begin(), b.ids.end());
  return b;
}

TrainBatch TokenDataset::train_rows(uint64_t seed, int64_t first, int64_t row0, int64_t n) const {
  std::vector<int64_t> starts;
  for (int64_t r = row0; r < row0 + n; ++r) starts.push_back(window_of_sample(seed, first + r) * T_);
  return window_batch(starts);
}

TrainBatch TokenDataset::heldout_rows(int64_t w0, int64_t n) const {
  JAMBA_CHECK(w0 >= 0 && w0 + n <= n_heldout_, "[train] held-out windows [", w0, ", ", w0 + n,
              ") of ", n_heldout_);
  std::vector<int64_t> starts;
  for (int64_t w = w0; w < w0 + n; ++w) starts.push_back(heldout_begin_ + w * T_);
  return window_batch(starts);
}

}  // namespace jamba
