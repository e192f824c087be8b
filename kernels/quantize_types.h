#pragma once
// Names shared by the quantize launchers: the high-precision input types and the two FP8 formats.
// Plain C++ (no CUDA, no libtorch) so that src/ can map its dtypes onto them.

#include <cstdint>

namespace fp8nn::kernels {

/// Element type of a high-precision tensor (kernel input, dequantize output).
enum class HighPrecision { kFloat32, kFloat16, kBFloat16 };

/// FP8 storage format: E4M3 (max 448, NaN 0x7f/0xff) or E5M2 (max 57344, with Inf).
enum class Fp8Format { kE4M3, kE5M2 };

constexpr float fp8_max(Fp8Format format) { return format == Fp8Format::kE4M3 ? 448.0f : 57344.0f; }

}  // namespace fp8nn::kernels
