#pragma once
// The FP8 linear layers as functions (DESIGN.md §1), with their gradients through
// torch::autograd::Function. The modules in linear.h are a few lines around these.
//
//   y[..., out] = x[..., in] W[out, in]^T + b[out]
// x: fp32/fp16/bf16 with at least 2 dimensions; W and b: fp32/fp16/bf16 (high-precision master
// copies), each dtype independent of the others (both operands become FP8 anyway). y comes back in
// x's dtype; gradients in the dtype of the tensor they belong to.
// Nothing here synchronises with the host unless check_finite is on.

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace fp8nn {

/// The research layer's group size table: G(f) = min(4096, max(64, next_pow2(f))), f > 0.
int64_t default_group_size(int64_t features);

namespace functional {

/// Options shared by linear_fp8_global and linear_fp8_mixed. New knobs (e.g. fast accumulation)
/// join here, so existing calls keep compiling.
struct LinearFP8FuncOptions {
  /// Who is calling, for error messages (e.g. "fp8nn::LinearFP8Global"); empty: the function name.
  TORCH_ARG(std::string, name);
  /// Raise a c10::ValueError naming the layer when x or W (forward) or the output gradient
  /// (backward) holds NaN or Inf, instead of letting it propagate. Synchronises with the host
  /// at each check: a debugging aid, off by default.
  TORCH_ARG(bool, check_finite) = false;
};

/// Global recipe: x and W per-tensor E4M3, dy per-tensor E5M2; y, dx = dy W and dW = dy^T x are
/// all FP8 products of the quantized copies (only those are kept for backward). bias may be
/// undefined; its gradient is dy summed over rows in fp32.
torch::Tensor linear_fp8_global(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias = {},
                                const LinearFP8FuncOptions& options = {});

/// Mixed recipe: x E4M3 with one scale per G_in consecutive elements of a row, W per-tensor
/// E4M3; dx = dy W with dy E5M2 per G_out elements of a row; dW = dy^T x in high precision (x's
/// dtype, from the unquantized x and dy). G_in, G_out > 0 (see default_group_size).
torch::Tensor linear_fp8_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, int64_t G_in, int64_t G_out,
                               const LinearFP8FuncOptions& options = {});

}  // namespace functional
}  // namespace fp8nn
