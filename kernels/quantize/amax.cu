// Per-tensor amax: one reading pass, 16-byte loads, kUnroll loads in flight per thread.
//
// Reduction: every thread keeps the integer max of abs_bits(v) (NaN orders above Inf, so NaN
// propagates with no special case), the block reduces with __reduce_max_sync, and thread 0 does one
// atomicMax on the output's bits, zeroed before the launch. Max is exact and associative, so the
// result is deterministic whatever the order; one launch (plus a memset) instead of a two-stage
// reduction, with about a thousand atomics on one word, which costs nothing next to the pass.
// (amax per group lives in quantize_per_group.cu: it shares the group walk with the cast.)

#include "kernels/quantize/amax.h"
#include "kernels/quantize/quantize_common.cuh"

namespace fp8nn::kernels {
namespace {

using namespace streaming;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    amax_per_tensor_kernel(const T* __restrict__ x, int64_t numel, bool vectorized,
                           unsigned* __restrict__ amax_bits) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  unsigned bits = thread_amax_bits(x, numel, vectorized, thread, stride);
  bits = block_max<kThreads>(bits);
  if (threadIdx.x == 0) atomicMax(amax_bits, bits);
}

}  // namespace

cudaError_t amax_per_tensor(const void* x, HighPrecision type, int64_t numel, float* amax,
                            cudaStream_t stream) {
  FP8NN_KERNELS_TRY(cudaMemsetAsync(amax, 0, sizeof(float), stream));  // bits 0 = +0.0f
  if (numel == 0) return cudaSuccess;
  return dispatch_high_precision(type, [&](auto tag) {
    using T = decltype(tag);
    const bool vectorized = is_aligned(x, 16);
    const int64_t items = vectorized ? numel / kVec16<T> : numel;
    unsigned blocks = 0;
    FP8NN_KERNELS_TRY(grid_for(items, int64_t{kThreads} * kUnroll, kBlocksPerSm, &blocks));
    amax_per_tensor_kernel<T><<<blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(x), numel, vectorized, reinterpret_cast<unsigned*>(amax));
    return cudaGetLastError();
  });
}

}  // namespace fp8nn::kernels
