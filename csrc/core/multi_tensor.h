// The list-of-tensors argument every multi-tensor kernel takes, and its fixed chunking.
#pragma once
#include <cstdint>
#include <vector>
#include "core/dtype.h"
#include "core/tensor_view.h"

namespace ft {

// Slots of one tensor's arrays.  Note [slot roles]: a rule reads and writes "param", reads
// "grad", and reads and writes the state slots it needs; "master" holds float32 master weights
// of half params (the param is then written as the rounded master).
enum Slot : int { kParam = 0, kGrad = 1, kState0 = 2, kState1 = 3, kState2 = 4, kMaster = 5 };
constexpr int kNumSlots = 6;

struct TensorSlots {
  void* ptr[kNumSlots] = {};
  int64_t numel = 0;
};

struct MultiTensor {
  DType param_dtype = DType::f32;
  DType grad_dtype = DType::f32;
  std::vector<TensorSlots> tensors;
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;
  bool has_grad_scale = false;  // grads are divided by grad_scale before the rule sees them
  double grad_scale = 1.0;
};

// Note [fixed chunking]: work is cut into chunks of kChunk elements per tensor, independent of
// the thread count; threads take whole chunks, and reductions combine per-chunk partials in chunk
// order.  Together with kChunk being a multiple of every SIMD width this makes results bitwise
// identical for any number of threads.
constexpr int64_t kChunk = 16384;

struct Chunk {
  int32_t tensor;
  int64_t begin, end;
};

template <class Numel>
std::vector<Chunk> make_chunks(size_t n, Numel numel_of) {
  std::vector<Chunk> out;
  for (size_t t = 0; t < n; ++t) {
    int64_t numel = numel_of(t);
    for (int64_t b = 0; b < numel; b += kChunk)
      out.push_back({int32_t(t), b, b + kChunk < numel ? b + kChunk : numel});
  }
  return out;
}

inline std::vector<Chunk> make_chunks(const MultiTensor& mt) {
  return make_chunks(mt.tensors.size(), [&](size_t t) { return mt.tensors[t].numel; });
}

}  // namespace ft
