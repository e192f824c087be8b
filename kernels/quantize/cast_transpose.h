#pragma once
// Fused per-tensor FP8 cast + transpose: one pass over x [rows, cols] that writes the FP8 copy
// [rows, cols] and its FP8 transpose [cols, rows] (Hopper FP8 GEMMs take K-major operands, so the
// backward products need the forward copies transposed).

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"
#include "kernels/quantize/delayed_scaling.h"

// Each launcher enqueues on `stream`, never synchronises, and returns the first failing CUDA
// status (kernels/common/cuda_error.h).

namespace fp8nn::kernels {

/// x: [rows, cols] row-major, any shape. out: rows * cols bytes, out_t: cols * rows bytes, both
/// row-major; `out` may be null (only the transposed copy is written). The scale comes from the
/// device-side *amax (run amax_per_tensor first); writes *scale_inv = 1 / scale, shared by both
/// outputs (also when rows or cols is 0). `counts` and `delayed`: as cast_per_tensor's (each
/// element counted once).
cudaError_t cast_transpose_per_tensor(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                                      Fp8Format format, const float* amax, uint8_t* out,
                                      uint8_t* out_t, float* scale_inv, cudaStream_t stream,
                                      unsigned long long* counts = nullptr,
                                      const DelayedScalingArgs& delayed = {});

/// Per-tensor current scaling in one launch: amax_per_tensor and cast_transpose_per_tensor's
/// result from one cooperative kernel (kernels/quantize/grid_amax.cuh), or from those two launches
/// where the device takes no cooperative launch or rows * cols > kOneLaunchMaxElements (cast.h).
/// `scratch`, `scratch_words`: as amax_cast_per_tensor's (kernels/quantize/cast.h). `column_sums`:
/// null, or [cols] fp32 that gets the sum of each column of x in fp32 (a bias gradient; summed in a
/// fixed order, so a repeated call gives the same bits), with `partial_sums` as scratch of
/// ceil(rows / 128) * cols floats; where the one launch is unavailable, that call returns
/// cudaErrorNotSupported having written nothing, and the caller sums x itself.
cudaError_t amax_cast_transpose_per_tensor(const void* x, HighPrecision type, int64_t rows,
                                           int64_t cols, Fp8Format format, uint8_t* out,
                                           uint8_t* out_t, float* scale_inv, unsigned* scratch,
                                           int64_t scratch_words, cudaStream_t stream,
                                           unsigned long long* counts = nullptr,
                                           float* column_sums = nullptr,
                                           float* partial_sums = nullptr);

/// The rows of tiles amax_cast_transpose_per_tensor's partial_sums holds: ceil(rows / 128).
int64_t column_sums_partial_rows(int64_t rows);

}  // namespace fp8nn::kernels
