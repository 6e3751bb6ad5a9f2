// Host entry points of the CUDA batch-norm kernels (same argument structs as the CPU kernels).
#pragma once
#include "cpu/bn_kernels.h"
#include "cuda/kernels.h"

namespace ft::cuda {

void bn_forward(const cpu::BnForwardArgs& a, Stream st);
void bn_backward(const cpu::BnBackwardArgs& a, Stream st);
void bn_stats(const cpu::BnStatsArgs& a, Stream st);
void bn_update_running(const cpu::BnRunningArgs& a, Stream st);

}  // namespace ft::cuda
