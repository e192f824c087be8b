#pragma once
// Per-group quantization along both axes in one pass (the blockwise recipe's activations and
// output gradients): x [rows, cols] row-major gives
//  - out [rows, cols], each row quantized per group of 128 columns (quantize_per_group with
//    G = 128, kernels/quantize/quantize_per_group.h), scale_inv [rows, ceil(cols / 128)];
//  - out_t [cols, rows], x's transpose quantized per group of 128 along its rows, i.e. each column
//    of x per group of 128 rows (what quantize_per_group of x^T gives), scale_inv_t
//    [cols, ceil(rows / 128)];
// both row-major and contiguous, each group quantized by the one definition (docs/design.md,
// Quantization). The weight gradient of a blockwise layer reads the second copy; the forward or
// the input gradient the first.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"
#include "kernels/quantize/tile_load.h"

namespace fp8nn::kernels {

/// Rows and columns of the tile one thread block quantizes: the group size along both axes.
constexpr int64_t kTransposeGroup = 128;

/// One thread block per 128 x 128 tile of x, read once: the tile's row and column amaxes, both
/// casts, both scale matrices. out, out_t, scale_inv and scale_inv_t must not be null (for
/// rows * cols > 0). `counts`: as cast_per_tensor's (kernels/quantize/cast.h), for the first copy
/// (out) only, [2] taking the largest group amax. `power_of_two`: each scale rounded down to a
/// power of two (fp8_format.h). `load`: kRegisters or kShared (tile_load.h; the same results;
/// kReadTwice is cudaErrorInvalidValue). Enqueues on `stream`, never synchronises, and returns the
/// first failing CUDA status (cudaErrorInvalidValue for a grid beyond 2^31 - 1 tiles).
cudaError_t quantize_per_group_with_transpose(const void* x, HighPrecision type, int64_t rows,
                                              int64_t cols, Fp8Format format, uint8_t* out,
                                              float* scale_inv, uint8_t* out_t, float* scale_inv_t,
                                              cudaStream_t stream,
                                              unsigned long long* counts = nullptr,
                                              bool power_of_two = false,
                                              TileLoad load = TileLoad::kRegisters);

}  // namespace fp8nn::kernels
