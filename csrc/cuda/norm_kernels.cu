// Deterministic multi-tensor p-norm on the device: per-chunk partials with a fixed reduction
// tree, then one block combines them in index order; optionally the clip coefficient and the
// gradient divisor that applies clipping inside an update kernel.
#include <algorithm>
#include <atomic>

#include "core/half.h"
#include "cuda/check.h"
#include "cuda/device_scalar.cuh"
#include "cuda/kernels.h"
#include "cuda/multi_tensor_apply.cuh"
#include "math/norms.h"

namespace ft::cuda {

extern std::atomic<uint64_t> g_launches;

namespace {

constexpr int kNormThreads = 256;

__device__ __forceinline__ double term(math::NormKind k, double p, double x) {
  x = fabs(x);
  switch (k) {
    case math::NormKind::L2: return x * x;
    case math::NormKind::P: return pow(x, p);
    default: return x;
  }
}

// Block-wide combine in a fixed order (warp shuffles, then warp 0 over the warp results).
__device__ double block_combine(math::NormKind k, double v) {
  __shared__ double warp_vals[kNormThreads / 32];
  for (int off = 16; off > 0; off >>= 1) v = math::norm_combine(k, v, __shfl_down_sync(0xffffffffu, v, off));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  v = threadIdx.x < kNormThreads / 32 ? warp_vals[threadIdx.x] : 0.0;
  if (warp == 0)
    for (int off = 16; off > 0; off >>= 1) v = math::norm_combine(k, v, __shfl_down_sync(0xffffffffu, v, off));
  return v;
}

template <class S>
__global__ void __launch_bounds__(kNormThreads)
    norm_partials(DeviceTable table, math::NormKind kind, double p, double* partials) {
  for (int64_t c = blockIdx.x; c < table.nchunks; c += gridDim.x) {
    const DeviceChunk ch = table.chunks[c];
    const S* x = static_cast<const S*>(slot_ptr(table, ch.tensor, kParam));
    int64_t begin, end;
    chunk_range(table, ch, begin, end);
    double acc = 0.0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
      acc = math::norm_combine(kind, acc, term(kind, p, double(to_float(x[i]))));
    acc = block_combine(kind, acc);
    if (threadIdx.x == 0) partials[c] = acc;
    __syncthreads();  // warp_vals is reused by the next chunk
  }
}

__global__ void __launch_bounds__(kNormThreads)
    norm_finish(const double* partials, int64_t n, math::NormKind kind, double p, double* out,
                ClipOutputs clip) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc = math::norm_combine(kind, acc, partials[i]);
  acc = block_combine(kind, acc);
  if (threadIdx.x != 0) return;
  const double norm = math::norm_finish(kind, p, acc);
  if (out) *out = norm;
  if (clip.max_norm >= 0) {
    // The grads are still scaled by the AMP scale: clip on the unscaled norm, as torch's
    // recipe does (unscale, clip, step), then fold both into one divisor.
    const double scale = clip.grad_scale_in ? load_scalar(clip.grad_scale_in) : clip.host_grad_scale;
    const double coef = math::clip_coefficient(clip.max_norm, norm / scale);
    if (clip.coef_out) *clip.coef_out = float(coef);
    if (clip.divisor_out) *clip.divisor_out = float(scale / coef);
  }
}

template <class S>
void launch_partials(const MultiTensor& mt, math::NormKind kind, double p, double* partials,
                     cudaStream_t st) {
  TableLaunch tl(mt, st);
  const DeviceTable& table = tl.table();
  if (table.nchunks == 0) return;
  const unsigned grid = unsigned(std::min<int64_t>(table.nchunks, int64_t(1) << 30));
  norm_partials<S><<<grid, kNormThreads, 0, st>>>(table, kind, p, partials);
  FT_CUDA_CHECK_LAUNCH("norm_partials");
  tl.launched();
  g_launches.fetch_add(1);
}

}  // namespace

void norm(const NormArrays& in, double p, double* out_norm, const ClipOutputs& clip, Stream stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const math::NormKind kind = math::norm_kind(p);
  // One partials pass per dtype present; partial slots are laid out dtype group after group
  // (argument order within a group), a fixed order whatever the timing.
  const DType order[] = {DType::f32, DType::f64, DType::f16, DType::bf16};
  std::vector<MultiTensor> groups;
  int64_t total_chunks = 0;
  for (DType d : order) {
    MultiTensor mt;
    mt.param_dtype = d;
    for (size_t i = 0; i < in.data.size(); ++i) {
      if (in.dtypes[i] != d) continue;
      TensorSlots t;
      t.ptr[kParam] = const_cast<void*>(in.data[i]);
      t.numel = in.numel[i];
      mt.tensors.push_back(t);
      total_chunks += (t.numel + kCudaChunk - 1) / kCudaChunk;
    }
    if (!mt.tensors.empty()) groups.push_back(std::move(mt));
  }
  Scratch scratch(sizeof(double) * size_t(std::max<int64_t>(total_chunks, 1)), st);
  double* partials = scratch.as<double>();
  int64_t offset = 0;
  for (const MultiTensor& mt : groups) {
    visit_dtype(mt.param_dtype, [&](auto s) {
      launch_partials<typename decltype(s)::type>(mt, kind, p, partials + offset, st);
    });
    for (const auto& t : mt.tensors) offset += (t.numel + kCudaChunk - 1) / kCudaChunk;
  }
  norm_finish<<<1, kNormThreads, 0, st>>>(partials, total_chunks, kind, p, out_norm, clip);
  FT_CUDA_CHECK_LAUNCH("norm_finish");
  g_launches.fetch_add(1);
}

}  // namespace ft::cuda
