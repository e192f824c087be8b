#pragma once
// One check macro per library: every CUDA runtime call and kernel launch goes through
// FP8NN_CUDA_CHECK, every cuBLAS(Lt) call through FP8NN_CUBLAS_CHECK. Failures throw
// std::runtime_error naming the call, file and line; src/ turns them into c10::Error.

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace fp8nn::kernels {

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                          int line) {
  throw std::runtime_error(std::string("fp8nn: CUDA error '") + cudaGetErrorString(status) +
                           "' from " + call + " at " + file + ":" + std::to_string(line));
}

}  // namespace fp8nn::kernels

#define FP8NN_CUDA_CHECK(call)                                                  \
  do {                                                                          \
    const cudaError_t fp8nn_status_ = (call);                                   \
    if (fp8nn_status_ != cudaSuccess) {                                         \
      ::fp8nn::kernels::throw_cuda_error(fp8nn_status_, #call, __FILE__, __LINE__); \
    }                                                                           \
  } while (0)

// After a <<<...>>> launch: configuration errors show up here, not at the launch.
#define FP8NN_CUDA_CHECK_LAUNCH() FP8NN_CUDA_CHECK(cudaGetLastError())
