// C entry points of the emulated full-batch CUDA passes (Note [host emulation]) for
// tests/test_cuda_emulated.py: an FbTensors from a table of n x kMaxSlots pointers (null: absent)
// as fusedtrain's bindings fill it, the pass's scalars, and the FbResult (sum[0..2], max) written
// to `result`. Returns 0, or -1 with the message in emu_error().
#include <stdexcept>
#include <string>

#include "cuda/fullbatch_kernels.h"
#include "emu_guard.h"

extern "C" const char* emu_error();

namespace {
namespace fb = ft::math::fb;

ft::FbTensors tensors(int64_t dtype, int64_t n, const int64_t* numel, void* const* ptrs,
                      int64_t row_stride) {
  ft::FbTensors t;
  t.dtype = ft::DType(dtype);
  t.device = ft::DeviceKind::cuda;
  t.numel.assign(numel, numel + n);
  t.ptr.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    for (int s = 0; s < fb::kMaxSlots; ++s) t.ptr[size_t(i)][size_t(s)] = ptrs[i * fb::kMaxSlots + s];
  t.row_stride = row_stride;
  return t;
}

void put(const ft::FbResult& r, double* result) {
  for (int s = 0; s < fb::kMaxSums; ++s) result[s] = r.sum[s];
  result[fb::kMaxSums] = r.max;
}
}  // namespace

// pass: 0 history (a = step), 1 combine (a, c, h; flags bit 0 keep, bit 1 copy), 2 dots
// (count = others), 3 grad copy, 4 param step (count = mode, a = t), 5 two-loop (count = k,
// slots, ro, a = h_diag, flags bit 0: c is the first dot; al out).
extern "C" int emu_fb(int64_t pass, int64_t dtype, int64_t n, const int64_t* numel,
                      void* const* ptrs, int64_t row_stride, int64_t count, int64_t flags,
                      double a, double c, double h, const int* slots, const double* ro,
                      double* al, double* result) {
  return emu_guarded([&] {
    const ft::FbTensors t = tensors(dtype, n, numel, ptrs, row_stride);
    switch (pass) {
      case 0: put(ft::cuda::fb_history(t, a, nullptr), result); break;
      case 1: {
        const fb::TwoLoopCoef k{a, c, h, (flags & 1) != 0, h != 1.0, false, 0.0};
        put(ft::cuda::fb_combine(t, k, (flags & 2) != 0, nullptr), result);
        break;
      }
      case 2: put(ft::cuda::fb_dots(t, int(count), nullptr), result); break;
      case 3: put(ft::cuda::fb_grad_copy(t, nullptr), result); break;
      case 4: ft::cuda::fb_param_step(t, fb::StepMode(count), a, nullptr); break;
      case 5: put(ft::cuda::fb_two_loop(t, slots, int(count), ro, a, al, flags & 1 ? &c : nullptr, nullptr), result); break;
      default: throw std::invalid_argument("emu_fb: no pass " + std::to_string(pass));
    }
  });
}
