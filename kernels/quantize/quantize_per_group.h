#pragma once
// Per-group quantization (docs/design.md): x [rows, cols] row-major, each row split into groups of
// `group_size` consecutive elements (the last one shorter when group_size does not divide cols;
// groups never straddle rows), one scale per group: [rows, ceil(cols / group_size)].

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"
#include "kernels/quantize/tile_load.h"

// Each launcher enqueues on `stream`, never synchronises, and returns the first failing CUDA
// status (kernels/common/cuda_error.h).

namespace fp8nn::kernels {

/// One pass: per group, amax, scale, the FP8 cast into `out` (rows * cols bytes) and scale_inv
/// [rows, groups] fp32 (1 / scale), with no other kernel before or after. `counts`: as
/// cast_per_tensor's (kernels/quantize/cast.h), [2] taking the largest group amax.
/// `power_of_two`: each scale rounded down to a power of two (fp8_format.h, power_of_two_below).
/// `load`: TileLoad::kShared stages groups longer than the registers hold (more than 1024 16-bit
/// or 512 fp32 values, up to 6144 or 3072) in shared memory (tile_load.h); the same results;
/// anything else, or other groups, read into registers.
cudaError_t quantize_per_group(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                               int64_t group_size, Fp8Format format, uint8_t* out, float* scale_inv,
                               cudaStream_t stream, unsigned long long* counts = nullptr,
                               bool power_of_two = false, TileLoad load = TileLoad::kRegisters);

/// amax [rows, groups] fp32 alone (NaN-propagating), for callers that need the values themselves.
cudaError_t amax_per_group(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                           int64_t group_size, float* amax, cudaStream_t stream);

}  // namespace fp8nn::kernels
