#pragma once
// Per-tensor FP8 cast (docs/design.md) with the scale taken from a device-side amax: the second of
// the two passes of per-tensor current scaling (the first is amax_per_tensor).

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"
#include "kernels/quantize/delayed_scaling.h"

// Each launcher enqueues on `stream`, never synchronises, and returns the first failing CUDA
// status (kernels/common/cuda_error.h).

namespace fp8nn::kernels {

/// out[i] = fp8(clamp(x[i] * scale, -max, max)) for `numel` contiguous elements (an infinite x[i]
/// stays infinite: E4M3's NaN, E5M2's Inf), with scale = scale_from_amax(*amax) computed on the
/// device, or *delayed.scale when that is set (amax may then be null); writes
/// *scale_inv = 1 / scale (also when numel == 0). `out` holds numel bytes. `counts`: null, or the
/// numerics monitor's 3 counters, which the cast adds to: [0] saturated, [1] flushed to zero, [2]
/// max with the bits of the amax (fp8_format.h: saturation_bound, flush_bound). `delayed`: also
/// record into a delayed-scaling state (delayed_scaling.h).
cudaError_t cast_per_tensor(const void* x, HighPrecision type, int64_t numel, Fp8Format format,
                            const float* amax, uint8_t* out, float* scale_inv, cudaStream_t stream,
                            unsigned long long* counts = nullptr,
                            const DelayedScalingArgs& delayed = {});

/// Tensors of up to this many elements take the one-launch kernels below; larger ones their two
/// launches, which stream faster there (the measured crossover: docs/kernels.md).
constexpr int64_t kOneLaunchMaxElements = int64_t{1} << 22;

/// Per-tensor current scaling in one launch: amax_per_tensor and cast_per_tensor's result (out,
/// *scale_inv, counts) from one cooperative kernel (kernels/quantize/grid_amax.cuh), or from those
/// two launches where the device takes no cooperative launch or numel > kOneLaunchMaxElements.
/// `scratch`: device memory of `scratch_words` 4-byte words, any content, not shared with a launch
/// that may run concurrently; amax_cast_scratch_words gives the size that lets the grid fill the
/// device (fewer words: a smaller grid; at least 1). `amax_out`: null, or where the amax goes too
/// (for a later cast_per_tensor with the same scale).
cudaError_t amax_cast_per_tensor(const void* x, HighPrecision type, int64_t numel, Fp8Format format,
                                 uint8_t* out, float* scale_inv, unsigned* scratch,
                                 int64_t scratch_words, cudaStream_t stream,
                                 unsigned long long* counts = nullptr, float* amax_out = nullptr);

/// The scratch words amax_cast_per_tensor and amax_cast_transpose_per_tensor use on the current
/// device (one per block that can be resident at once).
cudaError_t amax_cast_scratch_words(int64_t* words);

}  // namespace fp8nn::kernels
