// CUDA device enumeration; the module imports fine on machines without a driver or GPU.
#include <cuda_runtime.h>

#include "cuda/device_info.h"

namespace ft::cuda {

bool compiled() { return true; }

std::vector<std::string> device_names() {
  std::vector<std::string> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the "no driver" error for later calls
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) out.emplace_back(prop.name);
  }
  return out;
}

std::string device_error() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    int driver = 0;
    cudaDriverGetVersion(&driver);
    return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err) +
           " (driver supports CUDA " + std::to_string(driver / 1000) + "." +
           std::to_string(driver % 1000 / 10) + ", this build's runtime is " +
           std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) + ")";
  }
  return count == 0 ? "no CUDA device visible" : "";
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace ft::cuda

