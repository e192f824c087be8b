#pragma once
// The FP8 formats and the scale rule of docs/design.md (Quantization), in the one header that host
// C++ (the CPU reference, compiled by g++ without CUDA) and device code (nvcc) both compile. Plain
// C++ otherwise: no CUDA headers, no libtorch.

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FP8NN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FP8NN_HOST_DEVICE inline
#endif

namespace fp8nn::kernels {

/// Element type of a high-precision tensor (kernel input, dequantize and GEMM output).
enum class HighPrecision { kFloat32, kFloat16, kBFloat16 };

/// FP8 storage format: E4M3 (NaN 0x7f/0xff, no Inf) or E5M2 (with Inf).
enum class Fp8Format { kE4M3, kE5M2 };

/// Largest finite values of the two formats.
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

FP8NN_HOST_DEVICE constexpr float fp8_max(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? kE4M3Max : kE5M2Max;
}

/// scale = fmt_max / amax; 1 when amax == 0; FLT_MAX where the division overflows (tiny amax).
/// A NaN amax gives a NaN scale and amax = Inf a zero scale, so non-finite input never becomes
/// finite output. The division is IEEE round-to-nearest on both sides (nvcc's __fdiv_rn, which
/// --use_fast_math cannot relax), so host and device agree bit for bit.
FP8NN_HOST_DEVICE float scale_from_amax(float amax, float fmt_max) {
  if (amax == 0.0f) return 1.0f;
#if defined(__CUDA_ARCH__)
  const float scale = __fdiv_rn(fmt_max, amax);
#else
  const float scale = fmt_max / amax;
#endif
  return scale == INFINITY ? FLT_MAX : scale;
}

/// The largest power of two <= `scale`, for what scale_from_amax returns: 0, NaN, or a normal
/// float (at least fmt_max / FLT_MAX, at most FLT_MAX), whose significand is cleared; 0 and NaN
/// stay. Power-of-two scales multiply and divide without rounding: x * scale and q * scale_inv
/// are exact wherever they stay in range.
FP8NN_HOST_DEVICE float power_of_two_below(float scale) {
  if (!(scale > 0.0f)) return scale;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(__float_as_uint(scale) & 0xff800000u);
#else
  uint32_t bits = 0;
  std::memcpy(&bits, &scale, sizeof(bits));
  bits &= 0xff800000u;
  float rounded = 0.0f;
  std::memcpy(&rounded, &bits, sizeof(rounded));
  return rounded;
#endif
}

/// scale_from_amax, rounded down to a power of two when `power_of_two` (an operand's
/// OperandRecipe::power_of_two_scales).
FP8NN_HOST_DEVICE float scale_from_amax(float amax, float fmt_max, bool power_of_two) {
  const float scale = scale_from_amax(amax, fmt_max);
  return power_of_two ? power_of_two_below(scale) : scale;
}

/// The numerics monitor's two counts (docs/design.md, "Numerics monitor"), on the scaled value
/// s = v * scale before the clamp; the kernels and the CPU reference compare with these bounds.
/// Saturated: the clamp to +-fmt_max changes the FP8 value, i.e. a format without a largest value
/// would round |s| above fmt_max: |s| >= saturation_bound. E4M3: above 464, the midpoint of 448
/// and 480 (464 itself ties to 448, the even one), so the next fp32 after 464; E5M2: from 61440,
/// the midpoint of 57344 and 65536 (a tie goes to 65536). Inf counts; NaN does not.
FP8NN_HOST_DEVICE constexpr float saturation_bound(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? 0x1.d00002p+8f : 0x1.ep+15f;
}

/// Flushed to zero: v != 0 and |s| <= flush_bound, half the smallest subnormal (E4M3 2^-9, E5M2
/// 2^-16), which rounds to +-0 (a tie goes to 0, the even one).
FP8NN_HOST_DEVICE constexpr float flush_bound(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? 0x1p-10f : 0x1p-17f;
}

}  // namespace fp8nn::kernels
