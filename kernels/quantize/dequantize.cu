// Dequantize: a flat grid-stride pass, kVec = 8 elements per step (an 8-byte FP8 load, a 16- or
// 32-byte store) when shapes and pointers allow, else one element per step. The scale index is
// derived per step; all kVec elements of a step share it (kVec divides cols and G).

#include "kernels/quantize/dequantize.h"
#include "kernels/quantize/quantize_common.cuh"

namespace fp8nn::kernels {
namespace {

using namespace streaming;
constexpr int kVec = 8;

template <Fp8Format F, typename T, int kStep>
__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const uint8_t* __restrict__ q, int64_t numel, int64_t cols,
                      int64_t group_size, int64_t groups_per_row,
                      const float* __restrict__ scale_inv, T* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t steps = numel / kStep;
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; s < steps;
       s += stride) {
    const int64_t e = s * kStep;
    int64_t scale_index = 0;
    if (group_size > 0) scale_index = (e / cols) * groups_per_row + (e % cols) / group_size;
    const float factor = scale_inv[scale_index];
    const Vec<uint8_t, kStep> in = reinterpret_cast<const Vec<uint8_t, kStep>*>(q)[s];
    Vec<T, kStep> result;
#pragma unroll
    for (int j = 0; j < kStep; ++j) {
      result.v[j] = from_float<T>(__fmul_rn(fp8_to_float<F>(in.v[j]), factor));
    }
    reinterpret_cast<Vec<T, kStep>*>(out)[s] = result;
  }
}

}  // namespace

cudaError_t dequantize(const uint8_t* q, Fp8Format format, int64_t rows, int64_t cols,
                       int64_t group_size, const float* scale_inv, void* out,
                       HighPrecision out_type, cudaStream_t stream) {
  if (group_size < 0) return cudaErrorInvalidValue;
  const int64_t numel = rows * cols;
  if (numel == 0) return cudaSuccess;
  const int64_t groups_per_row = group_size > 0 ? (cols + group_size - 1) / group_size : 0;
  return dispatch_high_precision(out_type, [&](auto type_tag) {
    using T = decltype(type_tag);
    return dispatch_format(format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      // Per tensor the pass is flat, so only the total length matters; per group every step must
      // stay inside one group of one row.
      const bool shape_fits =
          group_size == 0 ? numel % kVec == 0 : cols % kVec == 0 && group_size % kVec == 0;
      const bool vectorized =
          shape_fits && is_aligned(q, kVec) && is_aligned(out, kVec * int64_t{sizeof(T)});
      T* typed = static_cast<T*>(out);
      unsigned blocks = 0;
      FP8NN_KERNELS_TRY(
          grid_for(vectorized ? numel / kVec : numel, kThreads, kBlocksPerSm, &blocks));
      if (vectorized) {
        dequantize_kernel<F, T, kVec><<<blocks, kThreads, 0, stream>>>(
            q, numel, cols, group_size, groups_per_row, scale_inv, typed);
      } else {
        dequantize_kernel<F, T, 1><<<blocks, kThreads, 0, stream>>>(
            q, numel, cols, group_size, groups_per_row, scale_inv, typed);
      }
      return cudaGetLastError();
    });
  });
}

}  // namespace fp8nn::kernels
