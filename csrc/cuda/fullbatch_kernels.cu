// CUDA kernels of the full-batch passes (csrc/math/fullbatch.h): one generic chunk loop over the
// multi-tensor table, per-chunk partial sums reduced in a fixed order, and the two-loop recursion
// chained on the device.
#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "core/half.h"
#include "cuda/check.h"
#include "cuda/fullbatch_kernels.h"
#include "cuda/multi_tensor_apply.cuh"

namespace ft::cuda {

extern std::atomic<uint64_t> g_launches;

namespace {

namespace fb = math::fb;

constexpr int kFbThreads = 512;
constexpr int kUnroll = 4;  // Note [loads in flight]
constexpr int kRes = fb::kMaxSums + 1;  // per-chunk partials: the sums, then the max

// Where slot s of a launch points: column col[s] of the table's pointers (-1: absent), advanced
// by row[s] rows of row_stride values (numel of the tensor when 0; a history row, Note [history
// arena]).
struct SlotMap {
  int8_t col[fb::kMaxSlots];
  int32_t row[fb::kMaxSlots];
  int64_t row_stride;
};

__device__ __forceinline__ double max_nan(double a, double b) { return a < b || b != b ? b : a; }

// Block-wide sums of R values and a max, in a fixed order (warp shuffles, then warp 0 over the
// warp results); the results are returned in every thread.
template <int R>
__device__ void block_reduce(double (&v)[R], double& mx) {
  __shared__ double sh[kFbThreads / 32][R + 1];
  for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
    for (int r = 0; r < R; ++r) v[r] += __shfl_down_sync(0xffffffffu, v[r], off);
    mx = max_nan(mx, __shfl_down_sync(0xffffffffu, mx, off));
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) sh[warp][r] = v[r];
    sh[warp][R] = mx;
  }
  __syncthreads();
  if (warp == 0) {
    const bool live = lane < kFbThreads / 32;
#pragma unroll
    for (int r = 0; r < R; ++r) v[r] = live ? sh[lane][r] : 0.0;
    mx = live ? sh[lane][R] : 0.0;
    for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
      for (int r = 0; r < R; ++r) v[r] += __shfl_down_sync(0xffffffffu, v[r], off);
      mx = max_nan(mx, __shfl_down_sync(0xffffffffu, mx, off));
    }
  }
  __syncthreads();  // every warp has read sh
  if (threadIdx.x == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) sh[0][r] = v[r];
    sh[0][R] = mx;
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < R; ++r) v[r] = sh[0][r];
  mx = sh[0][R];
  __syncthreads();  // sh is reused by the next call
}

// Every chunk of the table (block-strided): load the pass's slots, run its element math, store
// what it writes; per chunk, the sums and the max go to partials[chunk * kRes ...].  Products are
// rounded to the compute type and summed in double.
template <class Pass, class P>
__device__ void pass_chunks(const DeviceTable& tb, const SlotMap& map,
                            const typename Pass::template Coeffs<ComputeOf<P>>& c, double* partials) {
  using C = ComputeOf<P>;
  constexpr int S = fb::kMaxSlots;
  constexpr int R = Pass::kSums > 0 ? Pass::kSums : 1;
  for (int64_t k = blockIdx.x; k < tb.nchunks; k += gridDim.x) {
    const DeviceChunk ch = tb.chunks[k];
    int64_t begin, end;
    chunk_range(tb, ch, begin, end);
    const int64_t n = tb.numel[ch.tensor];
    const int64_t stride = map.row_stride ? map.row_stride : n;
    char* ptr[S];
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const size_t elem = ((Pass::kParamSlots >> s) & 1) ? sizeof(P) : sizeof(C);
      ptr[s] = map.col[s] < 0 ? nullptr
                              : static_cast<char*>(tb.ptrs[int64_t(ch.tensor) * tb.ncols + map.col[s]]) +
                                    int64_t(map.row[s]) * stride * int64_t(elem);
    }
    double sum[R] = {};
    C mx = C(0);
    // Note [loads in flight]: kUnroll elements per thread are loaded before any is computed or
    // stored (a store may alias a later load, so the compiler would not reorder them), giving
    // every thread kUnroll independent loads of each slot in flight.  Element i of the chunk
    // is always handled by the same thread in the same order: the sums stay deterministic.
    const int64_t step = int64_t(blockDim.x);
    for (int64_t i0 = begin + threadIdx.x; i0 < end; i0 += kUnroll * step) {
      C v[kUnroll][S] = {};
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = i0 + u * step;
        if (i >= end) break;
#pragma unroll
        for (int s = 0; s < S; ++s) {
          if (!((Pass::kRead >> s) & 1)) continue;
          if ((Pass::kParamSlots >> s) & 1) v[u][s] = C(to_float(reinterpret_cast<const P*>(ptr[s])[i]));
          else v[u][s] = reinterpret_cast<const C*>(ptr[s])[i];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = i0 + u * step;
        if (i >= end) break;
        C terms[R] = {};
        Pass::element(c, v[u], terms, mx);
#pragma unroll
        for (int r = 0; r < R; ++r) sum[r] += double(terms[r]);
#pragma unroll
        for (int s = 0; s < S; ++s) {
          if (!((Pass::kWrite >> s) & 1)) continue;
          if ((Pass::kParamSlots >> s) & 1) reinterpret_cast<P*>(ptr[s])[i] = Narrow<P>::from(v[u][s]);
          else reinterpret_cast<C*>(ptr[s])[i] = v[u][s];
        }
      }
    }
    double m = double(mx);
    block_reduce<R>(sum, m);
    if (threadIdx.x == 0) {
#pragma unroll
      for (int r = 0; r < fb::kMaxSums; ++r) partials[k * kRes + r] = r < Pass::kSums ? sum[r] : 0.0;
      partials[k * kRes + fb::kMaxSums] = m;
    }
  }
}

template <class Pass, class P>
__global__ void __launch_bounds__(kFbThreads)
    pass_kernel(DeviceTable tb, SlotMap map, typename Pass::template Coeffs<ComputeOf<P>> c,
                double* partials) {
  pass_chunks<Pass, P>(tb, map, c, partials);
}

// Note [device chain]: a two-loop pass needs the dot product of the pass before it.  Instead of
// a read-back per pass, every block of the next launch sums the previous launch's per-chunk
// partials itself (the same values in the same order, so every block gets the same bits) and
// derives its coefficient with math::fb::two_loop_coef; block 0 records al_i for the second loop.
// Without partials the previous dot is `given` (the history pass's, Note [first pass folded]).
template <bool kKeep, class C>
__global__ void __launch_bounds__(kFbThreads)
    two_loop_kernel(DeviceTable tb, SlotMap map, fb::TwoLoopStep st, const double* prev,
                    int64_t nprev, double given, const double* ro, double* al, double h_diag,
                    double* partials) {
  double prev_dot[1] = {prev ? 0.0 : given};
  if (prev) {
    double unused = 0.0;
    for (int64_t i = threadIdx.x; i < nprev; i += blockDim.x) prev_dot[0] += prev[i * kRes];
    block_reduce<1>(prev_dot, unused);
  }
  const fb::TwoLoopCoef k = fb::two_loop_coef(st, prev_dot[0], ro, al, h_diag);
  if (k.record && blockIdx.x == 0 && threadIdx.x == 0) al[st.entry] = k.al;
  using Pass = fb::Combine<kKeep, false>;
  const typename Pass::template Coeffs<C> c{C(k.a), C(k.c), C(k.h), k.scale};
  pass_chunks<Pass, C>(tb, map, c, partials);
}

__global__ void __launch_bounds__(kFbThreads)
    finish_kernel(const double* partials, int64_t n, double* out) {
  double v[fb::kMaxSums] = {};
  double m = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
#pragma unroll
    for (int r = 0; r < fb::kMaxSums; ++r) v[r] += partials[i * kRes + r];
    m = max_nan(m, partials[i * kRes + fb::kMaxSums]);
  }
  block_reduce<fb::kMaxSums>(v, m);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int r = 0; r < fb::kMaxSums; ++r) out[r] = v[r];
    out[fb::kMaxSums] = m;
  }
}

// The launch table of a call: fb slot s is MultiTensor slot s (the table does not care which
// array plays which role).
MultiTensor as_multi(const FbTensors& t) {
  MultiTensor mt;
  mt.param_dtype = mt.grad_dtype = t.dtype;
  mt.device = t.device;
  mt.device_index = t.device_index;
  mt.tensors.resize(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    for (int s = 0; s < fb::kMaxSlots; ++s) mt.tensors[i].ptr[s] = t.ptr[i][s];
    mt.tensors[i].numel = t.numel[i];
  }
  return mt;
}

unsigned grid_for(int64_t nchunks) { return unsigned(std::min<int64_t>(nchunks, int64_t(1) << 30)); }

FbResult read_results(const double* out, double* extra_host, int n_extra, cudaStream_t st) {
  std::vector<double> host(size_t(kRes + n_extra));
  FT_CUDA_CHECK(cudaMemcpyAsync(host.data(), out, host.size() * sizeof(double),
                                cudaMemcpyDeviceToHost, st));
  FT_CUDA_CHECK(cudaStreamSynchronize(st));
  FbResult r;
  for (int s = 0; s < fb::kMaxSums; ++s) r.sum[s] = host[size_t(s)];
  r.max = host[fb::kMaxSums];
  for (int j = 0; j < n_extra; ++j) extra_host[j] = host[size_t(kRes + j)];
  return r;
}

// One pass with host coefficients; with `results`, the reduction is finished on the device and
// read back (a stream sync).
template <class Pass, class P>
FbResult run(const FbTensors& t, const typename Pass::template Coeffs<ComputeOf<P>>& c, Stream stream,
             bool results) {
  auto st = static_cast<cudaStream_t>(stream);
  TableLaunch tl(as_multi(t), st);
  const DeviceTable& tb = tl.table();
  if (tb.nchunks == 0) return FbResult{};
  Scratch scratch(sizeof(double) * size_t((tb.nchunks + 1) * kRes), st);
  double* partials = scratch.as<double>();
  SlotMap map;
  map.row_stride = 0;
  for (int s = 0; s < fb::kMaxSlots; ++s) {
    map.col[s] = tb.col[s];
    map.row[s] = 0;
  }
  pass_kernel<Pass, P><<<grid_for(tb.nchunks), kFbThreads, 0, st>>>(tb, map, c, partials);
  FT_CUDA_CHECK_LAUNCH("fullbatch pass_kernel");
  tl.launched();
  g_launches.fetch_add(1);
  if (!results) return FbResult{};
  double* out = partials + tb.nchunks * kRes;
  finish_kernel<<<1, kFbThreads, 0, st>>>(partials, tb.nchunks, out);
  FT_CUDA_CHECK_LAUNCH("fullbatch finish_kernel");
  g_launches.fetch_add(1);
  return read_results(out, nullptr, 0, st);
}

}  // namespace

FbResult fb_history(const FbTensors& t, double step, Stream st) {
  if (t.dtype == DType::f64) return run<fb::History, double>(t, {step}, st, true);
  return run<fb::History, float>(t, {float(step)}, st, true);
}

FbResult fb_combine(const FbTensors& t, const fb::TwoLoopCoef& k, bool copy, Stream st) {
  auto go = [&](auto zero) {
    using C = decltype(zero);
    const C a(k.a), c(k.c), h(k.h);
    if (k.keep && copy) return run<fb::Combine<true, true>, C>(t, {a, c, h, k.scale}, st, true);
    if (k.keep) return run<fb::Combine<true, false>, C>(t, {a, c, h, k.scale}, st, true);
    if (copy) return run<fb::Combine<false, true>, C>(t, {a, c, h, k.scale}, st, true);
    return run<fb::Combine<false, false>, C>(t, {a, c, h, k.scale}, st, true);
  };
  return t.dtype == DType::f64 ? go(0.0) : go(0.0f);
}

FbResult fb_dots(const FbTensors& t, int n, Stream st) {
  auto go = [&](auto zero) {
    using C = decltype(zero);
    if (n == 1) return run<fb::Dots<1>, C>(t, {0}, st, true);
    if (n == 2) return run<fb::Dots<2>, C>(t, {0}, st, true);
    return run<fb::Dots<3>, C>(t, {0}, st, true);
  };
  return t.dtype == DType::f64 ? go(0.0) : go(0.0f);
}

namespace {
template <bool kDot>
FbResult grad_copy_typed(const FbTensors& t, Stream st) {
  using Pass = fb::GradCopy<kDot>;
  return visit_dtype(t.dtype, [&](auto s) {
    return run<Pass, typename decltype(s)::type>(t, {0}, st, kDot);
  });
}
}  // namespace

FbResult fb_grad_copy(const FbTensors& t, Stream st) {
  const bool dot = !t.ptr.empty() && t.ptr[0][2] != nullptr;
  return dot ? grad_copy_typed<true>(t, st) : grad_copy_typed<false>(t, st);
}

namespace {
template <fb::StepMode kMode>
void param_step_typed(const FbTensors& t, double step, Stream st) {
  using Pass = fb::ParamStep<kMode>;
  visit_dtype(t.dtype, [&](auto s) {
    using P = typename decltype(s)::type;
    run<Pass, P>(t, {ComputeOf<P>(step)}, st, false);
  });
}
}  // namespace

void fb_param_step(const FbTensors& t, fb::StepMode mode, double step, Stream st) {
  switch (mode) {
    case fb::StepMode::Add: return param_step_typed<fb::StepMode::Add>(t, step, st);
    case fb::StepMode::SaveBase: return param_step_typed<fb::StepMode::SaveBase>(t, step, st);
    case fb::StepMode::FromBase: return param_step_typed<fb::StepMode::FromBase>(t, step, st);
    case fb::StepMode::Restore: return param_step_typed<fb::StepMode::Restore>(t, step, st);
  }
}

FbResult fb_two_loop(const FbTensors& t, const int* slots, int k, const double* ro, double h_diag,
                     double* al, const double* first_dot, Stream stream) {
  auto st = static_cast<cudaStream_t>(stream);
  std::vector<fb::TwoLoopStep> steps(size_t(2 * k + 1));
  const int n = fb::two_loop_schedule(slots, k, steps.data());
  // Table columns: slot 0 d, slot 1 g, slot 2 the history.
  TableLaunch tl(as_multi(t), st);
  const DeviceTable& tb = tl.table();
  if (tb.nchunks == 0) return FbResult{};
  const int64_t np = tb.nchunks * kRes;
  // Layout: partials A | partials B | out (kRes) | al (k) | ro (k); out and al come back together.
  Scratch scratch(sizeof(double) * size_t(2 * np + kRes + 2 * int64_t(k)), st);
  double* part[2] = {scratch.as<double>(), scratch.as<double>() + np};
  double* out = part[1] + np;
  double* al_dev = out + kRes;
  double* ro_dev = al_dev + k;
  if (k > 0)
    FT_CUDA_CHECK(cudaMemcpyAsync(ro_dev, ro, sizeof(double) * size_t(k), cudaMemcpyHostToDevice, st));
  const int8_t cd = tb.col[0], cg = tb.col[1], ch = tb.col[2];
  const int j0 = fb::two_loop_start(steps.data(), first_dot);
  const double given = j0 ? *first_dot : 0.0;
  for (int j = j0; j < n; ++j) {
    const fb::TwoLoopStep& s = steps[size_t(j)];
    SlotMap map;
    map.row_stride = t.row_stride;
    const int8_t cols[fb::kMaxSlots] = {cd, int8_t(s.x < 0 ? cg : ch), int8_t(s.w < 0 ? cg : ch), -1, -1};
    const int32_t rows[fb::kMaxSlots] = {0, s.x < 0 ? 0 : s.x, s.w < 0 ? 0 : s.w, 0, 0};
    for (int q = 0; q < fb::kMaxSlots; ++q) {
      map.col[q] = cols[q];
      map.row[q] = rows[q];
    }
    const bool keep = s.kind != fb::TwoLoopKind::Only && s.kind != fb::TwoLoopKind::First;
    const double* prev = j == j0 ? nullptr : part[(j - 1) & 1];
    double* cur = part[j & 1];
    const auto kernel = t.dtype == DType::f64
                            ? (keep ? &two_loop_kernel<true, double> : &two_loop_kernel<false, double>)
                            : (keep ? &two_loop_kernel<true, float> : &two_loop_kernel<false, float>);
    kernel<<<grid_for(tb.nchunks), kFbThreads, 0, st>>>(tb, map, s, prev, tb.nchunks, given, ro_dev,
                                                         al_dev, h_diag, cur);
    FT_CUDA_CHECK_LAUNCH("fullbatch two_loop_kernel");
    g_launches.fetch_add(1);
  }
  finish_kernel<<<1, kFbThreads, 0, st>>>(part[(n - 1) & 1], tb.nchunks, out);
  FT_CUDA_CHECK_LAUNCH("fullbatch finish_kernel");
  g_launches.fetch_add(1);
  tl.launched();
  return read_results(out, al, k, st);
}

}  // namespace ft::cuda
