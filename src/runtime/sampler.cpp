#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "core/error.h"

namespace jamba {

void validate_sampling_params(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    fail("SamplingParams: temperature must be >= 0, got ", p.temperature);
  if (p.top_k < 0) fail("SamplingParams: top_k must be >= 0, got ", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    fail("SamplingParams: top_p must be in (0, 1], got ", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    fail("SamplingParams: min_p must be in [0, 1], got ", p.min_p);
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    fail("SamplingParams: repetition_penalty must be > 0, got ", p.repetition_penalty);
  if (!std::isfinite(p.frequency_penalty))
    fail("SamplingParams: frequency_penalty must be finite, got ", p.frequency_penalty);
  if (!std::isfinite(p.presence_penalty))
    fail("SamplingParams: presence_penalty must be finite, got ", p.presence_penalty);
  if (p.penalty_last_n < -1)
    fail("SamplingParams: penalty_last_n must be >= -1, got ", p.penalty_last_n);
}

std::vector<Candidate> make_candidates(std::span<const float> logits) {
  std::vector<Candidate> c(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {static_cast<int32_t>(i), logits[i], 0.0f};
  return c;
}

void apply_penalties(std::vector<Candidate>& cands, std::span<const int32_t> history,
                     const SamplingParams& params, int32_t n_vocab) {
  if (params.penalty_last_n == 0 || history.empty()) return;
  if (params.repetition_penalty == 1.0f && params.frequency_penalty == 0.0f &&
      params.presence_penalty == 0.0f)
    return;
  const size_t n = params.penalty_last_n < 0
                       ? history.size()
                       : std::min(history.size(), static_cast<size_t>(params.penalty_last_n));
  std::unordered_map<int32_t, int> counts;
  for (const int32_t id : history.subspan(history.size() - n)) {
    if (id < 0 || id >= n_vocab)
      fail("apply_penalties: history token id ", id, " is out of range [0, ", n_vocab, ")");
    ++counts[id];
  }
  for (const auto& [id, count] : counts) {
    Candidate* c = nullptr;
    if (static_cast<size_t>(id) < cands.size() && cands[id].id == id) {
      c = &cands[id];  // identity-indexed list (fresh from make_candidates)
    } else {
      // A plain copy: clang before 16 rejects a lambda capturing a structured binding (which
      // C++20 allows, P1381).
      const int32_t want = id;
      auto it = std::find_if(cands.begin(), cands.end(),
                             [want](const Candidate& x) { return x.id == want; });
      if (it == cands.end()) continue;
      c = &*it;
    }
    float& l = c->logit;
    if (params.repetition_penalty != 1.0f)
      l = l > 0.0f ? l / params.repetition_penalty : l * params.repetition_penalty;
    l -= params.frequency_penalty * static_cast<float>(count) + params.presence_penalty;
  }
}

int32_t argmax(std::span<const Candidate> cands) {
  if (cands.empty()) fail("argmax: empty candidate list");
  const Candidate* best = &cands[0];
  for (const Candidate& c : cands)
    if (c.logit > best->logit || (c.logit == best->logit && c.id < best->id)) best = &c;
  return best->id;
}

namespace {
bool by_logit_desc(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}
bool by_p_desc(const Candidate& a, const Candidate& b) {
  return a.p > b.p || (a.p == b.p && a.id < b.id);
}
// Puts the first k elements of the order `less` at the front, sorted: O(n + k log k).
template <typename Less>
void sort_prefix(std::vector<Candidate>& c, size_t k, Less less) {
  if (k < c.size()) std::nth_element(c.begin(), c.begin() + k, c.end(), less);
  std::sort(c.begin(), c.begin() + k, less);
}
}  // namespace

void top_k(std::vector<Candidate>& cands, int k) {
  if (k <= 0) return;
  const size_t kk = std::min(cands.size(), static_cast<size_t>(k));
  sort_prefix(cands, kk, by_logit_desc);
  cands.resize(kk);
}

void softmax(std::vector<Candidate>& cands, float temperature) {
  if (cands.empty()) fail("softmax: empty candidate list");
  if (!(temperature > 0.0f)) fail("softmax: temperature must be > 0, got ", temperature);
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : cands) max_logit = std::max(max_logit, c.logit);
  if (!std::isfinite(max_logit))
    fail("softmax: no finite logit among ", cands.size(), " candidates");
  double sum = 0.0;
  for (Candidate& c : cands) {
    c.p = std::exp((c.logit - max_logit) / temperature);
    sum += c.p;
  }
  for (Candidate& c : cands) c.p = static_cast<float>(c.p / sum);
}

void top_p(std::vector<Candidate>& cands, float top_p) {
  if (top_p >= 1.0f || cands.empty()) return;
  // The nucleus is usually small: sort a growing prefix instead of the whole vocabulary.
  for (size_t k = std::min<size_t>(cands.size(), 128);; k = std::min(cands.size(), k * 8)) {
    sort_prefix(cands, k, by_p_desc);
    double cum = 0.0;
    for (size_t i = 0; i < k; ++i) {
      cum += cands[i].p;
      if (cum >= top_p) {
        cands.resize(i + 1);
        return;
      }
    }
    if (k == cands.size()) return;  // rounding left the total below top_p: keep everything
  }
}

void min_p(std::vector<Candidate>& cands, float min_p) {
  if (min_p <= 0.0f || cands.empty()) return;
  float p_max = 0.0f;
  for (const Candidate& c : cands) p_max = std::max(p_max, c.p);
  const float threshold = min_p * p_max;
  std::erase_if(cands, [&](const Candidate& c) { return c.p < threshold; });
}

void renormalize(std::vector<Candidate>& cands) {
  double sum = 0.0;
  for (const Candidate& c : cands) sum += c.p;
  if (!(sum > 0.0)) fail("renormalize: probabilities sum to ", sum);
  for (Candidate& c : cands) c.p = static_cast<float>(c.p / sum);
}

int32_t draw(std::span<const Candidate> cands, std::mt19937_64& rng) {
  if (cands.empty()) fail("draw: empty candidate list");
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;  // [0, 1), same on every platform
  double cum = 0.0;
  for (const Candidate& c : cands) {
    cum += c.p;
    if (u < cum) return c.id;
  }
  // Rounding left u above the total: the last candidate with p > 0.
  for (size_t i = cands.size(); i-- > 0;)
    if (cands[i].p > 0.0f) return cands[i].id;
  return cands.back().id;
}

Sampler::Sampler(SamplingParams params) : params_(params), rng_(params.seed) {
  validate_sampling_params(params_);
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  if (logits.empty()) fail("Sampler::sample: empty logits");
  for (size_t i = 0; i < logits.size(); ++i)
    if (std::isnan(logits[i])) fail("Sampler::sample: logit of token ", i, " is NaN");
  cands_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) cands_[i] = {static_cast<int32_t>(i), logits[i], 0.0f};
  apply_penalties(cands_, history, params_, static_cast<int32_t>(logits.size()));
  if (params_.temperature == 0.0f || params_.top_k == 1) return argmax(cands_);
  top_k(cands_, params_.top_k);
  softmax(cands_, params_.temperature);
  top_p(cands_, params_.top_p);
  min_p(cands_, params_.min_p);
  renormalize(cands_);
  return draw(cands_, rng_);
}

// ---------------------------------------------------------------------------------------------

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (size_t i = 0; i < stops_.size(); ++i)
    if (stops_[i].empty()) fail("StopStrings: stop string ", i, " is empty");
}

StopStrings::Result StopStrings::push(std::string_view chunk) {
  if (stopped_) return {{}, true};
  pending_ += chunk;
  size_t hit = std::string::npos;
  for (const std::string& s : stops_) hit = std::min(hit, pending_.find(s));
  if (hit != std::string::npos) {
    stopped_ = true;
    Result r{pending_.substr(0, hit), true};
    pending_.clear();
    return r;
  }
  // Hold back the longest suffix of pending_ that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  Result r{pending_.substr(0, pending_.size() - hold), false};
  pending_.erase(0, pending_.size() - hold);
  return r;
}

std::string StopStrings::flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace jamba
