// The table of batch-norm CPU kernels one ISA build provides, and the argument structs they take.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/half.h"

namespace ft::cpu {

// A per-channel vector (weight, running_mean, save_invstd, ...) of any float dtype, or absent.
// Channel vectors are C elements, so reading them through doubles costs nothing measurable.
struct ChannelArray {
  void* data = nullptr;
  DType dtype = DType::f32;

  bool present() const { return data != nullptr; }
  double get(int64_t c, double absent = 0.0) const {
    if (!data) return absent;
    switch (dtype) {
      case DType::f32: return static_cast<const float*>(data)[c];
      case DType::f64: return static_cast<const double*>(data)[c];
      case DType::f16: return to_float(static_cast<const Half*>(data)[c]);
      case DType::bf16: return to_float(static_cast<const BFloat16*>(data)[c]);
    }
    return 0.0;
  }
  void set(int64_t c, double v) const {
    if (!data) return;
    switch (dtype) {
      case DType::f32: static_cast<float*>(data)[c] = float(v); break;
      case DType::f64: static_cast<double*>(data)[c] = v; break;
      case DType::f16: static_cast<Half*>(data)[c] = to_half(float(v)); break;
      case DType::bf16: static_cast<BFloat16*>(data)[c] = to_bf16(float(v)); break;
    }
  }
};

// x viewed as (outer, channels, inner): NCHW-like input is (N, C, prod(spatial)); channels-last
// input and 2-d (N, C) input are (rows, C, 1).
struct BnShape {
  int64_t outer = 0, channels = 0, inner = 1;
  int64_t per_channel() const { return outer * inner; }
};

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

struct BnBackwardArgs {
  const void* dy = nullptr;
  const void* x = nullptr;
  void* dx = nullptr;
  DType dtype = DType::f32;
  BnShape shape;
  ChannelArray weight, save_mean, save_invstd;
  ChannelArray dweight, dbias;  // outputs, absent when weight is
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

struct BnRunningArgs {
  ChannelArray running_mean, running_var, mean, var;
  int64_t channels = 0;
  double count = 0, momentum = 0.1;
};

struct BnKernels {
  const char* isa;
  void (*forward)(const BnForwardArgs&);
  void (*backward)(const BnBackwardArgs&);
  void (*stats)(const BnStatsArgs&);
  void (*merge)(const BnMergeArgs&);
  void (*update_running)(const BnRunningArgs&);
};

#define FT_DECLARE_BN_ISA(isa) namespace isa { const BnKernels& bn_kernels(); }
FT_DECLARE_BN_ISA(baseline)
FT_DECLARE_BN_ISA(avx2)
FT_DECLARE_BN_ISA(avx512)
FT_DECLARE_BN_ISA(neon)
#undef FT_DECLARE_BN_ISA

// The batch-norm table of the ISA build in use (the one cpu::active() names).
const BnKernels& active_bn();

}  // namespace ft::cpu
