// libFuzzer target: the token-id input files of `jamba forward --input` (read_token_batch: a
// safetensors file with input_ids [B, T] and an optional attention_mask), then the forward the
// command runs, on a tiny random model (tiny_model.h) when the batch is small.
//
// Properties of a batch that reads: B, T >= 1 and B * T ids, a mask that is empty or B * T values
// in {0, 1} with padding only on the left; the forward either rejects the ids (outside the
// vocabulary) with an Error or gives finite logits at every real token, and a chunked prefill
// (--chunk 3) gives the same logits as one prefill (within float32 reassociation).
#include <cmath>

#include "core/error.h"
#include "fuzz_util.h"
#include "runtime/forward_tool.h"
#include "tiny_model.h"

using namespace jamba;

namespace {

struct Fixture {
  fuzz::ScratchDir dir{"token_input"};
  Model model{fuzz::make_tiny_model(dir.file("model"))};
};

// tests/tolerances.h kReassociation (5e-5) doubled: the tiny model's logits are O(1).
constexpr float kChunkTol = 1e-4f;
constexpr int64_t kMaxForwardTokens = 256;  // keeps an execution in milliseconds

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  const std::string path = fx.dir.file("input.safetensors");
  fuzz::write_file(path, fuzz::as_text(data, size));
  TokenBatch in;
  try {
    in = read_token_batch(path);
  } catch (const Error&) {
    return 0;
  }
  const int64_t B = in.B, T = in.T;
  FUZZ_CHECK(B >= 1 && T >= 1 && int64_t(in.ids.size()) == B * T, in.ids.size(), " ids for [", B,
             ",", T, "]");
  FUZZ_CHECK(in.mask.empty() || int64_t(in.mask.size()) == B * T, "mask of ", in.mask.size());
  for (int64_t b = 0; b < B && !in.mask.empty(); ++b)
    for (int64_t t = 1; t < T; ++t) {
      const uint8_t m0 = in.mask[size_t(b * T + t - 1)], m1 = in.mask[size_t(b * T + t)];
      FUZZ_CHECK(m0 <= 1 && m1 <= 1 && m0 <= m1, "mask row ", b, " is not left padding");
    }
  for (int32_t id : in.ids) FUZZ_CHECK(id >= 0, "negative id ", id);

  if (B * T > kMaxForwardTokens) return 0;
  const int64_t V = fx.model.config().vocab_size;
  bool in_vocab = true;
  for (int32_t id : in.ids) in_vocab = in_vocab && id < V;
  FullForwardResult one, chunked;
  try {
    one = full_forward(fx.model, in, false);
    FUZZ_CHECK(in_vocab, "full_forward accepted an id outside the vocabulary");
  } catch (const Error&) {
    FUZZ_CHECK(!in_vocab, "full_forward threw for ids inside the vocabulary");
    return 0;
  }
  chunked = full_forward(fx.model, in, false, 3);
  FUZZ_CHECK(int64_t(one.logits.size()) == B * T * V && chunked.logits.size() == one.logits.size(),
             "logits sizes ", one.logits.size(), " / ", chunked.logits.size(), " for [", B, ",", T,
             "]");
  for (int64_t i = 0; i < B * T; ++i) {
    if (!in.mask.empty() && in.mask[size_t(i)] == 0) continue;  // padding: not compared
    for (int64_t v = 0; v < V; ++v) {
      const float a = one.logits[size_t(i * V + v)], c = chunked.logits[size_t(i * V + v)];
      FUZZ_CHECK(std::isfinite(a), "non-finite logit at row ", i, " token ", v);
      FUZZ_CHECK(std::fabs(a - c) <= kChunkTol, "chunked prefill differs at row ", i, " token ", v,
                 ": ", a, " vs ", c);
    }
  }
  return 0;
}
