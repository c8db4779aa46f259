// Training data: a text corpus tokenized into one token stream, split into a training part and a
// held-out tail, cut into fixed-length windows. The order of the training windows is a
// permutation per epoch derived from the seed alone, so "where the data is" is a single number
// (samples consumed) and a resumed run sees exactly the batches an uninterrupted one would.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "train/model_grad.h"

namespace jamba {

struct CorpusOptions {
  int64_t seq_len = 256;          // tokens per training row (T)
  double holdout_fraction = 0.02; // tail of the stream kept for the held-out loss
  bool eos_between_lines = true;  // each non-empty line is a document: its tokens, then eos
};

class TokenDataset {
 public:
  // Reads and tokenizes `paths` (UTF-8 text files, in order). Throws naming the file for a
  // missing/unreadable file, a corpus too short for one training and one held-out window, or
  // a token id outside [0, vocab_size) of the model.
  static TokenDataset from_text(const std::vector<std::string>& paths, const Tokenizer& tok,
                                const CorpusOptions& o, int64_t model_vocab);

  int64_t seq_len() const { return T_; }
  int64_t total_tokens() const { return int64_t(tokens_.size()); }
  int64_t train_windows() const { return n_train_; }
  int64_t heldout_windows() const { return n_heldout_; }
  uint64_t fingerprint() const { return fingerprint_; }  // hash of the stream, T and the split

  // Rows [row0, row0 + n) of the training batch made of samples [first, first + rows) in
  // the seeded order (sample s is window perm_{s / W}[s % W] of epoch s / W).
  TrainBatch train_rows(uint64_t seed, int64_t first, int64_t row0, int64_t n) const;
  // Held-out windows [w0, w0 + n) as a batch.
  TrainBatch heldout_rows(int64_t w0, int64_t n) const;

 private:
  TrainBatch window_batch(const std::vector<int64_t>& starts) const;
  int64_t window_of_sample(uint64_t seed, int64_t sample) const;

  std::vector<int32_t> tokens_;
  int64_t T_ = 0, n_train_ = 0, n_heldout_ = 0, heldout_begin_ = 0;
  uint64_t fingerprint_ = 0;
  mutable int64_t cached_epoch_ = -1;
  mutable uint64_t cached_seed_ = 0;
  mutable std::vector<int64_t> perm_;
};

}  // namespace jamba
