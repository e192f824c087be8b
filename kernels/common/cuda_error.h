#pragma once
// How launchers in kernels/ report errors: they never throw; every launcher and query returns the
// first failing cudaError_t (a launch returns cudaGetLastError(), which is where configuration
// errors show up), and the host side turns it into a c10::Error with FP8NN_CUDA_CHECK
// (src/common/error.h). Inside a launcher, FP8NN_KERNELS_TRY passes a failure on to the caller.

#include <cuda_runtime.h>

#define FP8NN_KERNELS_TRY(call)                       \
  do {                                                \
    const cudaError_t fp8nn_kernels_status_ = (call); \
    if (fp8nn_kernels_status_ != cudaSuccess) {       \
      return fp8nn_kernels_status_;                   \
    }                                                 \
  } while (0)
