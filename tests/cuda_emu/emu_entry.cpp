// C entry points of the emulated CUDA normalization kernels (Note [host emulation]) for
// tests/test_cuda_emulated.py: the argument structs of csrc/core/norm_args.h from plain
// pointers, dtype codes (DType's order: f32, f64, f16, bf16), flags and sizes, all integers
// 64-bit. Each returns 0, or -1
// with the exception's message in emu_error().
#include <string>

#include "cuda/normalization_kernels.h"

namespace {
std::string g_error;
}  // namespace

void emu_set_error(const std::string& e) { g_error = e; }

namespace {

ft::ChannelArray arr(void* p, int64_t dtype) { return {p, ft::DType(dtype)}; }

template <class F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    g_error = e.what();
    return -1;
  }
}
}  // namespace

extern "C" {

const char* emu_error() { return g_error.c_str(); }

int emu_bn_forward(const void* x, void* y, int64_t dtype, int64_t outer, int64_t channels,
                   int64_t inner, void* w, void* b, int64_t pdtype, void* rm, void* rv, int64_t rdtype,
                   void* save_mean, void* save_invstd, int64_t sdtype, int64_t training, double momentum,
                   double eps) {
  return guarded([&] {
    ft::BnForwardArgs a;
    a.x = x;
    a.y = y;
    a.dtype = ft::DType(dtype);
    a.shape = {outer, channels, inner};
    a.weight = arr(w, pdtype);
    a.bias = arr(b, pdtype);
    a.running_mean = arr(rm, rdtype);
    a.running_var = arr(rv, rdtype);
    a.save_mean = arr(save_mean, sdtype);
    a.save_invstd = arr(save_invstd, sdtype);
    a.training = training != 0;
    a.momentum = momentum;
    a.eps = eps;
    ft::cuda::bn_forward(a, nullptr);
  });
}

int emu_bn_backward(const void* dy, const void* x, void* dx, int64_t dtype, int64_t outer,
                    int64_t channels, int64_t inner, void* w, int64_t pdtype, void* save_mean,
                    void* save_invstd, int64_t sdtype, void* dw, void* db, int64_t gdtype,
                    void* sum_dy, void* sum_dy_xhat, int64_t sum_dtype, double count) {
  return guarded([&] {
    ft::BnBackwardArgs a;
    a.dy = dy;
    a.x = x;
    a.dx = dx;
    a.dtype = ft::DType(dtype);
    a.shape = {outer, channels, inner};
    a.weight = arr(w, pdtype);
    a.save_mean = arr(save_mean, sdtype);
    a.save_invstd = arr(save_invstd, sdtype);
    a.dweight = arr(dw, gdtype);
    a.dbias = arr(db, gdtype);
    a.given_sum_dy = arr(sum_dy, sum_dtype);
    a.given_sum_dy_xhat = arr(sum_dy_xhat, sum_dtype);
    a.given_count = count;
    ft::cuda::bn_backward(a, nullptr);
  });
}

int emu_ln_forward(const void* x, void* y, int64_t dtype, int64_t rows, int64_t cols, int64_t rms,
                   void* w, void* b, int64_t pdtype, void* mean, void* rstd, int64_t sdtype, double eps) {
  return guarded([&] {
    ft::LnForwardArgs a;
    a.x = x;
    a.y = y;
    a.dtype = ft::DType(dtype);
    a.rows = rows;
    a.cols = cols;
    a.rms = rms != 0;
    a.weight = arr(w, pdtype);
    a.bias = arr(b, pdtype);
    a.mean = arr(mean, sdtype);
    a.rstd = arr(rstd, sdtype);
    a.eps = eps;
    ft::cuda::ln_forward(a, nullptr);
  });
}

int emu_ln_backward(const void* dy, const void* x, void* dx, int64_t dtype, int64_t rows,
                    int64_t cols, int64_t rms, void* w, int64_t pdtype, void* mean, void* rstd,
                    int64_t sdtype, void* dw, void* db) {
  return guarded([&] {
    ft::LnBackwardArgs a;
    a.dy = dy;
    a.x = x;
    a.dx = dx;
    a.dtype = ft::DType(dtype);
    a.rows = rows;
    a.cols = cols;
    a.rms = rms != 0;
    a.weight = arr(w, pdtype);
    a.mean = arr(mean, sdtype);
    a.rstd = arr(rstd, sdtype);
    a.dweight = arr(dw, pdtype);
    a.dbias = arr(db, pdtype);
    ft::cuda::ln_backward(a, nullptr);
  });
}

int emu_gn_forward(const void* x, void* y, int64_t dtype, int64_t n, int64_t c, int64_t hw,
                   int64_t groups, int64_t channels_last, void* w, void* b, int64_t pdtype, void* mean,
                   void* rstd, int64_t sdtype, void* rm, void* rv, int64_t use_input_stats,
                   double momentum, double eps) {
  return guarded([&] {
    ft::GnForwardArgs a;
    a.x = x;
    a.y = y;
    a.dtype = ft::DType(dtype);
    a.shape = {n, c, hw, groups, channels_last != 0};
    a.weight = arr(w, pdtype);
    a.bias = arr(b, pdtype);
    a.mean = arr(mean, sdtype);
    a.rstd = arr(rstd, sdtype);
    a.running_mean = arr(rm, pdtype);
    a.running_var = arr(rv, pdtype);
    a.use_input_stats = use_input_stats != 0;
    a.momentum = momentum;
    a.eps = eps;
    ft::cuda::gn_forward(a, nullptr);
  });
}

int emu_gn_backward(const void* dy, const void* x, void* dx, int64_t dtype, int64_t n, int64_t c,
                    int64_t hw, int64_t groups, int64_t channels_last, void* w, int64_t pdtype,
                    void* mean, void* rstd, int64_t sdtype, void* dw, void* db) {
  return guarded([&] {
    ft::GnBackwardArgs a;
    a.dy = dy;
    a.x = x;
    a.dx = dx;
    a.dtype = ft::DType(dtype);
    a.shape = {n, c, hw, groups, channels_last != 0};
    a.weight = arr(w, pdtype);
    a.mean = arr(mean, sdtype);
    a.rstd = arr(rstd, sdtype);
    a.dweight = arr(dw, pdtype);
    a.dbias = arr(db, pdtype);
    ft::cuda::gn_backward(a, nullptr);
  });
}

}  // extern "C"
