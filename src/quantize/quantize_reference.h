#pragma once
// The reference quantization of docs/design.md (Quantization), written with libtorch ops around
// the scale rule of kernels/common/fp8_format.h: the CPU path of the functional API, which the CUDA
// kernels must agree with bit for bit. Arguments are checked by the callers in quantize.cpp.

#include <fp8nn/quantize.h>

#include "quantize/quantize_detail.h"

namespace fp8nn::reference {

/// `x` quantized with one scale per `group_size` consecutive elements of a row (last dimension),
/// or, with group_size == 0, one for the whole tensor, whose amax may be given (`amax`; undefined:
/// computed here). `counts`: undefined, or the numerics monitor's int64 [3] on x's device, which
/// the cast adds to as the kernels do (kernels/quantize/cast.h). `amax_out`: null, or (per tensor)
/// set to the amax the scale came from. `power_of_two`: scales rounded down to powers of two
/// (kernels::power_of_two_below).
QuantizedTensor quantize(const torch::Tensor& x, Format format, int64_t group_size,
                         const torch::Tensor& amax, const torch::Tensor& counts,
                         torch::Tensor* amax_out = nullptr, bool power_of_two = false);
/// detail::quantize_per_block's row-major copy (quantize_detail.h); the caller transposes it.
QuantizedTensor quantize_per_block(const torch::Tensor& x2d, Format format,
                                   const torch::Tensor& counts, bool power_of_two = false);

/// data * scale_inv, any scaling (per block too), with ATen ops on data's device.
torch::Tensor dequantize(const QuantizedTensor& q, at::ScalarType dtype);

/// detail::quantize_delayed (quantize_detail.h): the same cast, then the state updated on the host
/// by the kernels' rule.
QuantizedPair quantize_delayed(const torch::Tensor& x2d, Format format, bool with_transpose,
                               const detail::DelayedTensors& delayed, const torch::Tensor& counts);

}  // namespace fp8nn::reference
