#pragma once
// The reference FP8 product (library-internal): dequantize both operands and multiply in fp32 with
// libtorch, on whatever device they are. The CPU path, and the CUDA path's last resort for what
// the tensor cores cannot express.

#include <fp8nn/quantize.h>

#include <c10/util/Optional.h>

namespace fp8nn::functional {

/// out = (dequantize(a) @ dequantize(b)^T + bias) in fp32, returned as out_dtype. Arguments are
/// assumed checked by scaled_mm.
torch::Tensor scaled_mm_reference(const QuantizedTensor& a, const QuantizedTensor& b,
                                  const c10::optional<torch::Tensor>& bias,
                                  at::ScalarType out_dtype);

}  // namespace fp8nn::functional
