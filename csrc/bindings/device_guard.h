// Makes a CUDA device current for the duration of a call (kernels, allocations are per device).
#pragma once
#if defined(FT_WITH_CUDA)
#include <cuda_runtime.h>

namespace ft::bind {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous_);
    restore_ = previous_ != device;
    if (restore_) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

}  // namespace ft::bind
#endif
