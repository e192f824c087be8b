// The reference quantization of DESIGN.md §1, written with libtorch ops so that it runs on every
// device; the CUDA kernels in kernels/ must agree with it bit for bit.

#include <fp8nn/quantize.h>
#include <fp8nn/scaled_mm.h>

#include <ATen/ATen.h>

#include <cfloat>

#ifdef FP8NN_WITH_CUDA
#include "cuda/quantize_cuda.h"
#endif

namespace fp8nn {

at::ScalarType dtype_of(Format format) {
  return format == Format::E4M3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2;
}

float max_of(Format format) { return format == Format::E4M3 ? 448.0f : 57344.0f; }

const char* name_of(Format format) { return format == Format::E4M3 ? "e4m3" : "e5m2"; }

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

// scale = fmt_max / amax; 1 where amax == 0; FLT_MAX where the division overflows. NaN amax gives
// a NaN scale and amax = Inf a zero scale, so non-finite input never becomes finite output.
torch::Tensor scale_from_amax(const torch::Tensor& amax, Format format) {
  auto scale = max_of(format) / amax;
  scale.masked_fill_(torch::isposinf(scale), FLT_MAX);
  scale.masked_fill_(amax == 0, 1.0);
  return scale;
}

torch::Tensor cast(const torch::Tensor& x_float, const torch::Tensor& scale, Format format) {
  const double fmt_max = max_of(format);
  return (x_float * scale).clamp_(-fmt_max, fmt_max).to(dtype_of(format));
}

// x as [rows, cols] fp32, padded with zeros to whole groups: [rows, groups, group_size].
torch::Tensor as_groups(const torch::Tensor& x_float, int64_t group_size) {
  const int64_t cols = x_float.size(-1);
  const int64_t rows = cols == 0 ? 0 : x_float.numel() / cols;
  const int64_t groups = (cols + group_size - 1) / group_size;
  auto matrix = x_float.reshape({rows, cols});
  if (groups * group_size != cols) {
    matrix = at::constant_pad_nd(matrix, {0, groups * group_size - cols}, 0.0);
  }
  return matrix.view({rows, groups, group_size});
}

// Inverse of as_groups: [rows, groups, group_size] back to `sizes` (cols = sizes.back()).
torch::Tensor from_groups(const torch::Tensor& grouped, at::IntArrayRef sizes) {
  const int64_t rows = grouped.size(0);
  auto matrix = grouped.reshape({rows, grouped.size(1) * grouped.size(2)});
  return matrix.narrow(1, 0, sizes.back()).contiguous().view(sizes);
}

}  // namespace

namespace functional {

QuantizedTensor quantize(const torch::Tensor& x, Format format) {
  check_input(x, "quantize");
#ifdef FP8NN_WITH_CUDA
  if (x.is_cuda()) return cuda::quantize(x, format, torch::Tensor());
#endif
  const auto x_float = x.to(at::kFloat);
  const auto amax = x.numel() == 0 ? torch::zeros({}, x_float.options()) : x_float.abs().amax();
  const auto scale = scale_from_amax(amax, format);
  return {cast(x_float, scale, format), scale.reciprocal(), format, 0};
}

QuantizedTensor quantize(const torch::Tensor& x, Format format, const torch::Tensor& amax) {
  check_input(x, "quantize");
  check_amax(amax, x, "quantize");
#ifdef FP8NN_WITH_CUDA
  if (x.is_cuda()) return cuda::quantize(x, format, amax);
#endif
  const auto scale = scale_from_amax(amax.reshape({}), format);
  return {cast(x.to(at::kFloat), scale, format), scale.reciprocal(), format, 0};
}

QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size) {
  check_input(x, "quantize_per_group");
  TORCH_CHECK_VALUE(x.dim() >= 1,
                    "fp8nn::quantize_per_group: expected x with at least 1 dimension, "
                    "got a ",
                    x.dim(), "-d tensor");
  TORCH_CHECK_VALUE(group_size > 0, "fp8nn::quantize_per_group: expected group_size > 0, got ",
                    group_size);
#ifdef FP8NN_WITH_CUDA
  if (x.is_cuda()) return cuda::quantize_per_group(x, format, group_size);
#endif
  const auto grouped = as_groups(x.to(at::kFloat), group_size);
  const auto amax = grouped.abs().amax(-1);  // [rows, groups]; NaN propagates
  const auto scale = scale_from_amax(amax, format);
  auto data = from_groups(cast(grouped, scale.unsqueeze(-1), format), x.sizes());
  return {std::move(data), scale.reciprocal(), format, group_size};
}

namespace {

// amax undefined: computed here.
QuantizedPair quantize_with_transpose_impl(const torch::Tensor& x2d, Format format,
                                           const torch::Tensor& amax) {
  check_input(x2d, "quantize_with_transpose");
  TORCH_CHECK_VALUE(x2d.dim() == 2, "fp8nn::quantize_with_transpose: expected a 2-d tensor, got a ",
                    x2d.dim(), "-d tensor");
  if (amax.defined()) check_amax(amax, x2d, "quantize_with_transpose");
#ifdef FP8NN_WITH_CUDA
  if (x2d.is_cuda()) return cuda::quantize_with_transpose(x2d, format, amax);
#endif
  auto quantized = amax.defined() ? quantize(x2d, format, amax) : quantize(x2d, format);
  auto transposed = transpose(quantized);
  return {std::move(quantized), std::move(transposed)};
}

}  // namespace

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format) {
  return quantize_with_transpose_impl(x2d, format, torch::Tensor());
}

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax) {
  TORCH_CHECK_VALUE(amax.defined(), "fp8nn::quantize_with_transpose: expected a defined amax");
  return quantize_with_transpose_impl(x2d, format, amax);
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
  if (q.group_size == 0) {
    TORCH_CHECK_VALUE(q.scale_inv.numel() == 1, "fp8nn::dequantize: per-tensor data expects one ",
                      "scale_inv, got ", q.scale_inv.numel());
  } else {
    TORCH_CHECK_VALUE(q.group_size > 0, "fp8nn::dequantize: expected group_size >= 0, got ",
                      q.group_size);
    TORCH_CHECK_VALUE(q.data.dim() >= 1, "fp8nn::dequantize: per-group data must be at least 1-d");
    const int64_t cols = q.data.size(-1);
    const int64_t rows = cols == 0 ? 0 : q.data.numel() / cols;
    const int64_t groups = (cols + q.group_size - 1) / q.group_size;
    TORCH_CHECK_VALUE(q.scale_inv.dim() == 2 && q.scale_inv.size(0) == rows &&
                          q.scale_inv.size(1) == groups,
                      "fp8nn::dequantize: expected scale_inv of shape [", rows, ", ", groups,
                      "], got ", q.scale_inv.sizes());
  }
#ifdef FP8NN_WITH_CUDA
  if (q.data.is_cuda()) return cuda::dequantize(q, dtype);
#endif
  if (q.group_size == 0) return (q.data.to(at::kFloat) * q.scale_inv).to(dtype);
  const auto grouped = as_groups(q.data.to(at::kFloat), q.group_size);
  return from_groups(grouped * q.scale_inv.unsqueeze(-1), q.data.sizes()).to(dtype);
}

}  // namespace functional
}  // namespace fp8nn
