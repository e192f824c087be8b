#pragma once
// functional::scaled_mm for CUDA tensors: chooses between cuBLASLt's FP8 tensor cores (directly,
// or on zero-padded copies), the hand-written group-scaled kernels and the reference product on
// the device.

#include <fp8nn/quantize.h>

#include <c10/util/Optional.h>

#include <cstdint>

namespace fp8nn::functional {

/// scaled_mm on CUDA tensors (arguments already checked by scaled_mm). No host synchronisation.
torch::Tensor scaled_mm_cuda(const QuantizedTensor& a, const QuantizedTensor& b,
                             const c10::optional<torch::Tensor>& bias, at::ScalarType out_dtype,
                             bool fast_accumulation);

/// The ways scaled_mm_cuda computes a product (scaled_mm_cuda.cpp explains when it takes each).
enum class ScaledMmPath {
  CublasLt,
  CublasLtKSplit,
  GroupGemmSm90,
  GroupGemmMma,
  Reference,
  CublasLtBlock
};
inline constexpr int kScaledMmPathCount = 6;

/// How many scaled_mm_cuda calls on the calling thread have taken `path`, so that tests can check
/// the path of a product and not only its numbers. A call counts once, under the path of its
/// product (also when it adds a bias of another dtype afterwards).
int64_t scaled_mm_path_count(ScaledMmPath path);

/// "cublaslt", "cublaslt_k_split", "group_gemm_sm90", "group_gemm_mma", "reference" or
/// "cublaslt_block".
const char* path_name(ScaledMmPath path);

}  // namespace fp8nn::functional
