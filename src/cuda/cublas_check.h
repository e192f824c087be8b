#pragma once
// FP8NN_CUBLAS_CHECK: every cuBLAS(Lt) call in src/ goes through it. A failure raises a c10::Error
// naming the call, cuBLASLt's status string and the place, like FP8NN_CUDA_CHECK does for CUDA.

#include <c10/util/Exception.h>
#include <cublasLt.h>

namespace fp8nn::cuda {

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "fp8nn: cuBLASLt error ",
              cublasLtGetStatusString(status), " (", static_cast<int>(status), ") from ", call,
              " at ", file, ":", line);
}

}  // namespace fp8nn::cuda

#define FP8NN_CUBLAS_CHECK(call) ::fp8nn::cuda::check_cublas((call), #call, __FILE__, __LINE__)
