#include "train/lora_merge.h"

#include <vector>

#include "core/error.h"
#include "train/ops.h"

namespace jamba {

void merge_lora_into(ParamStore& P, const LoraWeights& lora) {
  const int64_t r = lora.config.rank;
  const float scale = lora.config.scale();
  JAMBA_CHECK(lora.A.size() == lora.modules.size() && lora.B.size() == lora.modules.size(),
              "[merge_lora] ", lora.modules.size(), " modules but ", lora.A.size(), " A and ",
              lora.B.size(), " B tensors");
  // Validate every module before changing any weight.
  std::vector<size_t> idx;
  for (size_t i = 0; i < lora.modules.size(); ++i) {
    const LoraModule& m = lora.modules[i];
    const std::string name = m.name + ".weight";
    if (!P.has(name)) fail("[merge_lora] the model has no weight '", name, "' for the adapter");
    const size_t p = P.find(name);
    const std::vector<int64_t> want{m.out, m.in};
    if (P.specs[p].shape != want)
      fail("[merge_lora] weight '", name, "' is ", shape_str(P.specs[p].shape),
           ", the adapter is for ", shape_str(want));
    JAMBA_CHECK(lora.A[i].size() == size_t(r * m.in) && lora.B[i].size() == size_t(m.out * r),
                "[merge_lora] ", m.name, ": A has ", lora.A[i].size(), " values (expected ",
                r * m.in, "), B ", lora.B[i].size(), " (expected ", m.out * r, ")");
    idx.push_back(p);
  }
  for (size_t i = 0; i < lora.modules.size(); ++i) {
    const LoraModule& m = lora.modules[i];
    // W [out, in] += scale * B [out, r] @ A [r, in]
    matmul(false, false, m.out, m.in, r, lora.B[i].data(), r, lora.A[i].data(), m.in, 1.0f,
           P.data[idx[i]].data(), m.in, scale);
  }
}

}  // namespace jamba
