#pragma once
// Device-side element types every kernel family shares: conversions between fp32 and the
// high-precision types, FP8 bytes to fp16, and the dispatch from the runtime enums of
// fp8_format.h to template arguments.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "kernels/common/fp8_format.h"

namespace fp8nn::kernels {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Round to nearest even, as libtorch's .to(dtype) does.
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Two adjacent elements as one vector (one 4- or 8-byte access), and its conversions.
template <typename T>
struct Vec2Of {
  using type = float2;
};
template <>
struct Vec2Of<__half> {
  using type = __half2;
};
template <>
struct Vec2Of<__nv_bfloat16> {
  using type = __nv_bfloat162;
};
template <typename T>
using Vec2 = typename Vec2Of<T>::type;

__device__ __forceinline__ float2 to_float2(float2 v) { return v; }
__device__ __forceinline__ float2 to_float2(__half2 v) { return __half22float2(v); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 v) { return __bfloat1622float2(v); }

// Round to nearest even, as from_float.
template <typename T>
__device__ __forceinline__ Vec2<T> from_float2(float x, float y) {
  if constexpr (std::is_same_v<T, __half>) {
    return __floats2half2_rn(x, y);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __floats2bfloat162_rn(x, y);
  } else {
    return make_float2(x, y);
  }
}

constexpr __nv_fp8_interpretation_t interpretation_of(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? __NV_E4M3 : __NV_E5M2;
}

template <Fp8Format F>
constexpr __nv_fp8_interpretation_t kInterpretation = interpretation_of(F);

// FP8 byte to fp16, exactly: every E4M3 and E5M2 value is an fp16 value.
__device__ __forceinline__ __half fp8_to_half(uint8_t byte, __nv_fp8_interpretation_t format) {
  return __half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(byte), format));
}

// Returns fn(T{}) with T the C++ type of `type`.
template <typename Fn>
auto dispatch_high_precision(HighPrecision type, Fn&& fn) {
  switch (type) {
    case HighPrecision::kFloat16:
      return fn(__half{});
    case HighPrecision::kBFloat16:
      return fn(__nv_bfloat16{});
    case HighPrecision::kFloat32:
    default:
      return fn(float{});
  }
}

// Returns fn(std::integral_constant<Fp8Format, F>{}) for the format.
template <typename Fn>
auto dispatch_format(Fp8Format format, Fn&& fn) {
  if (format == Fp8Format::kE4M3) return fn(std::integral_constant<Fp8Format, Fp8Format::kE4M3>{});
  return fn(std::integral_constant<Fp8Format, Fp8Format::kE5M2>{});
}

}  // namespace fp8nn::kernels
