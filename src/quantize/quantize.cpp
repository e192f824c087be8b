// The functional quantize API (docs/design.md, Quantization): argument checks, then CUDA tensors
// to the kernels (quantize/cuda/) when built with CUDA, everything else to the reference
// (quantize_reference.cpp). Nothing here calls back from either.

#include <fp8nn/quantize.h>

#include <ATen/ATen.h>

#include "quantize/quantize_detail.h"
#include "quantize/quantize_reference.h"

#ifdef FP8NN_WITH_CUDA
#include "quantize/cuda/quantize_cuda.h"
#endif

namespace fp8nn {
namespace {

void check_input(const torch::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.defined(), "fp8nn::", op,
                    ": expected a defined tensor, got an undefined one");
  const auto dtype = x.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "fp8nn::", op, ": expected x of dtype float, half or bfloat16, got ", dtype);
}

void check_amax(const torch::Tensor& amax, const torch::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(amax.defined(), "fp8nn::", op, ": expected a defined amax");
  TORCH_CHECK_VALUE(amax.numel() == 1, "fp8nn::", op, ": expected a one-element amax, got shape ",
                    amax.sizes());
  TORCH_CHECK_TYPE(amax.scalar_type() == at::kFloat, "fp8nn::", op, ": expected a float amax, got ",
                   amax.scalar_type());
  TORCH_CHECK(amax.device() == x.device(), "fp8nn::", op, ": expected amax on ", x.device(),
              ", got ", amax.device());
}

// The monitor's counts come from the engine: a wrong tensor here is a bug in fp8nn.
void check_counts(const torch::Tensor& counts, const torch::Tensor& x) {
  TORCH_INTERNAL_ASSERT(!counts.defined() ||
                        (counts.scalar_type() == at::kLong && counts.numel() == 3 &&
                         counts.is_contiguous() && counts.device() == x.device()));
}

}  // namespace

namespace detail {

QuantizedTensor quantize(const torch::Tensor& x, Format format, const torch::Tensor& amax,
                         const torch::Tensor& counts) {
  check_input(x, "quantize");
  if (amax.defined()) check_amax(amax, x, "quantize");
  check_counts(counts, x);
#ifdef FP8NN_WITH_CUDA
  if (x.is_cuda()) return cuda::quantize(x, format, /*group_size=*/0, amax, counts);
#endif
  return reference::quantize(x, format, /*group_size=*/0, amax, counts);
}

QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size,
                                   const torch::Tensor& counts, bool power_of_two) {
  check_input(x, "quantize_per_group");
  TORCH_CHECK_VALUE(x.dim() >= 1,
                    "fp8nn::quantize_per_group: expected x with at least 1 dimension, "
                    "got a ",
                    x.dim(), "-d tensor");
  TORCH_CHECK_VALUE(group_size > 0, "fp8nn::quantize_per_group: expected group_size > 0, got ",
                    group_size);
  check_counts(counts, x);
#ifdef FP8NN_WITH_CUDA
  if (x.is_cuda()) {
    return cuda::quantize(x, format, group_size, torch::Tensor(), counts, nullptr, power_of_two);
  }
#endif
  return reference::quantize(x, format, group_size, torch::Tensor(), counts, nullptr, power_of_two);
}

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax, const torch::Tensor& counts,
                                      torch::Tensor* column_sums) {
  check_input(x2d, "quantize_with_transpose");
  TORCH_CHECK_VALUE(x2d.dim() == 2, "fp8nn::quantize_with_transpose: expected a 2-d tensor, got a ",
                    x2d.dim(), "-d tensor");
  if (amax.defined()) check_amax(amax, x2d, "quantize_with_transpose");
  check_counts(counts, x2d);
#ifdef FP8NN_WITH_CUDA
  if (x2d.is_cuda()) return cuda::quantize_with_transpose(x2d, format, amax, counts, column_sums);
#endif
  if (column_sums != nullptr) *column_sums = x2d.sum(0, /*keepdim=*/false, at::kFloat);
  auto quantized = reference::quantize(x2d, format, /*group_size=*/0, amax, counts);
  auto transposed = functional::transpose(quantized);
  return {std::move(quantized), std::move(transposed)};
}

QuantizedPair quantize_per_block(const torch::Tensor& x2d, Format format, bool with_transpose,
                                 const torch::Tensor& counts, bool power_of_two, bool row_copy) {
  check_input(x2d, "quantize_per_block");
  TORCH_CHECK_VALUE(x2d.dim() == 2, "fp8nn::quantize_per_block: expected a 2-d tensor, got a ",
                    x2d.dim(), "-d tensor");
  check_counts(counts, x2d);
#ifdef FP8NN_WITH_CUDA
  if (x2d.is_cuda()) {
    return cuda::quantize_per_block(x2d, format, with_transpose, counts, power_of_two,
                                    row_copy || !with_transpose);
  }
#endif
  QuantizedPair q;
  q.quantized = reference::quantize_per_block(x2d, format, counts, power_of_two);
  if (with_transpose) q.transposed = functional::transpose(q.quantized);
  return q;
}

QuantizedPair quantize_per_group_with_transpose(const torch::Tensor& x2d, Format format,
                                                int64_t group_size, const torch::Tensor& counts,
                                                bool power_of_two) {
  check_input(x2d, "quantize_per_group_with_transpose");
  TORCH_CHECK_VALUE(x2d.dim() == 2,
                    "fp8nn::quantize_per_group_with_transpose: expected a 2-d tensor, got a ",
                    x2d.dim(), "-d tensor");
  TORCH_CHECK_VALUE(group_size > 0,
                    "fp8nn::quantize_per_group_with_transpose: expected group_size > 0, got ",
                    group_size);
  check_counts(counts, x2d);
#ifdef FP8NN_WITH_CUDA
  // (An empty x takes the two calls below, whose scales have the shapes quantize_per_group gives.)
  if (x2d.is_cuda() && group_size == kBlockSize && x2d.numel() > 0) {
    return cuda::quantize_per_group_with_transpose(x2d, format, counts, power_of_two);
  }
#endif
  QuantizedPair q;
  q.quantized = quantize_per_group(x2d, format, group_size, counts, power_of_two);
  q.transposed =
      quantize_per_group(x2d.t().contiguous(), format, group_size, torch::Tensor(), power_of_two);
  return q;
}

std::vector<int64_t> group_scale_shape(const QuantizedTensor& q) {
  const int64_t cols = q.data.dim() == 0 ? 1 : q.data.size(-1);
  const int64_t rows = cols == 0 ? 0 : q.data.numel() / cols;
  const int64_t groups = (cols + q.group_size - 1) / q.group_size;
  return {(rows + q.group_rows - 1) / q.group_rows, groups};
}

QuantizedPair quantize_delayed(const torch::Tensor& x2d, Format format, bool with_transpose,
                               const DelayedTensors& delayed, const torch::Tensor& counts) {
  check_input(x2d, "quantize");
  TORCH_INTERNAL_ASSERT(!with_transpose || x2d.dim() == 2);
  TORCH_INTERNAL_ASSERT(delayed.history.device() == x2d.device() &&
                        delayed.history.scalar_type() == at::kFloat && delayed.scale.numel() == 1 &&
                        delayed.counts.numel() == 3);
  check_counts(counts, x2d);
#ifdef FP8NN_WITH_CUDA
  if (x2d.is_cuda()) return cuda::quantize_delayed(x2d, format, with_transpose, delayed, counts);
#endif
  return reference::quantize_delayed(x2d, format, with_transpose, delayed, counts);
}

QuantizedTensor quantize_returning_amax(const torch::Tensor& x, Format format,
                                        const torch::Tensor& counts, torch::Tensor* amax_out) {
  check_input(x, "quantize");
  check_counts(counts, x);
#ifdef FP8NN_WITH_CUDA
  if (x.is_cuda())
    return cuda::quantize(x, format, /*group_size=*/0, torch::Tensor(), counts, amax_out);
#endif
  return reference::quantize(x, format, /*group_size=*/0, torch::Tensor(), counts, amax_out);
}

QuantizedTensor quantize_transposed(const torch::Tensor& x2d, Format format,
                                    const torch::Tensor& amax) {
  check_input(x2d, "quantize_with_transpose");
  TORCH_INTERNAL_ASSERT(x2d.dim() == 2 && amax.defined());
  check_amax(amax, x2d, "quantize_with_transpose");
#ifdef FP8NN_WITH_CUDA
  if (x2d.is_cuda()) return cuda::quantize_transposed(x2d, format, amax);
#endif
  const auto quantized = reference::quantize(x2d, format, /*group_size=*/0, amax, torch::Tensor());
  return functional::transpose(quantized);
}

}  // namespace detail

namespace functional {

QuantizedTensor quantize(const torch::Tensor& x, Format format) {
  return detail::quantize(x, format, torch::Tensor(), torch::Tensor());
}

QuantizedTensor quantize(const torch::Tensor& x, Format format, const torch::Tensor& amax) {
  TORCH_CHECK_VALUE(amax.defined(), "fp8nn::quantize: expected a defined amax");
  return detail::quantize(x, format, amax, torch::Tensor());
}

QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size) {
  return detail::quantize_per_group(x, format, group_size, torch::Tensor());
}

QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size,
                                   ScaleRounding rounding) {
  return detail::quantize_per_group(x, format, group_size, torch::Tensor(),
                                    rounding == ScaleRounding::PowerOfTwo);
}

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format) {
  return detail::quantize_with_transpose(x2d, format, torch::Tensor(), torch::Tensor());
}

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax) {
  TORCH_CHECK_VALUE(amax.defined(), "fp8nn::quantize_with_transpose: expected a defined amax");
  return detail::quantize_with_transpose(x2d, format, amax, torch::Tensor());
}

QuantizedTensor quantize_per_block(const torch::Tensor& x2d, Format format) {
  return quantize_per_block(x2d, format, ScaleRounding::Exact);
}

QuantizedTensor quantize_per_block(const torch::Tensor& x2d, Format format,
                                   ScaleRounding rounding) {
  return detail::quantize_per_block(x2d, format, /*with_transpose=*/false, torch::Tensor(),
                                    rounding == ScaleRounding::PowerOfTwo)
      .quantized;
}

QuantizedPair quantize_per_block_with_transpose(const torch::Tensor& x2d, Format format) {
  return quantize_per_block_with_transpose(x2d, format, ScaleRounding::Exact);
}

QuantizedPair quantize_per_block_with_transpose(const torch::Tensor& x2d, Format format,
                                                ScaleRounding rounding) {
  return detail::quantize_per_block(x2d, format, /*with_transpose=*/true, torch::Tensor(),
                                    rounding == ScaleRounding::PowerOfTwo);
}

QuantizedPair quantize_per_group_with_transpose(const torch::Tensor& x2d, Format format,
                                                int64_t group_size, ScaleRounding rounding) {
  return detail::quantize_per_group_with_transpose(x2d, format, group_size, torch::Tensor(),
                                                   rounding == ScaleRounding::PowerOfTwo);
}

torch::Tensor dequantize(const QuantizedTensor& q, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(q.data.defined() && q.scale_inv.defined(),
                    "fp8nn::dequantize: expected data and scale_inv to be defined");
  TORCH_CHECK_TYPE(q.data.scalar_type() == dtype_of(q.format),
                   "fp8nn::dequantize: expected data of ", "dtype ", dtype_of(q.format),
                   " for format ", name_of(q.format), ", got ", q.data.scalar_type());
  TORCH_CHECK_TYPE(q.scale_inv.scalar_type() == at::kFloat,
                   "fp8nn::dequantize: expected float scale_inv, got ", q.scale_inv.scalar_type());
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "fp8nn::dequantize: expected an output dtype of float, half or bfloat16, got ",
                   dtype);
  TORCH_CHECK_VALUE(q.group_rows >= 1, "fp8nn::dequantize: expected group_rows >= 1, got ",
                    q.group_rows);
  if (q.group_size == 0) {
    TORCH_CHECK_VALUE(q.group_rows == 1, "fp8nn::dequantize: per-tensor data (group_size 0) ",
                      "expects group_rows 1, got ", q.group_rows);
    TORCH_CHECK_VALUE(q.scale_inv.numel() == 1, "fp8nn::dequantize: per-tensor data expects one ",
                      "scale_inv, got ", q.scale_inv.numel());
  } else {
    TORCH_CHECK_VALUE(q.group_size > 0, "fp8nn::dequantize: expected group_size >= 0, got ",
                      q.group_size);
    TORCH_CHECK_VALUE(q.data.dim() >= 1, "fp8nn::dequantize: per-group data must be at least 1-d");
    TORCH_CHECK_VALUE(q.group_rows == 1 || q.data.dim() == 2,
                      "fp8nn::dequantize: per-block data (group_rows > 1) must be 2-d, got ",
                      q.data.dim(), "-d");
    const auto shape = detail::group_scale_shape(q);
    TORCH_CHECK_VALUE(q.scale_inv.sizes() == at::IntArrayRef(shape),
                      "fp8nn::dequantize: expected scale_inv of shape ", at::IntArrayRef(shape),
                      ", got ", q.scale_inv.sizes());
  }
#ifdef FP8NN_WITH_CUDA
  // Blocks have no dequantize kernel: the reference's ATen ops run on the device.
  if (q.data.is_cuda() && q.group_rows == 1) return cuda::dequantize(q, dtype);
#endif
  return reference::dequantize(q, dtype);
}

QuantizedTensor transpose(const QuantizedTensor& q) {
  TORCH_CHECK_VALUE(q.group_size == 0 || q.group_rows > 1,
                    "fp8nn::transpose: expected a tensor quantized per tensor or per block, got "
                    "one with groups of ",
                    q.group_size, " along its rows");
  TORCH_CHECK_VALUE(q.data.dim() == 2, "fp8nn::transpose: expected 2-d data, got ", q.data.dim(),
                    "-d");
  if (q.group_size == 0) return {q.data.t().contiguous(), q.scale_inv, q.format, 0};
  // A block of R rows x G columns becomes one of G rows x R columns.
  return {q.data.t().contiguous(), q.scale_inv.t().contiguous(), q.format, q.group_rows,
          q.group_size};
}

}  // namespace functional
}  // namespace fp8nn
