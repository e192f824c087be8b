#pragma once
// fp8nn::Format and the high-precision dtypes mapped onto the kernels' enums
// (kernels/common/fp8_format.h). Together with dtype_of, max_of and name_of
// (include/fp8nn/quantize.h), defined in format.cpp, this is the one place that says what a format
// is.

#include <fp8nn/quantize.h>

#include "kernels/common/fp8_format.h"

namespace fp8nn {

/// The kernels' name for a format.
kernels::Fp8Format kernel_format_of(Format format);

/// The kernels' name for fp32, fp16 or bf16; any other dtype raises c10::TypeError naming `op`.
kernels::HighPrecision high_precision_of(at::ScalarType dtype, const char* op);

}  // namespace fp8nn
