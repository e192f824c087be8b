#pragma once
// functional::scaled_mm for CUDA tensors: chooses between cuBLASLt's FP8 tensor cores (directly,
// or on zero-padded copies) and the reference product on the device.

#include <fp8nn/quantize.h>

#include <c10/util/Optional.h>

namespace fp8nn::functional {

/// scaled_mm on CUDA tensors (arguments already checked by scaled_mm). No host synchronisation.
torch::Tensor scaled_mm_cuda(const QuantizedTensor& a, const QuantizedTensor& b,
                             const c10::optional<torch::Tensor>& bias, at::ScalarType out_dtype,
                             bool fast_accumulation);

}  // namespace fp8nn::functional
