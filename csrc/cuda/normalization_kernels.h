// Host entry points of the CUDA normalization kernels: batch norm (bn_kernels.cu), layer and RMS
// norm (ln_kernels.cu), group and instance norm (gn_kernels.cu); their argument structs are
// core/norm_args.h, the same as the CPU kernels'.
#pragma once
#include "core/norm_args.h"
#include "cuda/kernels.h"

namespace ft::cuda {

void bn_forward(const BnForwardArgs& a, Stream st);
void bn_backward(const BnBackwardArgs& a, Stream st);
void bn_stats(const BnStatsArgs& a, Stream st);
void bn_update_running(const BnRunningArgs& a, Stream st);

void ln_forward(const LnForwardArgs& a, Stream st);
void ln_backward(const LnBackwardArgs& a, Stream st);
void gn_forward(const GnForwardArgs& a, Stream st);
void gn_backward(const GnBackwardArgs& a, Stream st);

}  // namespace ft::cuda
