// A non-owning view of one caller array: pointer, dtype, device and shape, nothing else.
#pragma once
#include <cstdint>
#include "core/dtype.h"

namespace ft {

enum class DeviceKind : uint8_t { cpu, cuda };

// Note [unset dims]: a step over 10,000 tensors builds 40,000 views, so a view does not zero
// the 16 slots of `shape` (a third of an import's own time when it did): entries at and past
// ndim are unset, every reader stops at ndim, and a copy copies only the first ndim.
struct TensorView {
  static constexpr int kMaxDims = 16;
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::f32;
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;
  int ndim = 0;
  int64_t shape[kMaxDims];

  TensorView() = default;
  TensorView(const TensorView& o) { *this = o; }
  TensorView& operator=(const TensorView& o) {
    data = o.data;
    numel = o.numel;
    dtype = o.dtype;
    device = o.device;
    device_index = o.device_index;
    ndim = o.ndim;
    for (int i = 0; i < ndim; ++i) shape[i] = o.shape[i];
    return *this;
  }

  bool same_shape(const TensorView& o) const {
    if (ndim != o.ndim) return false;
    for (int i = 0; i < ndim; ++i)
      if (shape[i] != o.shape[i]) return false;
    return true;
  }
};

}  // namespace ft
