// Host entry points of the CUDA layer and RMS norm (ln_kernels.cu) and group and instance norm
// (gn_kernels.cu) kernels; argument structs: core/norm_args.h, the same as the CPU kernels'.
#pragma once
#include "core/norm_args.h"
#include "cuda/kernels.h"

namespace ft::cuda {

void ln_forward(const LnForwardArgs& a, Stream st);
void ln_backward(const LnBackwardArgs& a, Stream st);
void gn_forward(const GnForwardArgs& a, Stream st);
void gn_backward(const GnBackwardArgs& a, Stream st);

}  // namespace ft::cuda
