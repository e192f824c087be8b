#include "gemm/scaled_mm_reference.h"

#include <ATen/ATen.h>

namespace fp8nn::functional {

torch::Tensor scaled_mm_reference(const QuantizedTensor& a, const QuantizedTensor& b,
                                  const c10::optional<torch::Tensor>& bias,
                                  at::ScalarType out_dtype) {
  auto out = at::matmul(dequantize(a), dequantize(b).t());
  if (bias.has_value() && bias->defined()) out.add_(bias->to(at::kFloat));
  return out.to(out_dtype);
}

}  // namespace fp8nn::functional
