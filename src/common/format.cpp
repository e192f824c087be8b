#include "common/format.h"

namespace fp8nn {

kernels::Fp8Format kernel_format_of(Format format) {
  return format == Format::E4M3 ? kernels::Fp8Format::kE4M3 : kernels::Fp8Format::kE5M2;
}

kernels::HighPrecision high_precision_of(at::ScalarType dtype, const char* op) {
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
  TORCH_CHECK_TYPE(false, "fp8nn::", op, ": expected float, half or bfloat16, got ", dtype);
}

at::ScalarType dtype_of(Format format) {
  return format == Format::E4M3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2;
}

float max_of(Format format) { return kernels::fp8_max(kernel_format_of(format)); }

const char* name_of(Format format) { return format == Format::E4M3 ? "e4m3" : "e5m2"; }

}  // namespace fp8nn
