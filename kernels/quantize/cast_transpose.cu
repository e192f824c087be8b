// Cast + transpose through a shared-memory tile of kTileRows x kTileCols elements per block.
//
// 1. Load: each thread reads 16-byte vectors of x (all loads issued before the first use), casts
//    them, stores the FP8 bytes to `out` and to the shared tile (as 4-byte words).
// 2. Transposed store: each thread gathers 16 bytes down one tile column and writes them as one
//    16-byte store into `out_t` (tile_io.cuh; the row pitch of kTilePitch = 68 bytes keeps its
//    shared-memory reads conflict-free).
// Tiles not wholly inside x, or shapes/pointers that break 16-byte alignment, take a scalar path
// (one element per thread and step, bounds-checked) for the phase concerned.
// Blocks take tiles from the end of x first (see cast.cu: the amax pass left the end in L2).

#include "kernels/quantize/amax.h"
#include "kernels/quantize/cast.h"
#include "kernels/quantize/cast_transpose.h"
#include "kernels/quantize/delayed_scaling.cuh"
#include "kernels/quantize/grid_amax.cuh"
#include "kernels/quantize/quantize_common.cuh"
#include "kernels/quantize/tile_io.cuh"

namespace fp8nn::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kTileRows = 128;
constexpr int kTileCols = 64;
constexpr int kTilePitch = kTileCols + 4;  // bytes per shared row: 4-byte aligned, 17 words

// Column sums of x (a bias gradient, dy.sum(0) in fp32) taken from the tiles as they are cast:
// each tile's 64 column sums go to partial[tile row][column]; the cooperative kernel adds the
// tile rows up after its last tile. Every sum is taken in a fixed order (per thread, then a
// butterfly over the lanes that share columns, then the warps in order), so results repeat bit
// for bit. `warp_sums`: shared [kThreads / 32][kTileCols].
struct ColumnSums {
  float* warp_sums = nullptr;
  float* partial = nullptr;
};

// One tile of x cast with `scale` into `out` and `out_t`, through the block's shared `tile`; with
// kSums, its column sums into `sums` too.
template <typename T, Fp8Format F, bool kSums, typename Counter>
__device__ __forceinline__ void cast_transpose_tile(
    const T* __restrict__ x, int64_t rows, int64_t cols, int64_t tiles_c, int64_t tile_index,
    bool load_vectorized, bool store_t_vectorized, float scale, uint8_t* __restrict__ out,
    uint8_t* __restrict__ out_t, uint8_t* tile, Counter& counter, ColumnSums sums = {}) {
  const int64_t r0 = (tile_index / tiles_c) * kTileRows;
  const int64_t c0 = (tile_index % tiles_c) * kTileCols;
  const bool full_tile = r0 + kTileRows <= rows && c0 + kTileCols <= cols;
  const int tid = threadIdx.x;

  // ---- 1. load, cast, write `out` and the tile -------------------------------------------
  if (full_tile && load_vectorized) {
    using Vectors = TileVectors<T, kTileRows, kTileCols, kThreads>;
    constexpr int kVec = Vectors::kVec;
    constexpr int kVectorsPerRow = Vectors::kVectorsPerRow;
    constexpr int kLoads = Vectors::kLoads;
    typename Vectors::Vector v[kLoads];
    Vectors::load(x, cols, r0, c0, tid, v);
    Vectors::template cast_store<F, kTilePitch>(v, scale, out, cols, r0, c0, tile, tid, counter);
    if constexpr (kSums) {
      // A thread's vectors all sit in columns (tid % kVectorsPerRow) * kVec + [0, kVec), and so
      // do those of the lanes that differ from it in the bits above kVectorsPerRow.
      static_assert(32 % kVectorsPerRow == 0, "lanes sharing columns differ in the high bits");
      float part[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        part[j] = 0.0f;
#pragma unroll
        for (int k = 0; k < kLoads; ++k) part[j] += to_float(v[k].v[j]);
      }
#pragma unroll
      for (int lanes = kVectorsPerRow; lanes < 32; lanes *= 2) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) part[j] += __shfl_xor_sync(0xffffffffu, part[j], lanes);
      }
      const int lane = tid % 32;
      if (lane < kVectorsPerRow) {
#pragma unroll
        for (int j = 0; j < kVec; ++j)
          sums.warp_sums[(tid / 32) * kTileCols + lane * kVec + j] = part[j];
      }
    }
  } else {
    float part = 0.0f;  // kSums: column tid % kTileCols, rows tid / kTileCols + 4i
    for (int index = tid; index < kTileRows * kTileCols; index += kThreads) {
      const int r = index / kTileCols, c = index % kTileCols;
      uint8_t q = 0;
      if (r0 + r < rows && c0 + c < cols) {
        const int64_t offset = (r0 + r) * cols + c0 + c;
        const float value = to_float(x[offset]);
        q = cast_to_fp8<F>(value, scale, counter);
        if (out != nullptr) out[offset] = q;
        if constexpr (kSums) part += value;
      }
      tile[r * kTilePitch + c] = q;
    }
    if constexpr (kSums) {
      static_assert(kThreads % kTileCols == 0 && 2 * kThreads / kTileCols == kThreads / 32,
                    "the scalar path fills half of warp_sums' rows");
      sums.warp_sums[tid] = part;
      sums.warp_sums[kThreads + tid] = 0.0f;
    }
  }
  __syncthreads();
  if constexpr (kSums) {
    if (tid < kTileCols && c0 + tid < cols) {
      float column = 0.0f;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) column += sums.warp_sums[w * kTileCols + tid];
      sums.partial[(r0 / kTileRows) * cols + c0 + tid] = column;
    }
  }

  // ---- 2. transposed store: out_t[c0 + c][r0 + r] = tile[r][c] ---------------------------
  store_tile_transposed<kTileRows, kTileCols, kTilePitch, kThreads>(
      tile, out_t, rows, cols, r0, c0, full_tile && store_t_vectorized, tid);
}

// Counter: CastCounter<F> (the numerics monitor's counts into `counts`) or NoCounter, or either
// inside DelayedCounter (a cast recording into a delayed-scaling state, delayed_scaling.cuh).
template <typename T, Fp8Format F, typename Counter>
__global__ void __launch_bounds__(kThreads)
    cast_transpose_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t tiles_c,
                          bool load_vectorized, bool store_t_vectorized,
                          const float* __restrict__ amax, uint8_t* __restrict__ out,
                          uint8_t* __restrict__ out_t, float* __restrict__ scale_inv,
                          unsigned long long* __restrict__ counts, DelayedScalingArgs delayed) {
  __shared__ __align__(16) uint8_t tile[kTileRows * kTilePitch];
  Counter counter;
  const float scale = begin_per_tensor_cast<F>(counter, delayed, amax, scale_inv);
  cast_transpose_tile<T, F, false>(
      x, rows, cols, tiles_c, static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x, load_vectorized,
      store_t_vectorized, scale, out, out_t, tile, counter);
  counter.template flush<kThreads>(counts);
}

// amax and cast+transpose in one cooperative launch (grid_amax.cuh): the amax pass reads x as one
// flat array from its start, then each block casts tiles tiles_total - 1 - blockIdx.x, ... with a
// stride of the grid, so the end of x, the likeliest to be still in L2, goes first. kSums: also
// column_sums[c] = the sum of x[:, c] in fp32, through partial [tile rows][cols] and a second
// grid barrier.
template <typename T, Fp8Format F, bool kSums, typename Counter>
__global__ void __launch_bounds__(kThreads)
    amax_cast_transpose_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t tiles_c,
                               bool flat_vectorized, bool load_vectorized, bool store_t_vectorized,
                               unsigned* partials, uint8_t* __restrict__ out,
                               uint8_t* __restrict__ out_t, float* __restrict__ scale_inv,
                               unsigned long long* __restrict__ counts, float* partial_sums,
                               float* __restrict__ column_sums) {
  __shared__ __align__(16) uint8_t tile[kTileRows * kTilePitch];
  __shared__ float warp_sums[kSums ? kThreads / 32 * kTileCols : 1];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const float amax = grid_amax<kThreads>(
      thread_amax_bits(x, rows * cols, flat_vectorized, thread, stride), partials);
  Counter counter;
  const float scale = begin_current_scaling_cast<F>(counter, amax, scale_inv, nullptr);
  const int64_t tiles_r = (rows + kTileRows - 1) / kTileRows;
  const int64_t tiles = tiles_r * tiles_c;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    if (t != blockIdx.x) __syncthreads();  // the previous tile's shared reads are done
    cast_transpose_tile<T, F, kSums>(x, rows, cols, tiles_c, tiles - 1 - t, load_vectorized,
                                     store_t_vectorized, scale, out, out_t, tile, counter,
                                     ColumnSums{warp_sums, partial_sums});
  }
  counter.template flush<kThreads>(counts);
  if constexpr (kSums) {
    cooperative_groups::this_grid().sync();  // every tile's partial sums are written
    for (int64_t c = thread; c < cols; c += stride) {
      float sum = 0.0f;
      for (int64_t r = 0; r < tiles_r; ++r) sum += __ldcg(partial_sums + r * cols + c);
      column_sums[c] = sum;
    }
  }
}

}  // namespace

cudaError_t cast_transpose_per_tensor(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                                      Fp8Format format, const float* amax, uint8_t* out,
                                      uint8_t* out_t, float* scale_inv, cudaStream_t stream,
                                      unsigned long long* counts,
                                      const DelayedScalingArgs& delayed) {
  if (rows == 0 || cols == 0) {  // nothing to transpose; the cast of no element writes scale_inv
    return cast_per_tensor(x, type, 0, format, amax, out, scale_inv, stream, counts, delayed);
  }
  const int64_t tiles_r = (rows + kTileRows - 1) / kTileRows;
  const int64_t tiles_c = (cols + kTileCols - 1) / kTileCols;
  const int64_t tiles = tiles_r * tiles_c;
  if (tiles > 0x7fffffff) return cudaErrorInvalidValue;  // one block per tile
  return dispatch_high_precision(type, [&](auto type_tag) {
    using T = decltype(type_tag);
    return dispatch_format(format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      const TilePaths paths = tile_paths<T>(x, out, out_t, rows, cols);
      return launch_with_counter<F>(counts, delayed, [&](auto counter_tag) {
        using Counter = typename decltype(counter_tag)::type;
        cast_transpose_kernel<T, F, Counter><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
            static_cast<const T*>(x), rows, cols, tiles_c, paths.load_vectorized,
            paths.store_t_vectorized, amax, out, out_t, scale_inv, counts, delayed);
        return cudaGetLastError();
      });
    });
  });
}

cudaError_t amax_cast_transpose_per_tensor(const void* x, HighPrecision type, int64_t rows,
                                           int64_t cols, Fp8Format format, uint8_t* out,
                                           uint8_t* out_t, float* scale_inv, unsigned* scratch,
                                           int64_t scratch_words, cudaStream_t stream,
                                           unsigned long long* counts, float* column_sums,
                                           float* partial_sums) {
  if (scratch_words < 1) return cudaErrorInvalidValue;
  bool launched = false;
  if (rows > 0 && cols > 0 && rows * cols <= kOneLaunchMaxElements) {
    const int64_t tiles_c = (cols + kTileCols - 1) / kTileCols;
    const int64_t tiles = ((rows + kTileRows - 1) / kTileRows) * tiles_c;
    FP8NN_KERNELS_TRY(dispatch_high_precision(type, [&](auto type_tag) {
      using T = decltype(type_tag);
      return dispatch_format(format, [&](auto format_tag) {
        constexpr Fp8Format F = decltype(format_tag)::value;
        const bool flat_vectorized = is_aligned(x, 16);
        const TilePaths paths = tile_paths<T>(x, out, out_t, rows, cols);
        return launch_with_monitor_counter<F>(counts, [&](auto counter_tag) {
          using Counter = typename decltype(counter_tag)::type;
          const auto launch = [&](auto kernel_tag) {
            return launch_cooperative<decltype(kernel_tag)::value, kThreads>(
                tiles, scratch_words, stream, &launched, static_cast<const T*>(x), rows, cols,
                tiles_c, flat_vectorized, paths.load_vectorized, paths.store_t_vectorized, scratch,
                out, out_t, scale_inv, counts, partial_sums, column_sums);
          };
          return column_sums != nullptr
                     ? launch(KernelTag<amax_cast_transpose_kernel<T, F, true, Counter>>{})
                     : launch(KernelTag<amax_cast_transpose_kernel<T, F, false, Counter>>{});
        });
      });
    }));
  }
  if (launched) return cudaSuccess;
  if (column_sums != nullptr) return cudaErrorNotSupported;  // the caller sums x itself
  auto* amax = reinterpret_cast<float*>(scratch);  // the two-launch path (and empty shapes)
  FP8NN_KERNELS_TRY(amax_per_tensor(x, type, rows * cols, amax, stream));
  return cast_transpose_per_tensor(x, type, rows, cols, format, amax, out, out_t, scale_inv, stream,
                                   counts);
}

int64_t column_sums_partial_rows(int64_t rows) { return (rows + kTileRows - 1) / kTileRows; }

}  // namespace fp8nn::kernels
