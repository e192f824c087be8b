#pragma once
// Dequantize (docs/design.md): FP8 data times scale_inv in fp32, rounded to the output type.
// For tests and the fallback path.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"

// Each launcher enqueues on `stream`, never synchronises, and returns the first failing CUDA
// status (kernels/common/cuda_error.h).

namespace fp8nn::kernels {

/// out[r][c] = to_type(float(q[r][c]) * scale_inv[s]) for q [rows, cols] row-major, where s = 0
/// when group_size == 0 (per tensor, one scale_inv) and s = r * ceil(cols / G) + c / G otherwise.
cudaError_t dequantize(const uint8_t* q, Fp8Format format, int64_t rows, int64_t cols,
                       int64_t group_size, const float* scale_inv, void* out,
                       HighPrecision out_type, cudaStream_t stream);

}  // namespace fp8nn::kernels
