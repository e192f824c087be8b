#pragma once
// Device pieces every quantize kernel shares: 16-byte vectors, the FP8 cast of docs/design.md
// (Quantization), the block max, and host helpers to pick the vector path and the grid size.

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/common/cuda_error.h"
#include "kernels/common/dtypes.cuh"
#include "kernels/common/fp8_format.h"

namespace fp8nn::kernels {

// The launch shape of the streaming kernels (amax, cast, dequantize), which bring it into their
// own namespace: 256 threads a block, up to 8 resident blocks (2048 threads) per multiprocessor,
// kUnroll independent 16-byte loads per thread before the first use.
namespace streaming {
constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;
constexpr int kUnroll = 4;
}  // namespace streaming

// N elements moved with one load or store: alignas makes the compiler emit one LDG/STG of
// sizeof(T) * N bytes (16 for the high-precision side, N for the FP8 side).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Elements of T in one 16-byte access.
template <typename T>
constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

// |v| as the bits of a non-negative float. As unsigned ints these order like the values, +Inf
// (0x7f800000) above every finite value and every NaN (0x7f800001..0x7fffffff) above +Inf: an
// integer max over them is the fp32 amax with NaN propagating, exact and order-independent.
__device__ __forceinline__ unsigned abs_bits(float v) { return __float_as_uint(v) & 0x7fffffffu; }

// The numerics monitor's counters of one cast kernel (fp8_format.h: saturation_bound,
// flush_bound):
// each thread counts what it casts; flush() sums them over the block and adds the block's totals
// to counts[0] (saturated) and counts[1] (flushed to zero) and its max to counts[2] (the amax, as
// the bits of a non-negative float) with one atomic each. Every thread of the block calls flush.
template <Fp8Format F>
struct CastCounter {
  unsigned saturated = 0, flushed = 0, amax_bits = 0;

  __device__ __forceinline__ void add(float v, float scaled) {
    const float scaled_abs = fabsf(scaled);
    saturated += scaled_abs >= saturation_bound(F) ? 1u : 0u;
    flushed += v != 0.0f && scaled_abs <= flush_bound(F) ? 1u : 0u;
  }
  __device__ __forceinline__ void add_amax(float amax) {
    amax_bits = max(amax_bits, abs_bits(amax));
  }
  template <typename Args>
  __device__ __forceinline__ void begin(const Args&) {}

  template <int kThreads>
  __device__ __forceinline__ void flush(unsigned long long* counts) {
    static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
    __shared__ unsigned long long warp_counts[2][kThreads / 32];
    __shared__ unsigned warp_amax[kThreads / 32];
    const unsigned saturated_sum = __reduce_add_sync(0xffffffffu, saturated);
    const unsigned flushed_sum = __reduce_add_sync(0xffffffffu, flushed);
    const unsigned amax_max = __reduce_max_sync(0xffffffffu, amax_bits);
    if (threadIdx.x % 32 == 0) {
      warp_counts[0][threadIdx.x / 32] = saturated_sum;
      warp_counts[1][threadIdx.x / 32] = flushed_sum;
      warp_amax[threadIdx.x / 32] = amax_max;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long block_saturated = 0, block_flushed = 0;
      unsigned block_amax = 0;
      for (int w = 0; w < kThreads / 32; ++w) {
        block_saturated += warp_counts[0][w];
        block_flushed += warp_counts[1][w];
        block_amax = max(block_amax, warp_amax[w]);
      }
      if (block_saturated != 0) atomicAdd(&counts[0], block_saturated);
      if (block_flushed != 0) atomicAdd(&counts[1], block_flushed);
      if (block_amax != 0) atomicMax(&counts[2], static_cast<unsigned long long>(block_amax));
    }
  }
};

// The same interface doing nothing: the monitor off compiles to the kernels without it.
struct NoCounter {
  template <typename Args>
  __device__ __forceinline__ void begin(const Args&) {}
  __device__ __forceinline__ void add(float, float) {}
  __device__ __forceinline__ void add_amax(float) {}
  template <int kThreads>
  __device__ __forceinline__ void flush(unsigned long long*) {}
};

// clamp(v * scale, -max, max) in fp32, counted by `counter`. Comparisons with NaN are false, so
// NaN passes the clamp unchanged (fminf/fmaxf would turn it into a number).
template <Fp8Format F, typename Counter>
__device__ __forceinline__ float scale_and_clamp(float v, float scale, Counter& counter) {
  constexpr float kMax = fp8_max(F);
  float s = __fmul_rn(v, scale);
  counter.add(v, s);
  s = s > kMax ? kMax : s;
  s = s < -kMax ? -kMax : s;
  return s;
}

// The FP8 byte of an infinite input v (docs/design.md: Inf is never made finite): E5M2's Inf,
// E4M3's NaN (it has no Inf), with v's sign. The clamp and satfinite would give +-max instead, and
// v * scale alone cannot tell (with a given amax or a delayed scale, the scale is finite and > 0).
template <Fp8Format F>
__device__ __forceinline__ uint32_t inf_byte(float v) {
  return (__float_as_uint(v) >> 24 & 0x80u) | (F == Fp8Format::kE4M3 ? 0x7fu : 0x7cu);
}

__device__ __forceinline__ bool is_inf(float v) { return abs_bits(v) == 0x7f800000u; }

// Two values to two FP8 bytes (first in the low byte) with one cvt.rn.satfinite: round to nearest
// even; NaN stays NaN; finite values are already within range after the clamp; an infinite input
// gets inf_byte.
template <Fp8Format F, typename Counter>
__device__ __forceinline__ uint16_t cast_pair_to_fp8(float first, float second, float scale,
                                                     Counter& counter) {
  const float2 pair = make_float2(scale_and_clamp<F>(first, scale, counter),
                                  scale_and_clamp<F>(second, scale, counter));
  uint32_t bytes = __nv_cvt_float2_to_fp8x2(pair, __NV_SATFINITE, kInterpretation<F>);
  if (is_inf(first)) bytes = (bytes & 0xff00u) | inf_byte<F>(first);
  if (is_inf(second)) bytes = (bytes & 0x00ffu) | (inf_byte<F>(second) << 8);
  return static_cast<uint16_t>(bytes);
}

template <Fp8Format F, typename Counter>
__device__ __forceinline__ uint8_t cast_to_fp8(float v, float scale, Counter& counter) {
  const uint8_t byte = __nv_cvt_float_to_fp8(scale_and_clamp<F>(v, scale, counter), __NV_SATFINITE,
                                             kInterpretation<F>);
  return is_inf(v) ? static_cast<uint8_t>(inf_byte<F>(v)) : byte;
}

// cast_pair_to_fp8 with a scale per value and fewer instructions, for kernels that know more:
// no clamp before the cvt (satfinite already rounds finite values beyond the format's range to
// +-max and keeps NaN, so the bytes are those of cast_pair_to_fp8), and the Inf fix-up only where
// `may_be_inf` (a caller that knows the amax of the values' group is finite passes false).
template <Fp8Format F, typename Counter>
__device__ __forceinline__ uint16_t cast_pair_to_fp8_lean(float first, float second,
                                                          float scale_first, float scale_second,
                                                          bool may_be_inf, Counter& counter) {
  const float scaled_first = __fmul_rn(first, scale_first);
  const float scaled_second = __fmul_rn(second, scale_second);
  counter.add(first, scaled_first);
  counter.add(second, scaled_second);
  uint32_t bytes = __nv_cvt_float2_to_fp8x2(make_float2(scaled_first, scaled_second),
                                            __NV_SATFINITE, kInterpretation<F>);
  if (may_be_inf) {
    if (is_inf(first)) bytes = (bytes & 0xff00u) | inf_byte<F>(first);
    if (is_inf(second)) bytes = (bytes & 0x00ffu) | (inf_byte<F>(second) << 8);
  }
  return static_cast<uint16_t>(bytes);
}

// N high-precision values (N a multiple of 4) to N FP8 bytes packed little-endian into N / 4
// words (byte j of the input order in bits 8 * (j % 4) of word j / 4), kept in registers.
template <Fp8Format F, typename T, int N, typename Counter>
__device__ __forceinline__ Vec<uint32_t, N / 4> cast_vec_to_fp8(const Vec<T, N>& in, float scale,
                                                                Counter& counter) {
  static_assert(N % 4 == 0, "whole words of FP8 bytes");
  Vec<uint32_t, N / 4> out;
#pragma unroll
  for (int w = 0; w < N / 4; ++w) {
    const uint32_t low =
        cast_pair_to_fp8<F>(to_float(in.v[4 * w]), to_float(in.v[4 * w + 1]), scale, counter);
    const uint32_t high =
        cast_pair_to_fp8<F>(to_float(in.v[4 * w + 2]), to_float(in.v[4 * w + 3]), scale, counter);
    out.v[w] = low | (high << 16);
  }
  return out;
}

// kRows bytes (a multiple of 4) down column c of a shared byte tile with row pitch `pitch`, from
// row r on, packed little-endian into words (row r + i's byte is byte i): the unit of a
// transposed store.
template <int kRows>
__device__ __forceinline__ Vec<uint32_t, kRows / 4> tile_column(const uint8_t* tile, int pitch,
                                                                int r, int c) {
  Vec<uint32_t, kRows / 4> column;
#pragma unroll
  for (int w = 0; w < kRows / 4; ++w) {
    uint32_t word = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      word |= static_cast<uint32_t>(tile[(r + 4 * w + j) * pitch + c]) << (8 * j);
    }
    column.v[w] = word;
  }
  return column;
}

// FP8 byte to fp32, exactly (every FP8 value is an fp16 value).
template <Fp8Format F>
__device__ __forceinline__ float fp8_to_float(uint8_t q) {
  return __half2float(fp8_to_half(q, kInterpretation<F>));
}

// ---- host helpers ------------------------------------------------------------------------------

inline bool is_aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// Multiprocessors of the current device, queried once per device (so that nothing but
// cudaGetDevice runs per launch, which is also safe while a CUDA graph is being captured).
inline cudaError_t multiprocessor_count(int* count) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> counts[kMaxDevices] = {};
  int device = 0;
  FP8NN_KERNELS_TRY(cudaGetDevice(&device));
  *count = device < kMaxDevices ? counts[device].load(std::memory_order_relaxed) : 0;
  if (*count == 0) {
    FP8NN_KERNELS_TRY(cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, device));
    if (device < kMaxDevices) counts[device].store(*count, std::memory_order_relaxed);
  }
  return cudaSuccess;
}

// Lets `kernel` take up to `bytes` of dynamic shared memory on the current device (past the 48 KB
// the runtime grants unasked), set once per kernel and device.
inline cudaError_t allow_dynamic_shared(const void* kernel, int bytes) {
  static std::mutex mutex;
  static std::vector<std::tuple<const void*, int, int>> granted;  // kernel, device, bytes
  int device = 0;
  FP8NN_KERNELS_TRY(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  for (const auto& [k, d, b] : granted) {
    if (k == kernel && d == device && b >= bytes) return cudaSuccess;
  }
  FP8NN_KERNELS_TRY(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  granted.emplace_back(kernel, device, bytes);
  return cudaSuccess;
}

// Blocks for a grid-stride loop over `work_items` items, `items_per_block` per block and pass:
// enough for the work, at most `blocks_per_sm` resident blocks on every multiprocessor, at least 1.
inline cudaError_t grid_for(int64_t work_items, int64_t items_per_block, int blocks_per_sm,
                            unsigned* grid) {
  int multiprocessors = 0;
  FP8NN_KERNELS_TRY(multiprocessor_count(&multiprocessors));
  const int64_t wanted = (work_items + items_per_block - 1) / items_per_block;
  const int64_t resident = static_cast<int64_t>(multiprocessors) * blocks_per_sm;
  const int64_t blocks = wanted < resident ? wanted : resident;
  *grid = static_cast<unsigned>(blocks < 1 ? 1 : blocks);
  return cudaSuccess;
}

// Reduces `value` over a block of kThreads threads (a multiple of 32) with `warp_reduce`, a
// full-warp __reduce_*_sync: the result is valid in thread 0. Every thread of the block must call
// it. Calls of one instantiation share its shared array; kSyncFirst makes a call wait until the
// previous call's readers are done with it.
template <int kThreads, bool kSyncFirst, typename WarpReduce>
__device__ __forceinline__ unsigned block_reduce(unsigned value, WarpReduce warp_reduce) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  __shared__ unsigned partial[kThreads / 32];
  value = warp_reduce(value);
  if (kSyncFirst) __syncthreads();
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = value;
  __syncthreads();
  if (threadIdx.x < 32) {
    value = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0u;
    value = warp_reduce(value);
  }
  return value;
}

struct WarpMax {
  __device__ __forceinline__ unsigned operator()(unsigned v) const {
    return __reduce_max_sync(0xffffffffu, v);
  }
};
struct WarpSum {
  __device__ __forceinline__ unsigned operator()(unsigned v) const {
    return __reduce_add_sync(0xffffffffu, v);
  }
};

// One thread's share of a grid-stride amax pass over `numel` contiguous elements of x: the max of
// abs_bits over its 16-byte vectors (kUnroll loads in flight) and the scalar tail, or over single
// elements when x is not 16-byte aligned. `thread` is its index in the grid, `stride` the grid's
// thread count.
template <typename T>
__device__ __forceinline__ unsigned thread_amax_bits(const T* __restrict__ x, int64_t numel,
                                                     bool vectorized, int64_t thread,
                                                     int64_t stride) {
  constexpr int kVec = kVec16<T>;
  constexpr int kUnroll = streaming::kUnroll;
  unsigned bits = 0;
  int64_t scalar_begin = 0;
  if (vectorized) {
    const int64_t vectors = numel / kVec;
    const auto* xv = reinterpret_cast<const Vec<T, kVec>*>(x);
    for (int64_t base = thread; base < vectors; base += stride * kUnroll) {
      Vec<T, kVec> v[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        if (base + k * stride < vectors) v[k] = xv[base + k * stride];
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        if (base + k * stride < vectors) {
#pragma unroll
          for (int j = 0; j < kVec; ++j) bits = max(bits, abs_bits(to_float(v[k].v[j])));
        }
      }
    }
    scalar_begin = vectors * kVec;
  }
  for (int64_t i = scalar_begin + thread; i < numel; i += stride) {
    bits = max(bits, abs_bits(to_float(x[i])));
  }
  return bits;
}

// Max of `bits` over a block (block_reduce; a second call must follow a __syncthreads after the
// first one's thread 0 has its result).
template <int kThreads>
__device__ __forceinline__ unsigned block_max(unsigned bits) {
  return block_reduce<kThreads, false>(bits, WarpMax{});
}
// Sum of `value` over a block (block_reduce), callable again without a __syncthreads between.
template <int kThreads>
__device__ __forceinline__ unsigned block_sum(unsigned value) {
  return block_reduce<kThreads, true>(value, WarpSum{});
}

}  // namespace fp8nn::kernels
