// C entry points of the emulated CUDA normalization kernels (Note [host emulation]) for
// tests/test_cuda_emulated.py: the argument structs of csrc/core/norm_args.h, by designated
// initializers (C++20), from plain pointers, dtype codes (DType's order: f32, f64, f16, bf16),
// flags and sizes, every integer 64-bit. Each returns 0, or -1 with the exception's message in
// emu_error().
#include <string>

#include "cuda/normalization_kernels.h"
#include "emu_guard.h"

namespace {
std::string g_error;
}  // namespace

void emu_set_error(const std::string& e) { g_error = e; }

namespace {

ft::ChannelArray arr(void* p, int64_t dtype) { return {p, ft::DType(dtype)}; }

}  // namespace

extern "C" {

const char* emu_error() { return g_error.c_str(); }

int emu_bn_forward(const void* x, void* y, int64_t dtype, int64_t outer, int64_t channels,
                   int64_t inner, void* w, void* b, int64_t pdtype, void* rm, void* rv,
                   int64_t rdtype, void* save_mean, void* save_invstd, int64_t sdtype,
                   int64_t training, double momentum, double eps) {
  return emu_guarded([&] {
    ft::cuda::bn_forward({.x = x, .y = y, .dtype = ft::DType(dtype), .shape = {outer, channels, inner},
                          .weight = arr(w, pdtype), .bias = arr(b, pdtype),
                          .running_mean = arr(rm, rdtype), .running_var = arr(rv, rdtype),
                          .save_mean = arr(save_mean, sdtype), .save_invstd = arr(save_invstd, sdtype),
                          .training = training != 0, .momentum = momentum, .eps = eps},
                         nullptr);
  });
}

int emu_bn_backward(const void* dy, const void* x, void* dx, int64_t dtype, int64_t outer,
                    int64_t channels, int64_t inner, void* w, int64_t pdtype, void* save_mean,
                    void* save_invstd, int64_t sdtype, void* dw, void* db, int64_t gdtype,
                    void* sum_dy, void* sum_dy_xhat, int64_t sum_dtype, double count) {
  return emu_guarded([&] {
    ft::cuda::bn_backward({.dy = dy, .x = x, .dx = dx, .dtype = ft::DType(dtype),
                           .shape = {outer, channels, inner}, .weight = arr(w, pdtype),
                           .save_mean = arr(save_mean, sdtype), .save_invstd = arr(save_invstd, sdtype),
                           .dweight = arr(dw, gdtype), .dbias = arr(db, gdtype),
                           .given_sum_dy = arr(sum_dy, sum_dtype),
                           .given_sum_dy_xhat = arr(sum_dy_xhat, sum_dtype), .given_count = count},
                          nullptr);
  });
}

int emu_ln_forward(const void* x, void* y, int64_t dtype, int64_t rows, int64_t cols, int64_t rms,
                   void* w, void* b, int64_t pdtype, void* mean, void* rstd, int64_t sdtype,
                   double eps) {
  return emu_guarded([&] {
    ft::cuda::ln_forward({.x = x, .y = y, .dtype = ft::DType(dtype), .rows = rows, .cols = cols,
                          .rms = rms != 0, .weight = arr(w, pdtype), .bias = arr(b, pdtype),
                          .mean = arr(mean, sdtype), .rstd = arr(rstd, sdtype), .eps = eps},
                         nullptr);
  });
}

int emu_ln_backward(const void* dy, const void* x, void* dx, int64_t dtype, int64_t rows,
                    int64_t cols, int64_t rms, void* w, int64_t pdtype, void* mean, void* rstd,
                    int64_t sdtype, void* dw, void* db) {
  return emu_guarded([&] {
    ft::cuda::ln_backward({.dy = dy, .x = x, .dx = dx, .dtype = ft::DType(dtype), .rows = rows,
                           .cols = cols, .rms = rms != 0, .weight = arr(w, pdtype),
                           .mean = arr(mean, sdtype), .rstd = arr(rstd, sdtype),
                           .dweight = arr(dw, pdtype), .dbias = arr(db, pdtype)},
                          nullptr);
  });
}

int emu_gn_forward(const void* x, void* y, int64_t dtype, int64_t n, int64_t c, int64_t hw,
                   int64_t groups, int64_t channels_last, void* w, void* b, int64_t pdtype,
                   void* mean, void* rstd, int64_t sdtype, void* rm, void* rv,
                   int64_t use_input_stats, double momentum, double eps) {
  return emu_guarded([&] {
    ft::cuda::gn_forward({.x = x, .y = y, .dtype = ft::DType(dtype),
                          .shape = {n, c, hw, groups, channels_last != 0},
                          .weight = arr(w, pdtype), .bias = arr(b, pdtype),
                          .mean = arr(mean, sdtype), .rstd = arr(rstd, sdtype),
                          .running_mean = arr(rm, pdtype), .running_var = arr(rv, pdtype),
                          .use_input_stats = use_input_stats != 0, .momentum = momentum, .eps = eps},
                         nullptr);
  });
}

int emu_gn_backward(const void* dy, const void* x, void* dx, int64_t dtype, int64_t n, int64_t c,
                    int64_t hw, int64_t groups, int64_t channels_last, void* w, int64_t pdtype,
                    void* mean, void* rstd, int64_t sdtype, void* dw, void* db) {
  return emu_guarded([&] {
    ft::cuda::gn_backward({.dy = dy, .x = x, .dx = dx, .dtype = ft::DType(dtype),
                           .shape = {n, c, hw, groups, channels_last != 0},
                           .weight = arr(w, pdtype), .mean = arr(mean, sdtype),
                           .rstd = arr(rstd, sdtype), .dweight = arr(dw, pdtype),
                           .dbias = arr(db, pdtype)},
                          nullptr);
  });
}

}  // extern "C"
