#pragma once
// The FP8 product on cuBLASLt: out[M, N] = (scale_a * a[M, K]) @ (scale_b * b[N, K])^T (+ bias[N]),
// a and b row-major with K contiguous (the TN form Hopper's FP8 tensor cores need), fp32 compute,
// output bf16/fp16/fp32. One cuBLASLt handle per device, heuristics cached per problem, the
// workspace from the caching allocator, the current stream; no host synchronisation.
//
// This is the bare tensor-core call: the caller (scaled_mm_cuda.cpp) pads and converts so that the
// preconditions below hold, and falls back to another path when this returns false.

#include <torch/types.h>

#include <c10/util/Optional.h>

namespace fp8nn::cuda {

/// How an operand's scale_inv applies: one fp32 value for the whole tensor, or one fp32 value per
/// row (cuBLASLt's OUTER_VEC_32F mode; both operands must then use it).
enum class ScaleMode { PerTensor, PerRow };

/// One FP8 operand: data [rows, K] contiguous (e4m3fn or e5m2, 16-byte aligned); scale_inv fp32 on
/// the same device, 1 element (PerTensor) or `rows` contiguous elements, 16-byte aligned (PerRow).
struct FP8Operand {
  const torch::Tensor& data;
  const torch::Tensor& scale_inv;
  ScaleMode mode;
};

/// Runs the product into `out` ([M, N] contiguous, bf16/fp16/fp32, on a's device) on the current
/// stream. Preconditions (asserted): K % 16 == 0, N % 16 == 0, not e5m2 x e5m2, both operands in
/// the same ScaleMode; bias, when given, is [N] contiguous of out's dtype and out is not fp32
/// (for fp32 output cuBLASLt's FP8 epilogue wants a bf16 bias, which would round an fp32 one; the
/// caller adds that bias itself). Returns false, writing
/// nothing, when cuBLASLt does not support the problem on this device (no algorithm,
/// CUBLAS_STATUS_NOT_SUPPORTED, or a configuration it rejects as invalid); other cuBLASLt failures
/// raise c10::Error.
bool cublaslt_scaled_mm(const FP8Operand& a, const FP8Operand& b,
                        const c10::optional<torch::Tensor>& bias, torch::Tensor& out,
                        bool fast_accumulation);

/// Autotuning of the algorithm per problem (see fp8nn::functional::set_gemm_autotuning).
void set_gemm_autotuning(bool enabled);
bool gemm_autotuning();

}  // namespace fp8nn::cuda
