#include "train/lora_train.h"

#include <cmath>
#include <random>

#include "core/error.h"

namespace jamba {

ParamStore lora_param_store(const JambaConfig& cfg, const LoraConfig& lc, uint64_t seed) {
  JAMBA_CHECK(lc.rank > 0, "[lora] rank must be > 0, got ", lc.rank);
  ParamStore p;
  p.cfg = cfg;
  const std::vector<LoraModule> mods = lora_modules(cfg, lc.targets);
  JAMBA_CHECK(!mods.empty(), "[lora] no linear layer of this model matches the targets");
  std::mt19937_64 rng(seed);
  for (const LoraModule& m : mods) {
    p.index[lora_a_name(m.name)] = p.specs.size();
    p.specs.push_back({lora_a_name(m.name), {lc.rank, m.in}, InitKind::Normal});
    const float bound = 1.0f / std::sqrt(float(m.in));
    std::uniform_real_distribution<float> u(-bound, bound);
    std::vector<float> a(static_cast<size_t>(lc.rank * m.in));  // [r, in]
    for (float& v : a) v = u(rng);
    p.data.push_back(std::move(a));
    p.index[lora_b_name(m.name)] = p.specs.size();
    p.specs.push_back({lora_b_name(m.name), {m.out, lc.rank}, InitKind::Zeros});
    p.data.emplace_back(static_cast<size_t>(m.out * lc.rank), 0.0f);  // [out, r]
  }
  return p;
}

LoraWeights lora_weights_of(const ParamStore& P, const LoraConfig& lc) {
  LoraWeights lw;
  lw.config = lc;
  lw.modules = lora_modules(P.cfg, lc.targets);
  for (const LoraModule& m : lw.modules) {
    lw.A.push_back(P.data[P.find(lora_a_name(m.name))]);
    lw.B.push_back(P.data[P.find(lora_b_name(m.name))]);
  }
  return lw;
}

void load_lora_values(ParamStore& P, const LoraWeights& lw) {
  for (size_t i = 0; i < lw.modules.size(); ++i) {
    for (const bool b : {false, true}) {
      const std::string n = b ? lora_b_name(lw.modules[i].name) : lora_a_name(lw.modules[i].name);
      JAMBA_CHECK(P.has(n), "[lora] the adapter has '", n, "', which this run does not train");
      std::vector<float>& dst = P.data[P.find(n)];
      const std::vector<float>& src = b ? lw.B[i] : lw.A[i];
      JAMBA_CHECK(dst.size() == src.size(), "[lora] '", n, "': expected ", dst.size(),
                  " values, got ", src.size());
      std::copy(src.begin(), src.end(), dst.begin());  // in place: the base points at dst
    }
  }
  JAMBA_CHECK(P.size() == 2 * lw.modules.size(), "[lora] the adapter has ", lw.modules.size(),
              " modules, this run trains ", P.size() / 2);
}

void attach_lora_params(Weights& base, const ParamStore& P, const LoraConfig& lc) {
  const std::vector<LoraModule> mods = lora_modules(P.cfg, lc.targets);
  std::vector<const float*> A, B;
  for (const LoraModule& m : mods) {
    A.push_back(P.data[P.find(lora_a_name(m.name))].data());
    B.push_back(P.data[P.find(lora_b_name(m.name))].data());
  }
  attach_lora(base, P.cfg, lc, mods, A, B);
}

}  // namespace jamba
