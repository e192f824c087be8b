#pragma once
// The one test oracle. docs/design.md's quantization written out from plain libtorch ops, one group
// column at a time, independently of the library's own CPU path (which it checks); exact fp64
// dequantization; the product of dequantized operands; the Global and Mixed linear layers,
// forward and backward, in fp64. Every test that needs a reference uses these; the tolerances of
// comparing against them are in tolerance.h.

#include <fp8nn/fp8nn.h>  // only the plain types Format, QuantizedTensor and Recipe

#include <torch/torch.h>

#include <cstdint>

namespace fp8nn::test {

using Fp8 = fp8nn::Format;

/// The largest finite value of a format: 448 (E4M3), 57344 (E5M2).
double format_max(Fp8 format);

/// The scale of a set of values whose amax is `amax`: format_max / amax in fp32, 1 where amax is 0
/// and FLT_MAX where the division overflows; with `power_of_two`, the largest power of two not
/// above that (frexp's exponent; 0 and NaN kept). Elementwise on an fp32 tensor of amaxes.
torch::Tensor scale_for(const torch::Tensor& amax, Fp8 format, bool power_of_two = false);
float scale_for(float amax, Fp8 format);

/// libtorch's own cast of values sharing `scale` (broadcast):
/// (values.float() * scale).clamp(-max, max).to(fp8), with infinite values left infinite (c10
/// makes them E4M3's NaN, E5M2's Inf, signed): the bits the library must produce.
torch::Tensor cast(const torch::Tensor& values, const torch::Tensor& scale, Fp8 format);
torch::Tensor cast(const torch::Tensor& values, float scale, Fp8 format);

/// A quantization as the library stores it: FP8 data in the input's shape, scale_inv = 1 / scale
/// in fp32: 0-d per tensor (group 0), [rows, groups] per group of `group` consecutive elements of
/// a row (rows: the product of the leading dims; the last group of a row may be shorter).
struct Quantized {
  torch::Tensor data, scale_inv;
  int64_t group = 0;
  int64_t group_rows = 1;  ///< rows sharing a scale: 1, or a block's height (quantize_blocks)
};

/// x (any device, dtype and shape) quantized on the CPU, per tensor or per group (power-of-two
/// scales: see scale_for).
Quantized quantize(const torch::Tensor& x, Fp8 format, int64_t group = 0,
                   bool power_of_two = false);

/// x2d [rows, cols] quantized on the CPU with one scale per square block of `block` x `block`
/// elements (the last row and column of blocks shorter): each block quantized as a tensor of its
/// own, one block at a time; scale_inv [ceil(rows / block), ceil(cols / block)].
Quantized quantize_blocks(const torch::Tensor& x2d, Fp8 format, int64_t block,
                          bool power_of_two = false);

/// data * scale_inv in fp64 on the CPU (exact: 4 + 24 significant bits), as [rows, cols]; with
/// group_rows > 1, each scale covers group_rows rows of its group.
torch::Tensor dequantize(const torch::Tensor& data, const torch::Tensor& scale_inv, int64_t group,
                         int64_t group_rows = 1);
torch::Tensor dequantize(const Quantized& q);
torch::Tensor dequantize(const fp8nn::QuantizedTensor& q);

/// x2d [rows, cols] quantized with one scale per `group` consecutive columns of a row (0: one
/// scale for the whole tensor), returned dequantized in fp64 on the CPU.
torch::Tensor fake_quantize(const torch::Tensor& x2d, Fp8 format, int64_t group,
                            bool power_of_two = false);

/// A tensor as fp64 on the CPU.
torch::Tensor f64(const torch::Tensor& t);

/// One result in fp64 with the magnitude its fp32 accumulation error scales with (sum of |terms|).
struct Reference {
  torch::Tensor value;
  torch::Tensor magnitude;
};

/// a [M, K] x b [N, K]^T in fp64, with |a| x |b|^T.
Reference product(const torch::Tensor& a, const torch::Tensor& b);

/// The forward and the three gradients of a layer, for x [M, K], weight [N, K], bias [N] (or
/// undefined) and output gradient dy [M, N].
struct LinearReference {
  Reference y, dx, dw, db;
};

/// Any runnable recipe: each operand fake-quantized as the recipe says (a group size of 0 takes
/// default_group_size of the row: in_features for x, out_features for dy; a block weight per
/// 128x128 block), FP8 products from those copies, high-precision products from the unquantized
/// tensors. The FP8 weight gradient takes x^T and dy^T quantized with their operand's groups
/// along the tokens.
LinearReference emulate(const fp8nn::Recipe& recipe, const torch::Tensor& x,
                        const torch::Tensor& weight, const torch::Tensor& bias,
                        const torch::Tensor& dy);

/// Global: per-tensor E4M3 x and W, per-tensor E5M2 dy, every product from those copies.
LinearReference emulate_global(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& dy);

/// Mixed: E4M3 x per G_in columns, per-tensor E4M3 W, E5M2 dy per G_out columns for dx; dW from
/// the unquantized x and dy.
LinearReference emulate_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                              const torch::Tensor& bias, const torch::Tensor& dy, int64_t G_in,
                              int64_t G_out);

}  // namespace fp8nn::test
