// CUDA kernels of the elementwise rules: one launch per step over the cached chunk table,
// 16-byte vector loads for aligned tensors, fp32 math (fp64 for fp64), 64-bit indexing.
#include <algorithm>
#include <atomic>
#include <type_traits>

#include "core/half.h"
#include "cuda/device_scalar.cuh"
#include "cuda/kernels.h"
#include "cuda/multi_tensor_apply.cuh"
#include "math/optim_rules.h"

namespace ft::cuda {

std::atomic<uint64_t> g_launches{0};
uint64_t launch_count() { return g_launches.load(); }

namespace {

// Elements per thread-iteration: 16 bytes of the narrowest array, so every array's share is a
// whole number of 16-byte words.
template <class P, class G, class C>
struct GroupSize {
  static constexpr size_t narrowest =
      sizeof(P) < sizeof(G) ? (sizeof(P) < sizeof(C) ? sizeof(P) : sizeof(C))
                            : (sizeof(G) < sizeof(C) ? sizeof(G) : sizeof(C));
  static constexpr int value = int(16 / narrowest);
};

template <int N, class S, class C>
__device__ __forceinline__ void load_group(const S* p, bool vector, C (&out)[N]) {
  if constexpr ((N * sizeof(S)) % 16 == 0) {
    if (vector) {
      alignas(16) S tmp[N];
#pragma unroll
      for (int k = 0; k < int(N * sizeof(S) / 16); ++k)
        reinterpret_cast<uint4*>(tmp)[k] = reinterpret_cast<const uint4*>(p)[k];
#pragma unroll
      for (int e = 0; e < N; ++e) out[e] = C(to_float(tmp[e]));
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < N; ++e) out[e] = C(to_float(p[e]));
}

template <int N, class S, class C>
__device__ __forceinline__ void store_group(S* p, bool vector, const C (&in)[N]) {
  if constexpr ((N * sizeof(S)) % 16 == 0) {
    if (vector) {
      alignas(16) S tmp[N];
#pragma unroll
      for (int e = 0; e < N; ++e) tmp[e] = Narrow<S>::from(in[e]);
#pragma unroll
      for (int k = 0; k < int(N * sizeof(S) / 16); ++k)
        reinterpret_cast<uint4*>(p)[k] = reinterpret_cast<const uint4*>(tmp)[k];
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < N; ++e) p[e] = Narrow<S>::from(in[e]);
}

// The slot pointers of one tensor for one chunk, and whether every one is 16-byte aligned.
struct TensorPtrs {
  void* p[kNumSlots];
  bool aligned;
};

__device__ __forceinline__ TensorPtrs tensor_ptrs(const DeviceTable& tb, int32_t t) {
  TensorPtrs out;
  uintptr_t any = 0;
#pragma unroll
  for (int s = 0; s < kNumSlots; ++s) {
    out.p[s] = slot_ptr(tb, t, s);
    any |= reinterpret_cast<uintptr_t>(out.p[s]);
  }
  out.aligned = (any & 15) == 0;
  return out;
}

// N consecutive elements from index i of one tensor: load every present slot, run the rule per
// element, store.  vector: the group is 16-byte aligned in every slot.
template <class Rule, class P, class G, class C, int N>
__device__ __forceinline__ void step_group(const typename Rule::template Coeffs<C>& c,
                                           const TensorPtrs& t, int64_t i, bool vector,
                                           bool unscale, C scale) {
  P* p = static_cast<P*>(t.p[kParam]) + i;
  float* master = static_cast<float*>(t.p[kMaster]);
  C pv[N], gv[N] = {}, a[N] = {}, b[N] = {}, d[N] = {};
  if constexpr (std::is_same_v<C, float>) {
    if (master) load_group<N>(static_cast<const float*>(master + i), vector, pv);
    else load_group<N>(static_cast<const P*>(p), vector, pv);
  } else {
    load_group<N>(static_cast<const P*>(p), vector, pv);
  }
  if constexpr (Rule::kReadsGrad) load_group<N>(static_cast<const G*>(t.p[kGrad]) + i, vector, gv);
  C* s0 = static_cast<C*>(t.p[kState0]);
  C* s1 = static_cast<C*>(t.p[kState1]);
  C* s2 = static_cast<C*>(t.p[kState2]);
  if (s0) load_group<N>(s0 + i, vector, a);
  if (s1) load_group<N>(s1 + i, vector, b);
  if (s2) load_group<N>(s2 + i, vector, d);
#pragma unroll
  for (int e = 0; e < N; ++e) {
    C g = unscale ? gv[e] / scale : gv[e];
    Rule::update(c, pv[e], g, a[e], b[e], d[e]);
  }
  if constexpr (std::is_same_v<C, float>) {
    if (master) store_group<N>(master + i, vector, pv);
  }
  store_group<N>(p, vector, pv);
  if (s0) store_group<N>(s0 + i, vector, a);
  if (s1) store_group<N>(s1 + i, vector, b);
  if (s2) store_group<N>(s2 + i, vector, d);
}

template <class Rule, class P, class G>
__global__ void __launch_bounds__(kThreads)
    rule_kernel(DeviceTable table, typename Rule::Options o, StepScalars sc, double host_scale,
                bool host_unscale) {
  using C = ComputeOf<P>;  // Note [compute type]
  if (sc.found_inf && load_scalar(sc.found_inf) != 0.0) return;  // AMP: skip, write nothing
  apply_overrides(o, sc);
  const auto c = Rule::template coeffs<C>(o);
  const bool unscale = host_unscale || bool(sc.grad_scale);
  const C scale = C(sc.grad_scale ? load_scalar(sc.grad_scale) : host_scale);
  constexpr int E = GroupSize<P, G, C>::value;
  for (int64_t k = blockIdx.x; k < table.nchunks; k += gridDim.x) {
    const DeviceChunk ch = table.chunks[k];
    const TensorPtrs t = tensor_ptrs(table, ch.tensor);
    int64_t begin, end;
    chunk_range(table, ch, begin, end);
    // Aligned tensors: whole groups with 16-byte accesses, then a scalar tail.  Misaligned
    // tensors (views at odd offsets) take the scalar path throughout.
    const int64_t vec_end = t.aligned ? begin + (end - begin) / E * E : begin;
    for (int64_t i = begin + int64_t(threadIdx.x) * E; i < vec_end; i += int64_t(blockDim.x) * E)
      step_group<Rule, P, G, C, E>(c, t, i, true, unscale, scale);
    for (int64_t i = vec_end + threadIdx.x; i < end; i += blockDim.x)
      step_group<Rule, P, G, C, 1>(c, t, i, false, unscale, scale);
  }
}

template <class Rule, class P, class G>
void launch(const MultiTensor& mt, const typename Rule::Options& o, const StepScalars& s,
            Stream stream) {
  auto st = static_cast<cudaStream_t>(stream);
  TableLaunch tl(mt, st);
  const DeviceTable& table = tl.table();
  if (table.nchunks == 0) return;
  const unsigned grid = unsigned(std::min<int64_t>(table.nchunks, int64_t(1) << 30));
  rule_kernel<Rule, P, G><<<grid, kThreads, 0, st>>>(table, o, s, mt.grad_scale, mt.has_grad_scale);
  FT_CUDA_CHECK_LAUNCH("rule_kernel");
  tl.launched();
  g_launches.fetch_add(1);
}

// Note [dtype pairs] (core/dtype.h: the same list as the CPU drivers).
template <class Rule>
void dispatch(const MultiTensor& mt, const typename Rule::Options& o, const StepScalars& s,
              Stream st) {
  visit_dtype_pair(mt.param_dtype, mt.grad_dtype, [&](auto p, auto g) {
    launch<Rule, typename decltype(p)::type, typename decltype(g)::type>(mt, o, s, st);
  });
}

}  // namespace

#define FT_DEFINE_CUDA_RULE(Rule, name)                                                    \
  void name(const MultiTensor& mt, const math::Rule::Options& o, const StepScalars& s,     \
            Stream st) {                                                                   \
    dispatch<math::Rule>(mt, o, s, st);                                                    \
  }
FT_ELEMENTWISE_RULES(FT_DEFINE_CUDA_RULE)
#undef FT_DEFINE_CUDA_RULE

}  // namespace ft::cuda
