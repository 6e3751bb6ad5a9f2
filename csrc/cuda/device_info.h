// What the CUDA runtime sees: the build's CUDA support and the visible devices.
#pragma once
#include <string>
#include <vector>

namespace ft::cuda {

bool compiled();                         // this build has CUDA kernels
std::vector<std::string> device_names(); // empty without a driver or device
std::string device_error();              // why device_names() is empty ("" when it is not)
int runtime_version();                   // CUDA runtime version the build links, 0 without CUDA

}  // namespace ft::cuda
