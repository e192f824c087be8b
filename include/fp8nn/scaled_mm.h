#pragma once
// The FP8 matrix product every layer is built from, TN form (both operands K-major):
//   out[M, N] = dequantize(a)[M, K] @ dequantize(b)[N, K]^T (+ bias[N])
// a and b are each quantized per tensor, per group along K (their last dimension) or per block
// (quantize_per_block). CPU: the reference, fp32 products of the dequantized values. CUDA: FP8
// tensor cores; for now the reference on the device when an operand is scaled per block.

#include <fp8nn/quantize.h>  // QuantizedTensor; also functional::transpose

#include <c10/util/Optional.h>

namespace fp8nn::functional {

/// FP8 product in TN form. a: [M, K], b: [N, K] (2-d, same device); bias: [N] or none;
/// out_dtype: fp32/fp16/bf16. `fast_accumulation` lets the GPU accumulate FP8 partial sums with
/// fewer fp32 promotions (faster, looser); the CPU reference ignores it.
torch::Tensor scaled_mm(const QuantizedTensor& a, const QuantizedTensor& b,
                        const c10::optional<torch::Tensor>& bias, at::ScalarType out_dtype,
                        bool fast_accumulation = false);

/// cuBLASLt algorithm choice per problem shape. Off (the default): the heuristic's first choice,
/// no host synchronisation ever. On: the first call of each new problem (shape, types, alignment)
/// outside a CUDA-graph capture times up to 16 of the heuristic's candidates on its own operands
/// and keeps the fastest: one host synchronisation per new problem, then none. The environment
/// variable FP8NN_GEMM_AUTOTUNE=1 turns it on at start-up. Without CUDA this does nothing.
void set_gemm_autotuning(bool enabled);
/// Whether autotuning is on.
bool gemm_autotuning();

}  // namespace fp8nn::functional
