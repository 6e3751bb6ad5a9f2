// Shapes and argument structs of the normalization kernels (batch, layer, RMS, group and instance
// norm), shared by the CPU and CUDA backends and filled in by the bindings.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/half.h"
#include "core/macros.h"

namespace ft {

// A per-channel vector (weight, running_mean, save_invstd, ...) of any float dtype, or absent.
// Channel vectors are C elements, so reading them through doubles costs nothing measurable next
// to the tensor; get_run / set_run move a run of channels with one dtype dispatch, for the CPU's
// per-channel steps (Note [channel runs]).
struct ChannelArray {
  void* data = nullptr;
  DType dtype = DType::f32;

  FT_HD bool present() const { return data != nullptr; }
  FT_HD double get(int64_t c, double absent = 0.0) const {
    if (!data) return absent;
    switch (dtype) {
      case DType::f32: return static_cast<const float*>(data)[c];
      case DType::f64: return static_cast<const double*>(data)[c];
      case DType::f16: return to_float(static_cast<const Half*>(data)[c]);
      case DType::bf16: return to_float(static_cast<const BFloat16*>(data)[c]);
    }
    return absent;
  }
  FT_HD void set(int64_t c, double v) const {
    if (!data) return;
    switch (dtype) {
      case DType::f32: static_cast<float*>(data)[c] = float(v); break;
      case DType::f64: static_cast<double*>(data)[c] = v; break;
      case DType::f16: static_cast<Half*>(data)[c] = to_half(float(v)); break;
      case DType::bf16: static_cast<BFloat16*>(data)[c] = to_bf16(float(v)); break;
    }
  }
  // Channels [c0, c0 + n) into out, as get() gives them.
  void get_run(int64_t c0, int64_t n, double* out, double absent = 0.0) const {
    if (!data) {
      for (int64_t i = 0; i < n; ++i) out[i] = absent;
      return;
    }
    switch (dtype) {
      case DType::f32: return copy_run(static_cast<const float*>(data) + c0, n, out);
      case DType::f64: return copy_run(static_cast<const double*>(data) + c0, n, out);
      case DType::f16: return copy_run(static_cast<const Half*>(data) + c0, n, out);
      case DType::bf16: return copy_run(static_cast<const BFloat16*>(data) + c0, n, out);
    }
  }
  // Channels [c0, c0 + n) from v, as set() stores them.
  void set_run(int64_t c0, int64_t n, const double* v) const {
    if (!data) return;
    switch (dtype) {
      case DType::f32: return store_run(v, n, static_cast<float*>(data) + c0);
      case DType::f64: return store_run(v, n, static_cast<double*>(data) + c0);
      case DType::f16: return store_run(v, n, static_cast<Half*>(data) + c0);
      case DType::bf16: return store_run(v, n, static_cast<BFloat16*>(data) + c0);
    }
  }

 private:
  template <class S>
  static void copy_run(const S* p, int64_t n, double* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = double(to_float(p[i]));
  }
  template <class S>
  static void store_run(const double* v, int64_t n, S* p) {
    for (int64_t i = 0; i < n; ++i) p[i] = stored_as<S>(v[i]);
  }
  template <class S>
  static S stored_as(double v) {
    if constexpr (std::is_same_v<S, double>) return v;
    else if constexpr (std::is_same_v<S, float>) return float(v);
    else if constexpr (std::is_same_v<S, Half>) return to_half(float(v));
    else return to_bf16(float(v));
  }
};

// x viewed as (outer, channels, inner): NCHW-like input is (N, C, prod(spatial)); channels-last
// input and 2-d (N, C) input are (rows, C, 1).  Note [planar view]: every normalization's
// statistics are those of the "channels" of such a view: a layer-norm row is channel r of
// (1, rows, cols); a group-norm group of NCHW input is channel n * G + g of (1, N * G, C / G * HW).
struct BnShape {
  int64_t outer = 0, channels = 0, inner = 1;
  FT_HD int64_t per_channel() const { return outer * inner; }
};

// ---------------------------------------------------------------- batch norm

struct BnForwardArgs {
  const void* x = nullptr;
  void* y = nullptr;
  DType dtype = DType::f32;
  BnShape shape;
  ChannelArray weight, bias, running_mean, running_var;  // running stats updated when training
  ChannelArray save_mean, save_invstd;                    // outputs
  bool training = true;
  double momentum = 0.1, eps = 1e-5;
};

// Note [given sums]: the backward is a reduction (the channel sums) followed by an elementwise
// pass (dx). Synchronized batch norm needs the sums of every rank's slice between the two, so
// either half runs alone: without dx only the sums are taken (dweight, dbias); with given sums
// (sum dy and sum dy * xhat over `given_count` values of the whole batch, xhat with this call's
// save_mean and save_invstd) no reduction runs and dx is the only output.
struct BnBackwardArgs {
  const void* dy = nullptr;
  const void* x = nullptr;
  void* dx = nullptr;  // absent: sums only
  DType dtype = DType::f32;
  BnShape shape;
  ChannelArray weight, save_mean, save_invstd;
  ChannelArray dweight, dbias;  // outputs, absent when weight is (and with given sums)
  ChannelArray given_sum_dy, given_sum_dy_xhat;  // both or neither
  double given_count = 0;

  FT_HD bool given() const { return given_sum_dy.present(); }
};

struct BnStatsArgs {
  const void* x = nullptr;
  DType dtype = DType::f32;
  BnShape shape;
  ChannelArray mean, var;  // outputs: mean and biased variance
};

// merge_stats: K rows of per-channel (mean, biased var) with one count per row, merged by Chan's
// rule in row order.
struct BnMergeArgs {
  ChannelArray means, vars;  // K x C, row-major
  std::vector<double> counts;
  int64_t channels = 0;
  ChannelArray mean, var;  // outputs
};

// Note [device count]: the count may instead be one value in memory (count_at, on the arrays'
// device), so that a count that a collective left on a GPU (synchronized batch norm's) never
// makes the host wait for the device; count is then unused.
struct BnRunningArgs {
  ChannelArray running_mean, running_var, mean, var;
  ChannelArray count_at;
  int64_t channels = 0;
  double count = 0, momentum = 0.1;
  FT_HD double values() const { return count_at.present() ? count_at.get(0) : count; }
};

// ---------------------------------------------------------------- layer and RMS norm

// x viewed as (rows, cols): cols is the product of normalized_shape, rows of everything before.
// RMS norm (rms = true) has no mean and no bias: its statistic is the root mean square.
struct LnForwardArgs {
  const void* x = nullptr;
  void* y = nullptr;
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;
  bool rms = false;
  ChannelArray weight, bias;  // cols values each, optional
  ChannelArray mean, rstd;    // outputs, rows values each (mean absent for RMS norm)
  double eps = 1e-5;
};

struct LnBackwardArgs {
  const void* dy = nullptr;
  const void* x = nullptr;
  void* dx = nullptr;
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;
  bool rms = false;
  ChannelArray weight, mean, rstd;  // mean absent for RMS norm
  ChannelArray dweight, dbias;      // outputs, absent without weight
};

// ---------------------------------------------------------------- group and instance norm

// x is (N, C, HW) or, channels_last, (N, HW, C); G groups of C / G consecutive channels.
struct GnShape {
  int64_t n = 0, c = 0, hw = 1, groups = 1;
  bool channels_last = false;
  FT_HD int64_t per_group_channels() const { return c / groups; }
  FT_HD int64_t per_group() const { return c / groups * hw; }
};

// Instance norm is G = C; with use_input_stats its running statistics (optional, C values)
// move towards the mean over the batch of each channel's instance statistics, as torch's
// instance_norm does; without, it normalizes with them.
struct GnForwardArgs {
  const void* x = nullptr;
  void* y = nullptr;
  DType dtype = DType::f32;
  GnShape shape;
  ChannelArray weight, bias;               // C values, optional
  ChannelArray mean, rstd;                 // outputs, N * G values
  ChannelArray running_mean, running_var;  // instance norm only
  bool use_input_stats = true;
  double momentum = 0.1, eps = 1e-5;
};

struct GnBackwardArgs {
  const void* dy = nullptr;
  const void* x = nullptr;
  void* dx = nullptr;
  DType dtype = DType::f32;
  GnShape shape;
  ChannelArray weight, mean, rstd;
  ChannelArray dweight, dbias;  // outputs, absent without weight
};

}  // namespace ft
