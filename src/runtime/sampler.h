// Token sampling: one fixed chain over a logits vector, in llama.cpp's order
//   penalties -> (greedy: argmax) -> top-k -> softmax(logits / temperature) -> top-p -> min-p
//   -> renormalise -> draw
// Each step is a free function over a candidate list, so it can be tested on its own.
// Also StopStrings, which cuts streamed text at stop strings.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace jamba {

struct SamplingParams {
  float temperature = 1.0f;         // 0 -> greedy (argmax)
  int top_k = 0;                    // 0 = off
  float top_p = 1.0f;               // in (0, 1]; 1 = off
  float min_p = 0.0f;               // in [0, 1]; 0 = off
  float repetition_penalty = 1.0f;  // > 0; 1 = off (HF/CTRL: logit / rp if > 0, else logit * rp)
  float frequency_penalty = 0.0f;   // logit -= frequency_penalty * count
  float presence_penalty = 0.0f;    // logit -= presence_penalty if count > 0
  int penalty_last_n = 64;          // history window for penalties; -1 = whole history, 0 = off
  uint64_t seed = 0;
};

// Throws Error naming the field and its value.
void validate_sampling_params(const SamplingParams& params);

struct Candidate {
  int32_t id;
  float logit;
  float p;  // probability; valid after softmax()
};

// One candidate per vocabulary entry, candidates[i].id == i, p = 0.
std::vector<Candidate> make_candidates(std::span<const float> logits);
// Repetition / frequency / presence penalties for the ids in the last `penalty_last_n` entries of
// `history`. Ids in history must lie in [0, n_vocab).
void apply_penalties(std::vector<Candidate>& cands, std::span<const int32_t> history,
                     const SamplingParams& params, int32_t n_vocab);
// Highest logit; ties go to the lowest id. Requires a non-empty list.
int32_t argmax(std::span<const Candidate> cands);
// Keeps the k highest logits (ties: lower id first), sorted by descending logit. k <= 0: no-op.
void top_k(std::vector<Candidate>& cands, int k);
// p = softmax(logit / temperature) over the list (temperature > 0). Order is kept.
void softmax(std::vector<Candidate>& cands, float temperature);
// Sorts by descending p and keeps the smallest prefix whose cumulative p >= top_p (at least one).
// top_p >= 1: no-op. Needs p from softmax(); does not renormalise.
void top_p(std::vector<Candidate>& cands, float top_p);
// Drops candidates with p < min_p * max p. min_p <= 0: no-op. Order is kept; no renormalisation.
void min_p(std::vector<Candidate>& cands, float min_p);
// Scales p to sum to 1.
void renormalize(std::vector<Candidate>& cands);
// Draws one id with probability p (p must sum to ~1), using 53 random bits from rng.
int32_t draw(std::span<const Candidate> cands, std::mt19937_64& rng);

class Sampler {
 public:
  explicit Sampler(SamplingParams params);  // validates params
  // `history`: the tokens so far (prompt + generated), used by the penalties.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> cands_;
};

// Cuts streamed text at the first occurrence of any stop string. push() returns the text that is
// safe to emit now: a suffix that could be the beginning of a stop string is held back until it
// is resolved. Once a stop string is hit, the text before it is returned with stopped = true, the
// stop string and everything after it are dropped, and later pushes return nothing.
class StopStrings {
 public:
  struct Result {
    std::string text;
    bool stopped = false;
  };
  explicit StopStrings(std::vector<std::string> stops);  // throws Error on an empty stop string
  Result push(std::string_view chunk);
  std::string flush();  // end of stream: releases held-back text (empty after a stop)
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace jamba
