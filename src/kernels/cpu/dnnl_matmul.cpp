// oneDNN glue: one cached matmul primitive per shape (prefill sees a handful: the chunk size,
// its tail, the MoE group sizes), weights passed as a strided view of the bf16 tensor.
#include "kernels/cpu/dnnl_matmul.h"

#if defined(JAMBA_HAVE_DNNL)
#include <omp.h>

#include <dnnl.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>
#endif

namespace jamba::cpu::detail {

#if defined(JAMBA_HAVE_DNNL)
namespace {

// (M, N, K, lda, ldw, ldc, accumulate, threads, w_kn): oneDNN splits the work for the thread
// count at creation, so a primitive made under 1 thread ran serially after a switch to 2.
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int, bool>;

// W as [K, N]: the [N, K] tensor transposed (strides 1, ldw), or a [K, N] tensor (ldw, 1).
dnnl::memory::dims w_strides(int64_t ldw, bool w_kn) {
  return w_kn ? dnnl::memory::dims{ldw, 1} : dnnl::memory::dims{1, ldw};
}

struct Prim {
  dnnl::matmul mm;
  dnnl::memory::desc scratch;  // user scratchpad: each call brings its own (thread-safe)
};

struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  std::mutex mu;
  std::map<Key, Prim> cache;
};

// Never destroyed: OpenMP worker threads hold streams (thread_local, below) on this engine and
// may run their thread-exit destructors after static destruction at process exit.
Dnnl& dnnl_state() {
  static Dnnl* d = new Dnnl;
  return *d;
}

Prim primitive(Dnnl& d, const Key& key) {
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.cache.find(key);
  if (it != d.cache.end()) return it->second;
  const auto [M, N, K, lda, ldw, ldc, acc, threads, w_kn] = key;
  (void)threads;
  using dt = dnnl::memory::data_type;
  // A: [M, K] row stride lda; W as [K, N] with strides (1, ldw) = the [N, K] tensor transposed;
  // C: [M, N] row stride ldc.
  const dnnl::memory::desc a_md({M, K}, dt::bf16, dnnl::memory::dims{lda, 1});
  const dnnl::memory::desc w_md({K, N}, dt::bf16, w_strides(ldw, w_kn));
  const dnnl::memory::desc c_md({M, N}, dt::f32, dnnl::memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  // Concurrent calls (MoE experts side by side) must not share the library's scratchpad: it is
  // global unless oneDNN was built for concurrent execution, and sharing it gave inf logits.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (acc) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_md, c_md), attr, d.eng);
  Prim p{dnnl::matmul(pd), pd.scratchpad_desc()};
  d.cache.emplace(key, p);
  return p;
}

// Runs a primitive on this thread's stream with this thread's scratchpad. One stream per thread:
// callers may run GEMMs from several threads (MoE experts side by side).
void execute(Dnnl& d, const Prim& prim, const dnnl::memory& a, const dnnl::memory& w,
             const dnnl::memory& c) {
  thread_local dnnl::stream strm(d.eng);
  thread_local std::vector<uint8_t> scratch;
  scratch.resize(std::max<size_t>(scratch.size(), prim.scratch.get_size()));
  dnnl::memory sp(prim.scratch, d.eng, scratch.data());
  prim.mm.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, c},
                         {DNNL_ARG_SCRATCHPAD, sp}});
  strm.wait();
}

}  // namespace

bool dnnl_matmul_bf16(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                      const uint16_t* W, int64_t ldw, float* C, int64_t ldc, const float* bias,
                      bool accumulate, bool w_kn) {
  Dnnl& d = dnnl_state();
  Prim prim;
  try {
    // Inside a parallel region (nested regions are serial) the primitive runs on this thread.
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    prim = primitive(d, {M, N, K, lda, ldw, ldc, accumulate || bias, threads, w_kn});
  } catch (const dnnl::error&) {
    return false;  // no implementation for this shape / CPU: the caller's own path runs
  }
  if (bias)  // C = (C or 0) + bias, then the primitive adds the product (sum post-op)
    for (int64_t m = 0; m < M; ++m) {
      float* c = C + m * ldc;
      for (int64_t n = 0; n < N; ++n) c[n] = (accumulate ? c[n] : 0.0f) + bias[n];
    }
  using dt = dnnl::memory::data_type;
  dnnl::memory a({{M, K}, dt::bf16, dnnl::memory::dims{lda, 1}}, d.eng, const_cast<uint16_t*>(A));
  dnnl::memory w({{K, N}, dt::bf16, w_strides(ldw, w_kn)}, d.eng, const_cast<uint16_t*>(W));
  dnnl::memory c({{M, N}, dt::f32, dnnl::memory::dims{ldc, 1}}, d.eng, C);
  execute(d, prim, a, w, c);
  return true;
}

namespace {

// (M, N, K, lda, ldw, ldc, a_unsigned, threads)
using KeyI8 = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int>;

Prim primitive_i8(Dnnl& d, const KeyI8& key) {
  static std::map<KeyI8, Prim>* cache = new std::map<KeyI8, Prim>;  // under d.mu
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  const auto [M, N, K, lda, ldw, ldc, a_unsigned, threads] = key;
  (void)threads;
  using dt = dnnl::memory::data_type;
  const dnnl::memory::desc a_md({M, K}, a_unsigned ? dt::u8 : dt::s8, dnnl::memory::dims{lda, 1});
  const dnnl::memory::desc w_md({K, N}, dt::s8, dnnl::memory::dims{1, ldw});
  const dnnl::memory::desc c_md({M, N}, dt::s32, dnnl::memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_md, c_md), attr, d.eng);
  Prim p{dnnl::matmul(pd), pd.scratchpad_desc()};
  cache->emplace(key, p);
  return p;
}

}  // namespace

bool dnnl_matmul_i8(int64_t M, int64_t N, int64_t K, const void* A, bool a_unsigned, int64_t lda,
                    const int8_t* W, int64_t ldw, int32_t* C, int64_t ldc) {
  Dnnl& d = dnnl_state();
  Prim prim;
  try {
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    prim = primitive_i8(d, {M, N, K, lda, ldw, ldc, a_unsigned, threads});
  } catch (const dnnl::error&) {
    return false;
  }
  using dt = dnnl::memory::data_type;
  dnnl::memory a({{M, K}, a_unsigned ? dt::u8 : dt::s8, dnnl::memory::dims{lda, 1}}, d.eng,
                 const_cast<void*>(A));
  dnnl::memory w({{K, N}, dt::s8, dnnl::memory::dims{1, ldw}}, d.eng, const_cast<int8_t*>(W));
  dnnl::memory c({{M, N}, dt::s32, dnnl::memory::dims{ldc, 1}}, d.eng, C);
  execute(d, prim, a, w, c);
  return true;
}

bool dnnl_available() { return true; }

#else

bool dnnl_matmul_bf16(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*,
                      int64_t, float*, int64_t, const float*, bool, bool) {
  return false;
}

bool dnnl_matmul_i8(int64_t, int64_t, int64_t, const void*, bool, int64_t, const int8_t*, int64_t,
                    int32_t*, int64_t) {
  return false;
}

bool dnnl_available() { return false; }

#endif

}  // namespace jamba::cpu::detail
