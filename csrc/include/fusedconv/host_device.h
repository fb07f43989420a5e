// FUSEDCONV_HOST_DEVICE: functions compiled for both sides when nvcc builds the unit, plain
// inline C++ otherwise (the torch-free headers are shared with the CPU path and the C++ tests).
#pragma once

#if defined(__CUDACC__)
#define FUSEDCONV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSEDCONV_HOST_DEVICE inline
#endif
