#pragma once
// libtorch dtypes and fp8nn formats as the kernels/ enums (kernels/ know nothing of libtorch).

#include <fp8nn/quantize.h>

#include <c10/util/Exception.h>

#include "quantize_types.h"

namespace fp8nn::cuda {

/// fp32 / fp16 / bf16 as kernels::HighPrecision; anything else is a c10::TypeError naming `op`.
inline kernels::HighPrecision high_precision_of(at::ScalarType dtype, const char* op) {
  switch (dtype) {
    case at::kFloat:
      return kernels::HighPrecision::kFloat32;
    case at::kHalf:
      return kernels::HighPrecision::kFloat16;
    case at::kBFloat16:
      return kernels::HighPrecision::kBFloat16;
    default:
      break;
  }
  TORCH_CHECK_TYPE(false, op, ": expected float, half or bfloat16, got ", dtype);
}

inline kernels::Fp8Format fp8_format_of(Format format) {
  return format == Format::E4M3 ? kernels::Fp8Format::kE4M3 : kernels::Fp8Format::kE5M2;
}

}  // namespace fp8nn::cuda
