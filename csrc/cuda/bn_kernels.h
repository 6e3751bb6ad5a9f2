// Host entry points of the CUDA batch-norm kernels (same argument structs as the CPU kernels).
#pragma once
#include "core/norm_args.h"
#include "cuda/kernels.h"

namespace ft::cuda {

void bn_forward(const BnForwardArgs& a, Stream st);
void bn_backward(const BnBackwardArgs& a, Stream st);
void bn_stats(const BnStatsArgs& a, Stream st);
void bn_update_running(const BnRunningArgs& a, Stream st);

}  // namespace ft::cuda
