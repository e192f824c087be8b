// Per-group quantize in one pass. A group is small (at most a few KB), so the group's amax and its
// cast happen back to back in the same lanes: kLanes = lanes_per_group consecutive lanes of a
// warp (a power of two, so several groups share a warp when groups are short) load the group with
// 16-byte vectors, up to kUnroll per lane at once, reduce their amax with shuffles, derive the
// scale and cast. When the group fits in those kUnroll vectors per lane (G <= 1024 for 16-bit
// input) it is cast from registers; longer groups are read again, from L1/L2, chunk by chunk.
// Unaligned shapes or pointers (cols or G not a multiple of the vector, offset views) run the same
// code with one element per load.
// Staged (TileLoad::kShared, groups longer than the registers hold): each warp copies its group
// into its own shared rows by cp.async, all of it in flight at once and no registers held, then
// reads it from there for the amax and for the cast, instead of reading the group twice from
// memory (the second time from L1/L2) with kUnroll vectors per lane in flight.

#include "kernels/quantize/quantize_per_group.h"

#include <algorithm>

#include "kernels/quantize/delayed_scaling.cuh"  // launch_with_monitor_counter
#include "kernels/quantize/quantize_common.cuh"
#include "kernels/quantize/tile_io.cuh"  // copy_async_16

namespace fp8nn::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kUnroll = 4;
// 3 resident blocks: ptxas then has up to 85 registers for the kUnroll vectors in flight (a cap
// of 64 made the 16-bit cast spill).
constexpr int kBlocksPerSm = 3;
// The staged kernel's shared memory per block at most (2 blocks per SM): groups up to 6144 16-bit
// or 3072 fp32 values.
constexpr int64_t kStagedBytesPerBlock = 96 * 1024;

struct GroupLayout {
  int64_t rows, cols, group_size, groups_per_row;
  int lanes_per_group;  // power of two, 1..32
  bool in_registers;    // every group fits in kUnroll vectors per lane
  int staged_vectors;   // the staged kernel: vectors of a warp's shared rows (the longest group)
};

// Casts and stores one vector of kVec elements (kVec == 1: the scalar path).
template <Fp8Format F, typename T, int kVec, typename Counter>
__device__ __forceinline__ void cast_store(const Vec<T, kVec>& v, float scale, uint8_t* out,
                                           Counter& counter) {
  if constexpr (kVec == 1) {
    *out = cast_to_fp8<F>(to_float(v.v[0]), scale, counter);
  } else {
    *reinterpret_cast<Vec<uint32_t, kVec / 4>*>(out) = cast_vec_to_fp8<F>(v, scale, counter);
  }
}

template <typename T, int kVec>
__device__ __forceinline__ unsigned max_abs_bits(unsigned bits, const Vec<T, kVec>& v) {
#pragma unroll
  for (int j = 0; j < kVec; ++j) bits = max(bits, abs_bits(to_float(v.v[j])));
  return bits;
}

// kStaged (vectorized, kCast, groups of a whole warp): the group staged in the warp's shared rows.
// kCast: write out and scale_inv into `result`; otherwise write the amax into `result`.
// Counter (with kCast): CastCounter<F> (the numerics monitor's counts into `counts`) or NoCounter.
// kPowerOfTwo: scales rounded down to powers of two (a template argument, so that the kernels
// without it are the ones they were before it existed).
template <typename T, Fp8Format F, int kVec, bool kCast, typename Counter, bool kPowerOfTwo,
          bool kStaged = false>
__global__ void __launch_bounds__(kThreads, kStaged ? 2 : kBlocksPerSm)
    per_group_kernel(const T* __restrict__ x, GroupLayout layout, uint8_t* __restrict__ out,
                     float* __restrict__ result, unsigned long long* __restrict__ counts) {
  using V = Vec<T, kVec>;
  static_assert(!kStaged || (kVec > 1 && kCast), "staged: vectorized casts");
  extern __shared__ __align__(16) uint8_t staged_groups[];  // kStaged only
  Counter counter;
  const int lanes = layout.lanes_per_group;
  const int lane = threadIdx.x % 32;
  const int lane_in_group = lane % lanes;
  const int groups_per_warp = 32 / lanes;
  const int64_t total_groups = layout.rows * layout.groups_per_row;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t first_warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;

  // The batch loop is uniform across the warp, so every lane reaches the shuffles.
  for (int64_t batch = first_warp; batch * groups_per_warp < total_groups; batch += warps) {
    const int64_t group = batch * groups_per_warp + lane / lanes;
    const bool active = group < total_groups;
    int64_t offset = 0, vectors = 0;  // element offset of the group, its length in vectors
    if (active) {
      const int64_t row = group / layout.groups_per_row;
      const int64_t begin = (group % layout.groups_per_row) * layout.group_size;
      const int64_t length = min(layout.group_size, layout.cols - begin);
      offset = row * layout.cols + begin;
      vectors = length / kVec;  // exact: the vector path needs kVec | cols and kVec | group_size
    }
    const V* xv = reinterpret_cast<const V*>(x + offset);

    if constexpr (kStaged) {
      // One group per warp (lanes_per_group 32): lane l copies, and later reads, vectors l + 32 j
      // of it, so that it reads back only its own copies (and the next group overwrites only
      // slots this lane has read).
      V* const staged =
          reinterpret_cast<V*>(staged_groups) + (threadIdx.x / 32) * int64_t{layout.staged_vectors};
      for (int64_t i = lane; i < vectors; i += 32) copy_async_16(staged + i, xv + i);
      wait_async_copies();
      unsigned bits = 0;
      for (int64_t i = lane; i < vectors; i += 32) bits = max_abs_bits(bits, staged[i]);
      for (int o = 16; o > 0; o /= 2) bits = max(bits, __shfl_xor_sync(0xffffffffu, bits, o));
      const float amax = __uint_as_float(bits);
      const float scale = scale_from_amax(amax, fp8_max(F), kPowerOfTwo);
      if (active && lane == 0) result[group] = __frcp_rn(scale);
      counter.add_amax(amax);
      for (int64_t i = lane; i < vectors; i += 32) {
        cast_store<F>(staged[i], scale, out + offset + i * kVec, counter);
      }
      continue;
    }

    // A lane handles vectors base + k * lanes, k < kUnroll, of its group at a time.
    V v[kUnroll];
    const auto load = [&](auto base) {
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        if (base + k * lanes < vectors) v[k] = xv[base + k * lanes];
      }
    };
    unsigned bits = 0;
    const auto reduce = [&](auto base) {
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        if (base + k * lanes < vectors) bits = max_abs_bits(bits, v[k]);
      }
    };
    if (layout.in_registers) {
      load(lane_in_group);
      reduce(lane_in_group);
    } else {
      for (int64_t base = lane_in_group; base < vectors; base += kUnroll * lanes) {
        load(base);
        reduce(base);
      }
    }
    for (int o = lanes / 2; o > 0; o /= 2) bits = max(bits, __shfl_xor_sync(0xffffffffu, bits, o));
    const float amax = __uint_as_float(bits);

    if constexpr (!kCast) {
      if (active && lane_in_group == 0) result[group] = amax;
    } else {
      const float scale = scale_from_amax(amax, fp8_max(F), kPowerOfTwo);
      if (active && lane_in_group == 0) result[group] = __frcp_rn(scale);
      counter.add_amax(amax);
      uint8_t* group_out = out + offset;
      const auto cast = [&](auto base) {
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) {
          const int64_t i = base + k * lanes;
          if (i < vectors) cast_store<F>(v[k], scale, group_out + i * kVec, counter);
        }
      };
      if (layout.in_registers) {
        cast(lane_in_group);
      } else {
        for (int64_t base = lane_in_group; base < vectors; base += kUnroll * lanes) {
          load(base);
          cast(base);
        }
      }
    }
  }
  counter.template flush<kThreads>(counts);
}

template <typename T, Fp8Format F, bool kCast, typename Counter, bool kPowerOfTwo = false>
cudaError_t launch_per_group(const void* x, int64_t rows, int64_t cols, int64_t group_size,
                             uint8_t* out, float* result, cudaStream_t stream,
                             unsigned long long* counts, TileLoad load = TileLoad::kRegisters) {
  if (group_size <= 0) return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  GroupLayout layout{rows, cols, group_size, (cols + group_size - 1) / group_size, 1, true, 0};
  const bool vectorized = cols % kVec16<T> == 0 && group_size % kVec16<T> == 0 &&
                          is_aligned(x, 16) && (!kCast || is_aligned(out, kVec16<T>));
  const int vec = vectorized ? kVec16<T> : 1;
  // Lanes per group: enough that each lane loads at most kUnroll vectors, up to a whole warp.
  const int64_t group_vectors = (std::min(group_size, cols) + vec - 1) / vec;
  while (layout.lanes_per_group < 32 && int64_t{layout.lanes_per_group} * kUnroll < group_vectors) {
    layout.lanes_per_group *= 2;
  }
  layout.in_registers = group_vectors <= int64_t{layout.lanes_per_group} * kUnroll;
  const int64_t groups_per_warp = 32 / layout.lanes_per_group;
  const int64_t warps = (rows * layout.groups_per_row + groups_per_warp - 1) / groups_per_warp;
  const T* typed = static_cast<const T*>(x);
  // Staged where it changes anything: groups longer than the registers hold, whose shared rows
  // fit kStagedBytesPerBlock.
  const int64_t staged_bytes = int64_t{kWarpsPerBlock} * group_vectors * 16;
  if constexpr (kCast) {
    if (load == TileLoad::kShared && vectorized && !layout.in_registers &&
        staged_bytes <= kStagedBytesPerBlock) {
      layout.staged_vectors = static_cast<int>(group_vectors);
      const auto kernel = per_group_kernel<T, F, kVec16<T>, true, Counter, kPowerOfTwo, true>;
      FP8NN_KERNELS_TRY(allow_dynamic_shared(reinterpret_cast<const void*>(kernel),
                                             static_cast<int>(staged_bytes)));
      unsigned blocks = 0;
      FP8NN_KERNELS_TRY(grid_for(warps, kWarpsPerBlock, 2, &blocks));
      kernel<<<blocks, kThreads, static_cast<size_t>(staged_bytes), stream>>>(typed, layout, out,
                                                                              result, counts);
      return cudaGetLastError();
    }
  }
  unsigned blocks = 0;
  FP8NN_KERNELS_TRY(grid_for(warps, kWarpsPerBlock, kBlocksPerSm, &blocks));
  if (vectorized) {
    per_group_kernel<T, F, kVec16<T>, kCast, Counter, kPowerOfTwo>
        <<<blocks, kThreads, 0, stream>>>(typed, layout, out, result, counts);
  } else {
    per_group_kernel<T, F, 1, kCast, Counter, kPowerOfTwo>
        <<<blocks, kThreads, 0, stream>>>(typed, layout, out, result, counts);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t quantize_per_group(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                               int64_t group_size, Fp8Format format, uint8_t* out, float* scale_inv,
                               cudaStream_t stream, unsigned long long* counts, bool power_of_two,
                               TileLoad load) {
  return dispatch_high_precision(type, [&](auto type_tag) {
    using T = decltype(type_tag);
    return dispatch_format(format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      return launch_with_monitor_counter<F>(counts, [&](auto counter_tag) {
        using Counter = typename decltype(counter_tag)::type;
        return power_of_two ? launch_per_group<T, F, true, Counter, true>(
                                  x, rows, cols, group_size, out, scale_inv, stream, counts, load)
                            : launch_per_group<T, F, true, Counter, false>(
                                  x, rows, cols, group_size, out, scale_inv, stream, counts, load);
      });
    });
  });
}

cudaError_t amax_per_group(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                           int64_t group_size, float* amax, cudaStream_t stream) {
  return dispatch_high_precision(type, [&](auto type_tag) {
    using T = decltype(type_tag);
    // The format does not matter without the cast; E4M3 names one instantiation.
    return launch_per_group<T, Fp8Format::kE4M3, false, NoCounter>(x, rows, cols, group_size,
                                                                   nullptr, amax, stream, nullptr);
  });
}

}  // namespace fp8nn::kernels
