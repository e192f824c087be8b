#pragma once
// Per-tensor FP8 cast (docs/design.md) with the scale taken from a device-side amax: the second of
// the two passes of per-tensor current scaling (the first is amax_per_tensor).

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"

// Each launcher enqueues on `stream`, never synchronises, and returns the first failing CUDA
// status (kernels/common/cuda_error.h).

namespace fp8nn::kernels {

/// out[i] = fp8(clamp(x[i] * scale, -max, max)) for `numel` contiguous elements, with
/// scale = scale_from_amax(*amax) computed on the device; writes *scale_inv = 1 / scale (also when
/// numel == 0). `out` holds numel bytes.
cudaError_t cast_per_tensor(const void* x, HighPrecision type, int64_t numel, Fp8Format format,
                            const float* amax, uint8_t* out, float* scale_inv, cudaStream_t stream);

}  // namespace fp8nn::kernels
