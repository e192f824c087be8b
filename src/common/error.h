#pragma once
// The one way host code checks CUDA and cuBLASLt: FP8NN_CUDA_CHECK for every CUDA runtime call and
// every kernels/ launcher (they return cudaError_t), FP8NN_CUBLAS_CHECK for every cuBLASLt call. A
// failure raises c10::Error naming the library, the call, the error's name and string, and the
// file:line of the check. Included by CUDA host code only (src/*/cuda/).

#include <c10/util/Exception.h>
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace fp8nn::detail {

/// Throws c10::Error: "fp8nn: <library> error <name> (<string>) from <call> at <file>:<line>",
/// with the check's place as the error's source location.
[[noreturn]] inline void throw_library_error(const char* library, const char* name,
                                             const char* what, const char* call,
                                             const char* function, const char* file, int line) {
  throw c10::Error(c10::SourceLocation{function, file, static_cast<uint32_t>(line)},
                   std::string("fp8nn: ") + library + " error " + name + " (" + what + ") from " +
                       call + " at " + file + ":" + std::to_string(line));
}

inline void check_cuda(cudaError_t status, const char* call, const char* function, const char* file,
                       int line) {
  if (status != cudaSuccess) {
    throw_library_error("CUDA", cudaGetErrorName(status), cudaGetErrorString(status), call,
                        function, file, line);
  }
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* function,
                         const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw_library_error("cuBLASLt", cublasLtGetStatusName(status), cublasLtGetStatusString(status),
                        call, function, file, line);
  }
}

}  // namespace fp8nn::detail

#define FP8NN_CUDA_CHECK(call) \
  ::fp8nn::detail::check_cuda((call), #call, __func__, __FILE__, __LINE__)
#define FP8NN_CUBLAS_CHECK(call) \
  ::fp8nn::detail::check_cublas((call), #call, __func__, __FILE__, __LINE__)
