#pragma once
// FP8 quantization: the one definition every device and layer uses (docs/design.md).
//
// For a set S of values (a whole tensor, a group of G consecutive elements of one row, or a square
// block of 128 x 128 elements of a 2-d tensor):
//   amax = max |v| over S (fp32);  scale = fmt_max / amax, 1 when amax == 0, FLT_MAX where the
//   division overflows;  q = fp8_rne(clamp(v * scale, -fmt_max, fmt_max)) in fp32;
//   dequantized value = q * scale_inv with scale_inv = 1 / scale.
// NaN/Inf in S are never turned into finite results.

#include <torch/types.h>

#include <cstdint>

namespace fp8nn {

/// The two FP8 formats: E4M3 (max 448) for activations and weights, E5M2 (max 57344) for gradients.
enum class Format { E4M3, E5M2 };

/// libtorch dtype of a format: at::kFloat8_e4m3fn or at::kFloat8_e5m2.
at::ScalarType dtype_of(Format format);
/// Largest finite value of a format (448 or 57344).
float max_of(Format format);
/// "e4m3" / "e5m2".
const char* name_of(Format format);

/// Rows and columns of the square blocks of quantize_per_block.
constexpr int64_t kBlockSize = 128;

/// An FP8 tensor with its fp32 dequantization factors.
///  - per tensor (group_size == 0): scale_inv is a 0-d fp32 tensor;
///  - per group (group_size == G, group_rows == 1): the tensor is seen as rows x cols (cols = last
///    dim, rows = the product of the others) and scale_inv is [rows, ceil(cols / G)]; groups never
///    straddle rows;
///  - per block (group_size == G, group_rows == R > 1; 2-d data): blocks of R rows x G columns
///    share a scale, scale_inv is [ceil(rows / R), ceil(cols / G)] (the last row and column of
///    blocks shorter where R or G does not divide the shape). quantize_per_block makes R = G =
///    kBlockSize.
struct QuantizedTensor {
  torch::Tensor data;       ///< same shape as the input, dtype_of(format)
  torch::Tensor scale_inv;  ///< fp32, on data's device
  Format format = Format::E4M3;
  int64_t group_size = 0;  ///< 0: one scale for the whole tensor
  int64_t group_rows = 1;  ///< rows that share a group's scale: 1, or a block's height
};

/// A quantized 2-d tensor and its transpose: a forward operand of the FP8 products and the copy the
/// backward products take (they need K-major operands). Per tensor the two share one scale_inv
/// tensor; per block the transposed copy's scale_inv is the transpose of the other's.
struct QuantizedPair {
  QuantizedTensor quantized;   ///< [rows, cols]
  QuantizedTensor transposed;  ///< [cols, rows], contiguous
};

namespace functional {

/// How the per-group and per-block quantizers round a scale: Exact keeps fmt_max / amax;
/// PowerOfTwo takes the largest power of two not above it (OperandRecipe::power_of_two_scales),
/// so that scaling and dequantizing multiply without rounding.
enum class ScaleRounding { Exact, PowerOfTwo };

/// Quantizes `x` (fp32/fp16/bf16, any shape, any device) with one scale for the whole tensor.
QuantizedTensor quantize(const torch::Tensor& x, Format format);

/// As quantize(x, format) with amax already known (a one-element fp32 tensor on x's device, e.g.
/// from the epilogue of the GEMM that produced x): on CUDA the amax pass is skipped.
QuantizedTensor quantize(const torch::Tensor& x, Format format, const torch::Tensor& amax);

/// Quantizes `x` (at least 1-d) with one scale per group of `group_size` consecutive elements of
/// each row (last dimension); a row shorter than the group is one group, a longer row ends with a
/// shorter group.
QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size);
QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size,
                                   ScaleRounding rounding);

/// quantize(x2d) and its transpose in one call, for a 2-d `x2d`; equal bit for bit to
/// {quantize(x2d), transpose(quantize(x2d))}. On CUDA: an amax pass, then one pass that writes
/// both.
QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format);

/// As quantize_with_transpose(x2d, format) with amax already known (see quantize above): on CUDA
/// one pass over x2d in all.
QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax);

/// Quantizes the 2-d `x2d` with one scale per square block of kBlockSize x kBlockSize elements
/// (DeepSeek-V3's weight scaling): each block quantized as a tensor of its own would be.
QuantizedTensor quantize_per_block(const torch::Tensor& x2d, Format format);
QuantizedTensor quantize_per_block(const torch::Tensor& x2d, Format format, ScaleRounding rounding);

/// quantize_per_block(x2d) and its transpose from one pass (on CUDA) over x2d; equal bit for bit
/// to {quantize_per_block(x2d), transpose(quantize_per_block(x2d))}, and the transposed copy to
/// quantize_per_block(x2d.t()) (a square block has the same amax either way).
QuantizedPair quantize_per_block_with_transpose(const torch::Tensor& x2d, Format format);
QuantizedPair quantize_per_block_with_transpose(const torch::Tensor& x2d, Format format,
                                                ScaleRounding rounding);

/// quantize_per_group(x2d, format, group_size) and, as `transposed`, quantize_per_group(x2d.t(),
/// format, group_size): each column of x2d quantized per group of `group_size` rows, a different
/// quantization (not a transpose of the first copy); equal bit for bit to those two calls. The
/// blockwise recipe's activations take both: the first for the forward product, the second for
/// the weight gradient. On CUDA one pass over x2d for group_size == kBlockSize.
QuantizedPair quantize_per_group_with_transpose(const torch::Tensor& x2d, Format format,
                                                int64_t group_size,
                                                ScaleRounding rounding = ScaleRounding::Exact);

/// data * scale_inv in fp32, returned as `dtype` (fp32/fp16/bf16).
torch::Tensor dequantize(const QuantizedTensor& q, at::ScalarType dtype = at::kFloat);

/// The transpose of a quantized 2-d tensor whose scales transpose with it: per tensor (same
/// scale_inv) or per square block (group_rows == group_size; scale_inv transposed). [R, C] ->
/// [C, R], contiguous. (FP8 products take K-major operands; backward products need the forward
/// copies transposed.)
QuantizedTensor transpose(const QuantizedTensor& q);

}  // namespace functional
}  // namespace fp8nn
