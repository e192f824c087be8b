#pragma once
// The functional quantize calls (include/fp8nn/quantize.h) with the numerics monitor's counts:
// what quantize.cpp's public functions run, for the engine (src/linear/) to call with a monitor.
// `amax`: undefined to compute it. `counts`: undefined, or an int64 [3] tensor on x's device that
// the cast adds to ([0] saturated, [1] flushed to zero, [2] max with the amax's bits; see
// kernels/quantize/cast.h), on the GPU and in the CPU reference alike.

#include <fp8nn/quantize.h>

namespace fp8nn::detail {

QuantizedTensor quantize(const torch::Tensor& x, Format format, const torch::Tensor& amax,
                         const torch::Tensor& counts);
QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size,
                                   const torch::Tensor& counts);
QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax, const torch::Tensor& counts);

}  // namespace fp8nn::detail
