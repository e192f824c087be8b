#pragma once
// Device-side scale rule shared by every quantize kernel (DESIGN.md §1).

#include <cfloat>

namespace fp8nn::kernels {

// IEEE division (nvcc's default without --use_fast_math) so that the result equals libtorch's.
__device__ __forceinline__ float scale_from_amax(float amax, float fmt_max) {
  if (amax == 0.0f) return 1.0f;
  const float scale = __fdiv_rn(fmt_max, amax);
  return scale == INFINITY ? FLT_MAX : scale;  // tiny amax; NaN and 0 (amax = Inf) pass through
}

}  // namespace fp8nn::kernels
