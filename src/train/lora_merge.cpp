#include "train/lora_merge.h"

#include <vector>

#include "core/error.h"
#include "kernels/kernels.h"

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
  std::vector<float> sb, at;
  for (size_t i = 0; i < lora.modules.size(); ++i) {
    const LoraModule& m = lora.modules[i];
    const std::vector<float>& A = lora.A[i];  // [r, in]
    const std::vector<float>& B = lora.B[i];  // [out, r]
    sb.resize(B.size());                      // scale * B: [out, r]
    for (size_t j = 0; j < B.size(); ++j) sb[j] = scale * B[j];
    at.resize(A.size());  // A^T: [in, r]
    for (int64_t k = 0; k < r; ++k)
      for (int64_t c = 0; c < m.in; ++c) at[size_t(c * r + k)] = A[size_t(k * m.in + c)];
    // W [out, in] += (scale * B) [out, r] @ (A^T)^T [r, in]
    cpu::gemm({.M = m.out,
               .N = m.in,
               .K = r,
               .A = sb.data(),
               .lda = r,
               .W = at.data(),
               .ldw = r,
               .C = P.data[idx[i]].data(),
               .ldc = m.in,
               .accumulate = true});
  }
}

}  // namespace jamba
