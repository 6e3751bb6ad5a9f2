// What the bindings call on the CUDA side in builds without CUDA: device_info.h, and the
// pointer query of kernels.h (every array is then host memory).
#include "cuda/device_info.h"
#include "cuda/kernels.h"

namespace ft::cuda {

bool compiled() { return false; }
std::vector<std::string> device_names() { return {}; }
std::string device_error() { return "this build of fusedtrain has no CUDA kernels"; }
int runtime_version() { return 0; }

}  // namespace ft::cuda

namespace ft::cuda {
int pointer_device(const void*) { return -1; }
}  // namespace ft::cuda
