// Host entry points of the CUDA kernels (no CUDA types: callable from the C++ bindings).
#pragma once
#include <cstdint>
#include <vector>

#include "core/macros.h"
#include "core/multi_tensor.h"
#include "math/optim_rules.h"

namespace ft::cuda {

// A 1-element array in device memory, read by the kernel (no host sync): AMP's grad_scale and
// found_inf, or a capturable lr / step.
struct DeviceScalar {
  const void* ptr = nullptr;
  DType dtype = DType::f32;
  FT_HD explicit operator bool() const { return ptr != nullptr; }
};

struct StepScalars {
  DeviceScalar grad_scale;  // grads are divided by it (multiplied with mt.grad_scale's inverse)
  DeviceScalar found_inf;   // nonzero: the kernel writes nothing
  DeviceScalar lr;          // overrides options.lr (capturable steps)
  DeviceScalar step;        // overrides options.step (capturable steps)
  DeviceScalar coef;        // overrides options.coef (Scale: the clip coefficient)
};

using Stream = void*;  // cudaStream_t

// One launch for all tensors of mt (Note [one launch per step]).
#define FT_DECLARE_CUDA_RULE(Rule, name) \
  void name(const MultiTensor& mt, const math::Rule::Options& o, const StepScalars& s, Stream st);
FT_ELEMENTWISE_RULES(FT_DECLARE_CUDA_RULE)
#undef FT_DECLARE_CUDA_RULE

// Per-chunk p-norm partials and their fixed-order combination, on the device.  Writes the norm
// (float64) to out_norm[0]; when clip is set also writes grad_scale_out[0] = scale / coef, the
// divisor that applies clipping inside an update kernel (and coef_out[0] = coef).
struct NormArrays {
  std::vector<const void*> data;
  std::vector<DType> dtypes;
  std::vector<int64_t> numel;
};
struct ClipOutputs {
  double max_norm = -1;          // < 0: no clipping outputs
  DeviceScalar grad_scale_in;    // optional AMP scale folded into the divisor
  double host_grad_scale = 1.0;
  float* divisor_out = nullptr;  // (grad_scale / coef)
  float* coef_out = nullptr;     // clip coefficient
};
void norm(const NormArrays& in, double p, double* out_norm, const ClipOutputs& clip, Stream st);

// Stream-ordered device scratch (Note [memory pool]): safe across streams and inside CUDA graphs.
void* stream_alloc(size_t bytes, Stream st);
void stream_free(void* p, Stream st);  // never throws

// Scratch that is freed in stream order when it goes out of scope, also when a later call throws.
class Scratch {
 public:
  Scratch(size_t bytes, Stream st) : st_(st), p_(stream_alloc(bytes, st)) {}
  ~Scratch() { stream_free(p_, st_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T> T* as() const { return static_cast<T*>(p_); }

 private:
  Stream st_;
  void* p_;
};

double read_back(const double* device_value, Stream st);  // synchronizes the stream

uint64_t launch_count();  // kernels launched by fusedtrain so far (tests: one per step)
uint64_t chunk_list_builds();  // size lists uploaded so far (Note [one launch per step])

int pointer_device(const void* p);  // device index of a CUDA pointer, -1 if not device memory

}  // namespace ft::cuda
