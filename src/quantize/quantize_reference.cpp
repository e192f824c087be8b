#include "quantize/quantize_reference.h"

#include <ATen/ATen.h>

#include "common/format.h"
#include "kernels/common/fp8_format.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

namespace fp8nn::reference {
namespace {

// kernels::scale_from_amax applied to every amax value (a handful per tensor: one per tensor or
// group), on the host; rounded down to powers of two when `power_of_two`.
torch::Tensor scale_from_amax(const torch::Tensor& amax, Format format, bool power_of_two = false) {
  const auto amax_host = amax.to(at::kCPU, at::kFloat).contiguous();
  auto scale = at::empty_like(amax_host);
  const float fmt_max = max_of(format);
  const float* in = amax_host.data_ptr<float>();
  float* out = scale.data_ptr<float>();
  for (int64_t i = 0; i < amax_host.numel(); ++i) {
    out[i] = kernels::scale_from_amax(in[i], fmt_max, power_of_two);
  }
  return scale.to(amax.device());
}

// Finite values clamp to +-fmt_max; an infinite x stays infinite (c10 makes it E4M3's NaN or
// E5M2's Inf, with its sign), whatever the scale, as in the kernels.
torch::Tensor cast(const torch::Tensor& x_float, const torch::Tensor& scale, Format format) {
  const double fmt_max = max_of(format);
  const auto clamped = (x_float * scale).clamp_(-fmt_max, fmt_max);
  return at::where(x_float.isinf(), x_float, clamped).to(dtype_of(format));
}

// max |x| over the whole tensor as a 0-d fp32 tensor (0 for an empty one; NaN propagates).
torch::Tensor tensor_amax(const torch::Tensor& x_float) {
  return x_float.numel() == 0 ? torch::zeros({}, x_float.options()) : x_float.abs().amax();
}

// How many of the scaled values |v * scale| saturate (fp8_format.h: saturation_bound), 0-d.
torch::Tensor saturated_count(const torch::Tensor& scaled_abs, Format format) {
  return scaled_abs.ge(kernels::saturation_bound(kernel_format_of(format))).sum();
}

// What the kernels' CastCounter adds for a cast of x_float with `scale` (broadcast to it) and the
// amax (or amaxes) behind it.
void count_cast(const torch::Tensor& x_float, const torch::Tensor& scale, const torch::Tensor& amax,
                Format format, const torch::Tensor& counts) {
  if (!counts.defined()) return;
  const auto kernel_format = kernel_format_of(format);
  const auto scaled_abs = (x_float * scale).abs();
  const auto saturated = saturated_count(scaled_abs, format);
  const auto flushed =
      x_float.ne(0.0).logical_and(scaled_abs.le(kernels::flush_bound(kernel_format))).sum();
  const auto amax_bits = tensor_amax(amax).reshape({1}).view(at::kInt).to(at::kLong);
  counts.narrow(0, 0, 1).add_(saturated.to(counts.device()));
  counts.narrow(0, 1, 1).add_(flushed.to(counts.device()));
  counts.narrow(0, 2, 1).copy_(at::maximum(counts.narrow(0, 2, 1), amax_bits.to(counts.device())));
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

QuantizedTensor quantize(const torch::Tensor& x, Format format, int64_t group_size,
                         const torch::Tensor& amax_given, const torch::Tensor& counts,
                         torch::Tensor* amax_out, bool power_of_two) {
  const auto x_float = x.to(at::kFloat);
  if (group_size > 0) {
    const auto grouped = as_groups(x_float, group_size);
    const auto amax = grouped.abs().amax(-1);  // [rows, groups]; NaN propagates
    const auto scale = scale_from_amax(amax, format, power_of_two);
    count_cast(grouped, scale.unsqueeze(-1), amax, format, counts);
    auto data = from_groups(cast(grouped, scale.unsqueeze(-1), format), x.sizes());
    return {std::move(data), scale.reciprocal(), format, group_size};
  }
  const auto amax = amax_given.defined() ? amax_given.reshape({}) : tensor_amax(x_float);
  if (amax_out != nullptr) *amax_out = amax;
  const auto scale = scale_from_amax(amax, format, power_of_two);
  count_cast(x_float, scale, amax, format, counts);
  return {cast(x_float, scale, format), scale.reciprocal(), format, 0};
}

QuantizedPair quantize_delayed(const torch::Tensor& x2d, Format format, bool with_transpose,
                               const detail::DelayedTensors& delayed, const torch::Tensor& counts) {
  const auto x_float = x2d.to(at::kFloat);
  const auto amax = tensor_amax(x_float);
  const auto scale =
      delayed.first ? scale_from_amax(amax, format) : delayed.scale.reshape({}).clone();
  count_cast(x_float, scale, amax, format, counts);
  QuantizedPair q;
  q.quantized = {cast(x_float, scale, format), scale.reciprocal(), format, 0};
  if (with_transpose)
    q.transposed = {q.quantized.data.t().contiguous(), q.quantized.scale_inv, format, 0};

  // The state, as the last block of the kernel updates it (kernels/quantize/delayed_scaling.h).
  delayed.counts.narrow(0, 1, 1).add_(saturated_count((x_float * scale).abs(), format));
  const float a = amax.item<float>();
  if (!std::isfinite(a)) {
    delayed.counts.narrow(0, 2, 1).add_(1);
    return q;
  }
  const int64_t recorded = delayed.counts[0].item<int64_t>();
  const int64_t length = delayed.history.numel();
  delayed.history[recorded % length] = a;
  delayed.counts.narrow(0, 0, 1).add_(1);
  const float window =
      delayed.most_recent
          ? a
          : delayed.history.narrow(0, 0, std::min(recorded + 1, length)).max().item<float>();
  if (window > 0.0f) {
    const float next = delayed.scaled_max / window;
    delayed.scale.fill_(std::isinf(next) ? FLT_MAX : next);
  }
  return q;
}

QuantizedTensor quantize_per_block(const torch::Tensor& x2d, Format format,
                                   const torch::Tensor& counts, bool power_of_two) {
  const auto x_float = x2d.to(at::kFloat);
  const int64_t rows = x2d.size(0), cols = x2d.size(1), b = kBlockSize;
  const int64_t block_rows = (rows + b - 1) / b, block_cols = (cols + b - 1) / b;
  // Zero padding to whole blocks changes no amax; the padding is cut off again after the cast.
  const auto blocks =
      at::constant_pad_nd(x_float, {0, block_cols * b - cols, 0, block_rows * b - rows}, 0.0)
          .view({block_rows, b, block_cols, b});
  const auto amax = blocks.abs().amax({1, 3});  // [block_rows, block_cols]; NaN propagates
  const auto scale = scale_from_amax(amax, format, power_of_two);
  const auto block_scale = scale.view({block_rows, 1, block_cols, 1});
  count_cast(blocks, block_scale, amax, format, counts);
  auto data = cast(blocks, block_scale, format)
                  .view({block_rows * b, block_cols * b})
                  .narrow(0, 0, rows)
                  .narrow(1, 0, cols)
                  .contiguous();
  return {std::move(data), scale.reciprocal(), format, b, b};
}

torch::Tensor dequantize(const QuantizedTensor& q, at::ScalarType dtype) {
  if (q.group_size == 0) return (q.data.to(at::kFloat) * q.scale_inv).to(dtype);
  if (q.group_rows > 1) {
    // Each scale repeated over its block's rows and columns, cut to the data's shape.
    const int64_t rows = q.data.size(0), cols = q.data.size(1);
    const auto scales = q.scale_inv.repeat_interleave(q.group_rows, 0)
                            .narrow(0, 0, rows)
                            .repeat_interleave(q.group_size, 1)
                            .narrow(1, 0, cols);
    return (q.data.to(at::kFloat) * scales).to(dtype);
  }
  const auto grouped = as_groups(q.data.to(at::kFloat), q.group_size);
  return from_groups(grouped * q.scale_inv.unsqueeze(-1), q.data.sizes()).to(dtype);
}

}  // namespace fp8nn::reference
