// Portability macros shared by host (CPU) and device (CUDA) code.
#pragma once

#if defined(__CUDACC__)
#define FT_HD __host__ __device__
#define FT_INLINE __forceinline__
#else
#define FT_HD
#define FT_INLINE inline __attribute__((always_inline))
#endif
