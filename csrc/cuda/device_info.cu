// CUDA device enumeration; the module imports fine on machines without a driver or GPU.
#include <cuda_runtime.h>

#include "cuda/device_info.h"

namespace ft::cuda {

bool compiled() { return true; }

std::vector<std::string> device_names() {
  std::vector<std::string> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error for later calls
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) out.emplace_back(prop.name);
  }
  return out;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace ft::cuda
