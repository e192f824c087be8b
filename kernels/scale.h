#pragma once
// Scale computation on the device (DESIGN.md §1): from amax values to scale and scale_inv,
// without a host synchronisation.

#include <cuda_runtime.h>

#include <cstdint>

namespace fp8nn::kernels {

/// For each of `count` amax values: scale = fmt_max / amax (1 when amax == 0, FLT_MAX when the
/// division overflows), scale_inv = 1 / scale. `scale` may be null when only scale_inv is needed.
void compute_scales(const float* amax, float* scale, float* scale_inv, int64_t count,
                    float fmt_max, cudaStream_t stream);

}  // namespace fp8nn::kernels
