#pragma once
// amax = max |v| in fp32 over a whole tensor (docs/design.md), on the device,
// NaN-propagating: a NaN anywhere in a set makes its amax NaN, an Inf (and no NaN) makes it Inf.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"

// Each launcher enqueues on `stream`, never synchronises, and returns the first failing CUDA
// status (kernels/common/cuda_error.h).

namespace fp8nn::kernels {

/// amax[0] = max |x[i]| over `numel` contiguous elements (0 when numel == 0). Zeroes amax with
/// cudaMemsetAsync, then one reading pass; no host synchronisation.
cudaError_t amax_per_tensor(const void* x, HighPrecision type, int64_t numel, float* amax,
                            cudaStream_t stream);

/// (amax per row-group: amax_per_group in quantize_per_group.h.)

}  // namespace fp8nn::kernels
