// Error checking for CUDA runtime calls and kernel launches: failures become C++ exceptions.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ft::cuda {

inline void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fusedtrain CUDA error in ") + what + " (" + file + ":" +
                             std::to_string(line) + "): " + cudaGetErrorString(err));
}

}  // namespace ft::cuda

#define FT_CUDA_CHECK(expr) ::ft::cuda::check((expr), #expr, __FILE__, __LINE__)
// After every launch: a bad configuration is reported here, not at the next unrelated call.
#define FT_CUDA_CHECK_LAUNCH(name) ::ft::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)
