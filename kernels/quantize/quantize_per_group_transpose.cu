// Per-group quantize along rows and columns: one thread block per 128 x 128 tile, which it reads
// once.
//
// 1. Load: each thread reads its 16-byte vectors of the tile into registers (tile_io.cuh: a
//    thread's vectors share their columns and sit kRowsPerLoad rows apart), or (TileLoad::kShared)
//    copies them into shared memory and reads them from there in each phase. Row amaxes: the lanes
//    holding a row (consecutive, kLanesPerRow of them) reduce with shuffles, so every lane of a row
//    has its max. Column amaxes: each thread's max over its rows, across the two lanes of a warp
//    that share columns when a row is 16 lanes wide, then one shared-memory atomicMax per column
//    per warp.
// 2. Row copy: each row cast with its own scale, straight from the registers into `out`.
// 3. Column copy: every element cast with its column's scale into a shared byte tile, whose
//    transpose tile_io.cuh's store_tile_transposed writes into `out_t` with 16-byte stores.
// Tiles not wholly inside x, or shapes and pointers that break 16-byte alignment, take a scalar
// path (one element per thread and step, bounds-checked, amaxes by shared atomics) for the phase
// concerned. Amaxes are compared as the bits of |v| (abs_bits), so a NaN wins over every number,
// as in the per-group kernel, and both copies equal quantize_per_group's bit for bit.

#include "kernels/quantize/quantize_per_group_transpose.h"

#include "kernels/quantize/grid_amax.cuh"
#include "kernels/quantize/quantize_common.cuh"
#include "kernels/quantize/tile_io.cuh"

namespace fp8nn::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = static_cast<int>(kTransposeGroup);
constexpr int kTilePitch = kTile + 4;       // bytes per shared row: 4-byte aligned, 33 words
constexpr unsigned kInfBits = 0x7f800000u;  // abs_bits of Inf; NaNs compare above it
static_assert(kThreads >= kTile, "one thread per tile row or column for the scales");
// Resident blocks: reading into registers, two (ptxas then has up to 128 registers, which the 16
// vectors of an fp32 tile in flight need; left to itself it chose 64 for one instance and
// spilled); staged in shared memory, as many as their tiles fit (32 KB of 16-bit input: 4; 64 KB
// of fp32: 2).
template <typename T, TileLoad kLoad>
constexpr int kBlocksPerSm = kLoad == TileLoad::kShared && sizeof(T) < 4 ? 4 : 2;

// Counter: CastCounter<F> (the numerics monitor's counts of the row copy into `counts`) or
// NoCounter. kLoad: kRegisters or kShared (the tile in dynamic shared memory,
// TileVectors::kStagedBytes).
template <typename T, Fp8Format F, typename Counter, TileLoad kLoad>
__global__ void __launch_bounds__(kThreads, (kBlocksPerSm<T, kLoad>))
    quantize_per_group_transpose_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                        int64_t tiles_r, int64_t tiles_c, bool load_vectorized,
                                        bool store_t_vectorized, uint8_t* __restrict__ out,
                                        float* __restrict__ scale_inv, uint8_t* __restrict__ out_t,
                                        float* __restrict__ scale_inv_t, bool power_of_two,
                                        unsigned long long* __restrict__ counts) {
  __shared__ __align__(16) uint8_t tile[kTile * kTilePitch];
  __shared__ unsigned row_bits[kTile];
  __shared__ unsigned column_bits[kTile];
  __shared__ float row_scale[kTile];
  __shared__ float column_scale[kTile];
  extern __shared__ __align__(16) uint8_t staged_tile[];  // kShared only
  Counter counter;
  NoCounter uncounted;  // the monitor counts the first copy of a tensor only
  const int64_t br = blockIdx.x / tiles_c, bc = blockIdx.x % tiles_c;
  const int64_t r0 = br * kTile, c0 = bc * kTile;
  const bool full_tile = r0 + kTile <= rows && c0 + kTile <= cols;
  const int tid = threadIdx.x;
  if (tid < kTile) {
    row_bits[tid] = 0;
    column_bits[tid] = 0;
  }
  __syncthreads();

  // Thread tid < kTile turns column tid's amax into its scale and scale_inv_t entry.
  const auto column_scales = [&] {
    if (tid < kTile) {
      const float amax = __uint_as_float(column_bits[tid]);
      const float scale = scale_from_amax(amax, fp8_max(F), power_of_two);
      column_scale[tid] = scale;
      if (c0 + tid < cols) scale_inv_t[(c0 + tid) * tiles_r + br] = __frcp_rn(scale);
    }
  };

  if (full_tile && load_vectorized) {
    using Vectors = TileVectors<T, kTile, kTile, kThreads>;
    constexpr int kVec = Vectors::kVec;
    constexpr int kLanesPerRow = Vectors::kVectorsPerRow;  // 16 (16-bit input) or 32 (fp32)
    constexpr int kRowsPerLoad = kThreads / kLanesPerRow;
    static_assert(kLanesPerRow == 16 || kLanesPerRow == 32, "a row spans half a warp or a warp");
    constexpr bool kStaged = kLoad == TileLoad::kShared;
    typename Vectors::Vector v[kStaged ? 1 : Vectors::kLoads];
    auto* const staged = reinterpret_cast<typename Vectors::Vector*>(staged_tile);
    if constexpr (kStaged) {
      Vectors::stage(x, cols, r0, c0, tid, staged);
    } else {
      Vectors::load(x, cols, r0, c0, tid, v);
    }
    // The thread's vector k, from its registers or from the staged tile.
    const auto vector = [&](int k) {
      if constexpr (kStaged) {
        return staged[tid + k * kThreads];
      } else {
        return v[k];
      }
    };
    const int lane = tid % 32;
    const int c = (tid % kLanesPerRow) * kVec;  // the thread's columns c .. c + kVec - 1
    unsigned column_max[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) column_max[j] = 0;
    unsigned row_max[Vectors::kLoads];
#pragma unroll
    for (int k = 0; k < Vectors::kLoads; ++k) {
      unsigned bits = 0;
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const unsigned b = abs_bits(to_float(vector(k).v[j]));
        bits = max(bits, b);
        column_max[j] = max(column_max[j], b);
      }
#pragma unroll
      for (int offset = kLanesPerRow / 2; offset > 0; offset /= 2) {
        bits = max(bits, __shfl_xor_sync(0xffffffffu, bits, offset));
      }
      row_max[k] = bits;
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      unsigned bits = column_max[j];
#pragma unroll
      for (int offset = kLanesPerRow; offset < 32; offset *= 2) {
        bits = max(bits, __shfl_xor_sync(0xffffffffu, bits, offset));
      }
      if (lane < kLanesPerRow) atomicMax(&column_bits[c + j], bits);
    }
    __syncthreads();
    column_scales();

    // 2. the row copy, each row with its scale (every lane of the row derives the same one).
#pragma unroll
    for (int k = 0; k < Vectors::kLoads; ++k) {
      const int r = tid / kLanesPerRow + k * kRowsPerLoad;
      const float amax = __uint_as_float(row_max[k]);
      const float scale = scale_from_amax(amax, fp8_max(F), power_of_two);
      if (tid % kLanesPerRow == 0) {
        scale_inv[(r0 + r) * tiles_c + bc] = __frcp_rn(scale);
        counter.add_amax(amax);
      }
      // An Inf in the row makes its amax Inf (or NaN, where the row holds one too).
      const bool may_be_inf = row_max[k] >= kInfBits;
      Vec<uint32_t, kVec / 4> bytes;
#pragma unroll
      for (int w = 0; w < kVec / 4; ++w) {
        const auto in = vector(k);
        const uint32_t low = cast_pair_to_fp8_lean<F>(
            to_float(in.v[4 * w]), to_float(in.v[4 * w + 1]), scale, scale, may_be_inf, counter);
        const uint32_t high =
            cast_pair_to_fp8_lean<F>(to_float(in.v[4 * w + 2]), to_float(in.v[4 * w + 3]), scale,
                                     scale, may_be_inf, counter);
        bytes.v[w] = low | (high << 16);
      }
      *reinterpret_cast<Vec<uint32_t, kVec / 4>*>(out + (r0 + r) * cols + c0 + c) = bytes;
    }
    __syncthreads();  // column_scale

    // 3. the column copy's bytes into the tile, 4 per shared word.
    float scales[kVec];
    unsigned columns_max = 0;  // of the thread's columns' amaxes
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      scales[j] = column_scale[c + j];
      columns_max = max(columns_max, column_bits[c + j]);
    }
    const bool may_be_inf = columns_max >= kInfBits;
#pragma unroll
    for (int k = 0; k < Vectors::kLoads; ++k) {
      const int r = tid / kLanesPerRow + k * kRowsPerLoad;
      const auto in = vector(k);
#pragma unroll
      for (int w = 0; w < kVec / 4; ++w) {
        const uint32_t low =
            cast_pair_to_fp8_lean<F>(to_float(in.v[4 * w]), to_float(in.v[4 * w + 1]),
                                     scales[4 * w], scales[4 * w + 1], may_be_inf, uncounted);
        const uint32_t high =
            cast_pair_to_fp8_lean<F>(to_float(in.v[4 * w + 2]), to_float(in.v[4 * w + 3]),
                                     scales[4 * w + 2], scales[4 * w + 3], may_be_inf, uncounted);
        *reinterpret_cast<uint32_t*>(tile + r * kTilePitch + c + 4 * w) = low | (high << 16);
      }
    }
  } else {
    for (int index = tid; index < kTile * kTile; index += kThreads) {
      const int r = index / kTile, c = index % kTile;
      if (r0 + r < rows && c0 + c < cols) {
        const unsigned bits = abs_bits(to_float(x[(r0 + r) * cols + c0 + c]));
        atomicMax(&row_bits[r], bits);
        atomicMax(&column_bits[c], bits);
      }
    }
    __syncthreads();
    column_scales();
    if (tid < kTile) {
      const float amax = __uint_as_float(row_bits[tid]);
      const float scale = scale_from_amax(amax, fp8_max(F), power_of_two);
      row_scale[tid] = scale;
      if (r0 + tid < rows) {
        scale_inv[(r0 + tid) * tiles_c + bc] = __frcp_rn(scale);
        counter.add_amax(amax);
      }
    }
    __syncthreads();
    for (int index = tid; index < kTile * kTile; index += kThreads) {
      const int r = index / kTile, c = index % kTile;
      uint8_t q_t = 0;
      if (r0 + r < rows && c0 + c < cols) {
        const int64_t offset = (r0 + r) * cols + c0 + c;
        const float value = to_float(x[offset]);
        out[offset] = cast_to_fp8<F>(value, row_scale[r], counter);
        q_t = cast_to_fp8<F>(value, column_scale[c], uncounted);
      }
      tile[r * kTilePitch + c] = q_t;
    }
  }
  __syncthreads();

  // out_t[c0 + c][r0 + r] = tile[r][c]
  store_tile_transposed<kTile, kTile, kTilePitch, kThreads>(tile, out_t, rows, cols, r0, c0,
                                                            full_tile && store_t_vectorized, tid);
  counter.template flush<kThreads>(counts);
}

}  // namespace

cudaError_t quantize_per_group_with_transpose(const void* x, HighPrecision type, int64_t rows,
                                              int64_t cols, Fp8Format format, uint8_t* out,
                                              float* scale_inv, uint8_t* out_t, float* scale_inv_t,
                                              cudaStream_t stream, unsigned long long* counts,
                                              bool power_of_two, TileLoad load) {
  const int64_t tiles_r = (rows + kTile - 1) / kTile;
  const int64_t tiles_c = (cols + kTile - 1) / kTile;
  const int64_t tiles = tiles_r * tiles_c;
  if (tiles == 0) return cudaSuccess;
  if (tiles > 0x7fffffff) return cudaErrorInvalidValue;  // one thread block per tile
  if (out == nullptr || scale_inv == nullptr || out_t == nullptr || scale_inv_t == nullptr ||
      load == TileLoad::kReadTwice) {
    return cudaErrorInvalidValue;
  }
  return dispatch_high_precision(type, [&](auto type_tag) {
    using T = decltype(type_tag);
    return dispatch_format(format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      const TilePaths paths = tile_paths<T>(x, out, out_t, rows, cols);
      return launch_with_monitor_counter<F>(counts, [&](auto counter_tag) {
        using Counter = typename decltype(counter_tag)::type;
        const auto kernel =
            load == TileLoad::kShared
                ? quantize_per_group_transpose_kernel<T, F, Counter, TileLoad::kShared>
                : quantize_per_group_transpose_kernel<T, F, Counter, TileLoad::kRegisters>;
        int shared_bytes = 0;
        FP8NN_KERNELS_TRY((staged_tile_bytes<T, kTile, kTile, kThreads>(
            reinterpret_cast<const void*>(kernel), load, &shared_bytes)));
        kernel<<<static_cast<unsigned>(tiles), kThreads, shared_bytes, stream>>>(
            static_cast<const T*>(x), rows, cols, tiles_r, tiles_c, paths.load_vectorized,
            paths.store_t_vectorized, out, scale_inv, out_t, scale_inv_t, power_of_two, counts);
        return cudaGetLastError();
      });
    });
  });
}

}  // namespace fp8nn::kernels
