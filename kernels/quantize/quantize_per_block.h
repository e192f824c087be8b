#pragma once
// Per-block quantization (blockwise weight scaling, DeepSeek-V3 style): x [rows, cols] row-major
// in square blocks of 128 x 128 elements (the last row and column of blocks shorter where 128 does
// not divide the shape), one scale per block from the block's amax by the one definition
// (docs/design.md, Quantization; a block quantizes exactly as the same values would per tensor).
// A square block's scale serves x and its transpose alike, so one pass writes both FP8 copies.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"
#include "kernels/quantize/tile_load.h"

// Each launcher enqueues on `stream`, never synchronises, and returns the first failing CUDA
// status (kernels/common/cuda_error.h).

namespace fp8nn::kernels {

/// Rows and columns of one scale block.
constexpr int64_t kScaleBlock = 128;

/// One pass, one thread block per 128 x 128 block: its amax, scale and cast. Writes `out` (rows *
/// cols bytes, row-major; may be null), `out_t` (cols * rows bytes, x's transpose, row-major; may
/// be null), scale_inv[br * scale_ld + bc] = 1 / scale of block (br, bc) for
/// br < ceil(rows / 128), bc < ceil(cols / 128) (scale_ld >= ceil(cols / 128); the words between
/// are not touched), and, when not null, scale_inv_t[bc * scale_t_ld + br], the same values for
/// the transposed copy (scale_t_ld >= ceil(rows / 128)). `counts`: as cast_per_tensor's
/// (kernels/quantize/cast.h), [2] taking the largest block amax. `power_of_two`: each scale rounded
/// down to a power of two (fp8_format.h). `load`: how each block is read (tile_load.h; the same
/// results every way; which is faster is fp8nn_bench quantize's question). cudaErrorInvalidValue
/// for a leading dimension that is too small.
cudaError_t quantize_per_block(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                               Fp8Format format, uint8_t* out, uint8_t* out_t, float* scale_inv,
                               int64_t scale_ld, float* scale_inv_t, int64_t scale_t_ld,
                               cudaStream_t stream, unsigned long long* counts = nullptr,
                               bool power_of_two = false, TileLoad load = TileLoad::kRegisters);

}  // namespace fp8nn::kernels
