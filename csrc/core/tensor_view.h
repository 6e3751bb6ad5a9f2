// A non-owning view of one caller array: pointer, dtype, device and shape, nothing else.
#pragma once
#include <cstdint>
#include "core/dtype.h"

namespace ft {

enum class DeviceKind : uint8_t { cpu, cuda };

struct TensorView {
  static constexpr int kMaxDims = 16;
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::f32;
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};

  bool same_shape(const TensorView& o) const {
    if (ndim != o.ndim) return false;
    for (int i = 0; i < ndim; ++i)
      if (shape[i] != o.shape[i]) return false;
    return true;
  }
};

}  // namespace ft
