// The operands of one full-batch pass (csrc/math/fullbatch.h) over many tensors, and its results.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/tensor_view.h"
#include "math/fullbatch.h"

namespace ft {

struct FbTensors {
  DType dtype = DType::f32;  // the param dtype; slots outside a pass's kParamSlots hold compute_dtype
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;
  std::vector<int64_t> numel;                                     // per tensor
  std::vector<std::array<void*, math::fb::kMaxSlots>> ptr;        // per tensor, per slot
  // Elements from one history row to the next (the two-loop's slot 2); 0: numel of the tensor.
  int64_t row_stride = 0;

  size_t size() const { return numel.size(); }
};

// A pass's dot products and max |v[0]| (Note [pass reductions]).
struct FbResult {
  double sum[math::fb::kMaxSums] = {0.0, 0.0, 0.0};
  double max = 0.0;
};

}  // namespace ft
