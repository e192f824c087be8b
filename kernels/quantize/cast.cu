// Per-tensor cast: one pass reading x (16 bytes per load, kUnroll loads in flight per thread) and
// writing FP8 (16 / sizeof(T) bytes per store). Every thread derives the scale from *amax itself
// (one cached load), so no scale kernel runs between amax and cast.
//
// The grid walks the tensor from its end: amax_per_tensor read it from the start, so the most
// recently read data, the likeliest to be still in L2, is cast first.

#include "kernels/quantize/amax.h"
#include "kernels/quantize/cast.h"
#include "kernels/quantize/delayed_scaling.cuh"
#include "kernels/quantize/grid_amax.cuh"
#include "kernels/quantize/quantize_common.cuh"

namespace fp8nn::kernels {
namespace {

using namespace streaming;

// The cast of x[0, numel) with `scale` by every thread of the grid, from the end (see above).
template <typename T, Fp8Format F, typename Counter>
__device__ __forceinline__ void cast_range(const T* __restrict__ x, int64_t numel, bool vectorized,
                                           float scale, uint8_t* __restrict__ out,
                                           Counter& counter) {
  constexpr int kVec = kVec16<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  int64_t scalar_begin = 0;
  if (vectorized) {
    const int64_t vectors = numel / kVec;
    const auto* xv = reinterpret_cast<const Vec<T, kVec>*>(x);
    auto* outv = reinterpret_cast<Vec<uint32_t, kVec / 4>*>(out);
    for (int64_t base = thread; base < vectors; base += stride * kUnroll) {
      Vec<T, kVec> v[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        if (base + k * stride < vectors) v[k] = xv[vectors - 1 - (base + k * stride)];
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        if (base + k * stride < vectors) {
          outv[vectors - 1 - (base + k * stride)] = cast_vec_to_fp8<F>(v[k], scale, counter);
        }
      }
    }
    scalar_begin = vectors * kVec;
  }
  for (int64_t i = scalar_begin + thread; i < numel; i += stride) {
    out[i] = cast_to_fp8<F>(to_float(x[i]), scale, counter);
  }
}

// Counter: CastCounter<F> (the numerics monitor's counts into `counts`) or NoCounter, or either
// inside DelayedCounter (a cast recording into a delayed-scaling state, delayed_scaling.cuh).
template <typename T, Fp8Format F, typename Counter>
__global__ void __launch_bounds__(kThreads)
    cast_per_tensor_kernel(const T* __restrict__ x, int64_t numel, bool vectorized,
                           const float* __restrict__ amax, uint8_t* __restrict__ out,
                           float* __restrict__ scale_inv, unsigned long long* __restrict__ counts,
                           DelayedScalingArgs delayed) {
  Counter counter;
  const float scale = begin_per_tensor_cast<F>(counter, delayed, amax, scale_inv);
  cast_range<T, F>(x, numel, vectorized, scale, out, counter);
  counter.template flush<kThreads>(counts);
}

// amax and cast in one cooperative launch (grid_amax.cuh): the amax pass walks x from its start,
// the cast from its end.
template <typename T, Fp8Format F, typename Counter>
__global__ void __launch_bounds__(kThreads)
    amax_cast_per_tensor_kernel(const T* __restrict__ x, int64_t numel, bool vectorized,
                                unsigned* partials, uint8_t* __restrict__ out,
                                float* __restrict__ scale_inv, float* __restrict__ amax_out,
                                unsigned long long* __restrict__ counts) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const float amax =
      grid_amax<kThreads>(thread_amax_bits(x, numel, vectorized, thread, stride), partials);
  Counter counter;
  const float scale = begin_current_scaling_cast<F>(counter, amax, scale_inv, amax_out);
  cast_range<T, F>(x, numel, vectorized, scale, out, counter);
  counter.template flush<kThreads>(counts);
}

}  // namespace

cudaError_t cast_per_tensor(const void* x, HighPrecision type, int64_t numel, Fp8Format format,
                            const float* amax, uint8_t* out, float* scale_inv, cudaStream_t stream,
                            unsigned long long* counts, const DelayedScalingArgs& delayed) {
  return dispatch_high_precision(type, [&](auto type_tag) {
    using T = decltype(type_tag);
    return dispatch_format(format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      const bool vectorized = is_aligned(x, 16) && is_aligned(out, kVec16<T>);
      const int64_t items = vectorized ? numel / kVec16<T> : numel;
      unsigned blocks = 0;
      FP8NN_KERNELS_TRY(grid_for(items, int64_t{kThreads} * kUnroll, kBlocksPerSm, &blocks));
      return launch_with_counter<F>(counts, delayed, [&](auto counter_tag) {
        using Counter = typename decltype(counter_tag)::type;
        cast_per_tensor_kernel<T, F, Counter><<<blocks, kThreads, 0, stream>>>(
            static_cast<const T*>(x), numel, vectorized, amax, out, scale_inv, counts, delayed);
        return cudaGetLastError();
      });
    });
  });
}

cudaError_t amax_cast_scratch_words(int64_t* words) {
  int multiprocessors = 0;
  FP8NN_KERNELS_TRY(multiprocessor_count(&multiprocessors));
  *words = static_cast<int64_t>(multiprocessors) * kMaxResidentBlocksPerSm;
  return cudaSuccess;
}

cudaError_t amax_cast_per_tensor(const void* x, HighPrecision type, int64_t numel, Fp8Format format,
                                 uint8_t* out, float* scale_inv, unsigned* scratch,
                                 int64_t scratch_words, cudaStream_t stream,
                                 unsigned long long* counts, float* amax_out) {
  if (scratch_words < 1) return cudaErrorInvalidValue;
  bool launched = false;
  if (numel <= kOneLaunchMaxElements) {
    FP8NN_KERNELS_TRY(dispatch_high_precision(type, [&](auto type_tag) {
      using T = decltype(type_tag);
      return dispatch_format(format, [&](auto format_tag) {
        constexpr Fp8Format F = decltype(format_tag)::value;
        const bool vectorized = is_aligned(x, 16) && is_aligned(out, kVec16<T>);
        const int64_t items = vectorized ? numel / kVec16<T> : numel;
        const int64_t wanted =
            (items + int64_t{kThreads} * kUnroll - 1) / (int64_t{kThreads} * kUnroll);
        return launch_with_monitor_counter<F>(counts, [&](auto counter_tag) {
          using Counter = typename decltype(counter_tag)::type;
          return launch_cooperative<amax_cast_per_tensor_kernel<T, F, Counter>, kThreads>(
              wanted, scratch_words, stream, &launched, static_cast<const T*>(x), numel, vectorized,
              scratch, out, scale_inv, amax_out, counts);
        });
      });
    }));
  }
  if (launched) return cudaSuccess;
  // The two-launch path.
  float* amax = amax_out != nullptr ? amax_out : reinterpret_cast<float*>(scratch);
  FP8NN_KERNELS_TRY(amax_per_tensor(x, type, numel, amax, stream));
  return cast_per_tensor(x, type, numel, format, amax, out, scale_inv, stream, counts);
}

}  // namespace fp8nn::kernels
