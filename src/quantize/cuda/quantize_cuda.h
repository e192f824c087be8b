#pragma once
// CUDA side of the functional quantize API: turns tensors into pointers, shapes and the current
// stream for the launchers in kernels/quantize/. Arguments are checked by the callers in
// quantize/quantize.cpp.
// Everything runs on the current stream, allocates through the caching allocator, and never
// synchronises with the host.

#include <fp8nn/quantize.h>

#include "quantize/quantize_detail.h"

namespace fp8nn::cuda {

// As the reference's quantize (quantize_reference.h): one scale per group of `group_size`
// elements of a row, or per tensor when it is 0, with `amax` (a one-element fp32 tensor on x's
// device) given or, undefined, computed here (one more pass). `counts`: undefined, or the numerics
// monitor's int64 [3] on x's device, which the cast kernels add to (kernels/quantize/cast.h).
// `amax_out`: null, or (per tensor, amax not given) set to the computed amax.
QuantizedTensor quantize(const torch::Tensor& x, Format format, int64_t group_size,
                         const torch::Tensor& amax, const torch::Tensor& counts,
                         torch::Tensor* amax_out = nullptr, bool power_of_two = false);
QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax, const torch::Tensor& counts,
                                      torch::Tensor* column_sums = nullptr);
/// Per tensor and per group of a row (group_rows == 1).
torch::Tensor dequantize(const QuantizedTensor& q, at::ScalarType dtype);

/// detail::quantize_delayed (quantize_detail.h).
QuantizedPair quantize_delayed(const torch::Tensor& x2d, Format format, bool with_transpose,
                               const detail::DelayedTensors& delayed, const torch::Tensor& counts);

/// detail::quantize_per_group_with_transpose (quantize_detail.h) for groups of kBlockSize: one
/// pass over x2d writes both copies.
QuantizedPair quantize_per_group_with_transpose(const torch::Tensor& x2d, Format format,
                                                const torch::Tensor& counts,
                                                bool power_of_two = false);

/// detail::quantize_per_block (quantize_detail.h).
QuantizedPair quantize_per_block(const torch::Tensor& x2d, Format format, bool with_transpose,
                                 const torch::Tensor& counts, bool power_of_two = false,
                                 bool row_copy = true);
/// detail::quantize_transposed (quantize_detail.h).
QuantizedTensor quantize_transposed(const torch::Tensor& x2d, Format format,
                                    const torch::Tensor& amax);

}  // namespace fp8nn::cuda
