// Per-block quantize: one thread block per 128 x 128 block, which it reads once.
//
// 1. Load (TileLoad, tile_load.h): each thread reads its 16-byte vectors of the block (all loads
//    issued before the first use) and keeps them in registers; the block's amax is the integer
//    max of abs_bits over them (block_reduce), and every thread derives the same scale from it.
//    The read-twice variant keeps nothing: it reads the block again, part by part, for the cast.
//    The shared variant copies the block into shared memory (cp.async) and reads its vectors
//    from there for the amax and again for the cast.
// 2. Cast: the FP8 bytes go to `out` and to a shared tile (as 4-byte words).
// 3. Transposed store: each thread gathers 16 bytes down one tile column and writes them as one
//    16-byte store into `out_t` (tile_io.cuh; the row pitch of kTilePitch = 132 bytes keeps its
//    shared-memory reads conflict-free).
// Blocks not wholly inside x, or shapes/pointers that break 16-byte alignment, take a scalar path
// (one element per thread and step, bounds-checked) for the phase concerned.

#include "kernels/quantize/quantize_per_block.h"

#include "kernels/quantize/grid_amax.cuh"
#include "kernels/quantize/quantize_common.cuh"
#include "kernels/quantize/tile_io.cuh"

namespace fp8nn::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kBlock = static_cast<int>(kScaleBlock);
// The read-twice kernel: thread blocks per SM it is compiled for (registers per thread at most
// 65536 / (256 * 4) = 64; the register kernel leaves it unsaid, 0), and 16-byte vectors per part
// of its reads.
constexpr int kReadTwiceBlocksPerSm = 4;
constexpr int kReadTwicePart = 4;
// The shared kernel: as many thread blocks per SM as their staged blocks fit in shared memory
// (32 KB of 16-bit input: 4 beside the byte tiles; 64 KB of fp32: 2), which bounds its registers.
template <typename T, TileLoad kLoad>
constexpr int kBlocksPerSm = kLoad == TileLoad::kReadTwice ? kReadTwiceBlocksPerSm
                             : kLoad == TileLoad::kShared  ? (sizeof(T) == 4 ? 2 : 4)
                                                           : 0;
constexpr int kTilePitch = kBlock + 4;  // bytes per shared row: 4-byte aligned, 33 words

// The block's scale from every thread's abs_bits max (all threads must call it; all get the
// scale). Thread 0 writes the block's scale_inv entries and hands its amax to the counter.
template <Fp8Format F, bool kPowerOfTwo, typename Counter>
__device__ __forceinline__ float block_scale(unsigned bits, int64_t br, int64_t bc,
                                             float* scale_inv, int64_t scale_ld, float* scale_inv_t,
                                             int64_t scale_t_ld, Counter& counter) {
  __shared__ float scale;
  bits = block_reduce<kThreads, false>(bits, WarpMax{});
  if (threadIdx.x == 0) {
    const float amax = __uint_as_float(bits);
    scale = scale_from_amax(amax, fp8_max(F), kPowerOfTwo);
    const float inverse = __frcp_rn(scale);
    scale_inv[br * scale_ld + bc] = inverse;
    if (scale_inv_t != nullptr) scale_inv_t[bc * scale_t_ld + br] = inverse;
    counter.add_amax(amax);
  }
  __syncthreads();
  return scale;
}

// Counter: CastCounter<F> (the numerics monitor's counts into `counts`) or NoCounter.
// kPowerOfTwo: scales rounded down to powers of two (a template argument, so that the kernels
// without it are the ones they were before it existed).
// kLoad: how the block is read (tile_load.h). kReadTwice: a whole block's amax from a first read
// whose registers are then free, and the cast from a second read of the block (from L2, where the
// first left it). kShared: the block staged in dynamic shared memory
// (TileVectors::kStagedBytes), read from there twice.
template <typename T, Fp8Format F, typename Counter, bool kPowerOfTwo, TileLoad kLoad>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm<T, kLoad>)
    quantize_per_block_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t blocks_c,
                              bool load_vectorized, bool store_t_vectorized,
                              uint8_t* __restrict__ out, uint8_t* __restrict__ out_t,
                              float* __restrict__ scale_inv, int64_t scale_ld,
                              float* __restrict__ scale_inv_t, int64_t scale_t_ld,
                              unsigned long long* __restrict__ counts) {
  __shared__ __align__(16) uint8_t tile[kBlock * kTilePitch];
  extern __shared__ __align__(16) uint8_t staged_block[];  // kShared only
  Counter counter;
  const int64_t br = blockIdx.x / blocks_c, bc = blockIdx.x % blocks_c;
  const int64_t r0 = br * kBlock, c0 = bc * kBlock;
  const bool full_block = r0 + kBlock <= rows && c0 + kBlock <= cols;
  const int tid = threadIdx.x;

  // ---- 1. load and amax, 2. cast into `out` and the tile ----------------------------------
  if (kLoad == TileLoad::kShared && full_block && load_vectorized) {
    using Vectors = TileVectors<T, kBlock, kBlock, kThreads>;
    auto* const staged = reinterpret_cast<typename Vectors::Vector*>(staged_block);
    Vectors::stage(x, cols, r0, c0, tid, staged);
    unsigned bits = 0;
#pragma unroll
    for (int k = 0; k < Vectors::kLoads; ++k) {
      const typename Vectors::Vector v = staged[tid + k * kThreads];
#pragma unroll
      for (int j = 0; j < Vectors::kVec; ++j) bits = max(bits, abs_bits(to_float(v.v[j])));
    }
    const float scale = block_scale<F, kPowerOfTwo>(bits, br, bc, scale_inv, scale_ld, scale_inv_t,
                                                    scale_t_ld, counter);
#pragma unroll
    for (int k = 0; k < Vectors::kLoads; ++k) {
      const typename Vectors::Vector v[1] = {staged[tid + k * kThreads]};
      Vectors::template cast_store_part<F, kTilePitch>(v, k, scale, out, cols, r0, c0, tile, tid,
                                                       counter);
    }
  } else if (kLoad == TileLoad::kReadTwice && full_block && load_vectorized) {
    // Both reads in parts of kPart vectors, one part after the other (loops not unrolled), so that
    // a part's registers are free for the next.
    using Vectors = TileVectors<T, kBlock, kBlock, kThreads>;
    constexpr int kPart = Vectors::kLoads < kReadTwicePart ? Vectors::kLoads : kReadTwicePart;
    static_assert(Vectors::kLoads % kPart == 0, "whole parts");
    unsigned bits = 0;
#pragma unroll 1
    for (int first = 0; first < Vectors::kLoads; first += kPart) {
      typename Vectors::Vector v[kPart];
      Vectors::load_part(x, cols, r0, c0, tid, first, v);
#pragma unroll
      for (int k = 0; k < kPart; ++k) {
#pragma unroll
        for (int j = 0; j < Vectors::kVec; ++j) bits = max(bits, abs_bits(to_float(v[k].v[j])));
      }
    }
    const float scale = block_scale<F, kPowerOfTwo>(bits, br, bc, scale_inv, scale_ld, scale_inv_t,
                                                    scale_t_ld, counter);
#pragma unroll 1
    for (int first = 0; first < Vectors::kLoads; first += kPart) {
      typename Vectors::Vector v[kPart];
      Vectors::load_part_again(x, cols, r0, c0, tid, first, v);
      Vectors::template cast_store_part<F, kTilePitch>(v, first, scale, out, cols, r0, c0, tile,
                                                       tid, counter);
    }
  } else if (full_block && load_vectorized) {
    using Vectors = TileVectors<T, kBlock, kBlock, kThreads>;
    typename Vectors::Vector v[Vectors::kLoads];
    Vectors::load(x, cols, r0, c0, tid, v);
    unsigned bits = 0;
#pragma unroll
    for (int k = 0; k < Vectors::kLoads; ++k) {
#pragma unroll
      for (int j = 0; j < Vectors::kVec; ++j) bits = max(bits, abs_bits(to_float(v[k].v[j])));
    }
    const float scale = block_scale<F, kPowerOfTwo>(bits, br, bc, scale_inv, scale_ld, scale_inv_t,
                                                    scale_t_ld, counter);
    Vectors::template cast_store<F, kTilePitch>(v, scale, out, cols, r0, c0, tile, tid, counter);
  } else {
    unsigned bits = 0;
    for (int index = tid; index < kBlock * kBlock; index += kThreads) {
      const int r = index / kBlock, c = index % kBlock;
      if (r0 + r < rows && c0 + c < cols) {
        bits = max(bits, abs_bits(to_float(x[(r0 + r) * cols + c0 + c])));
      }
    }
    const float scale = block_scale<F, kPowerOfTwo>(bits, br, bc, scale_inv, scale_ld, scale_inv_t,
                                                    scale_t_ld, counter);
    for (int index = tid; index < kBlock * kBlock; index += kThreads) {
      const int r = index / kBlock, c = index % kBlock;
      uint8_t q = 0;
      if (r0 + r < rows && c0 + c < cols) {
        const int64_t offset = (r0 + r) * cols + c0 + c;
        q = cast_to_fp8<F>(to_float(x[offset]), scale, counter);
        if (out != nullptr) out[offset] = q;
      }
      tile[r * kTilePitch + c] = q;
    }
  }
  __syncthreads();

  // ---- 3. transposed store: out_t[c0 + c][r0 + r] = tile[r][c] ----------------------------
  if (out_t != nullptr) {
    store_tile_transposed<kBlock, kBlock, kTilePitch, kThreads>(
        tile, out_t, rows, cols, r0, c0, full_block && store_t_vectorized, tid);
  }
  counter.template flush<kThreads>(counts);
}

}  // namespace

cudaError_t quantize_per_block(const void* x, HighPrecision type, int64_t rows, int64_t cols,
                               Fp8Format format, uint8_t* out, uint8_t* out_t, float* scale_inv,
                               int64_t scale_ld, float* scale_inv_t, int64_t scale_t_ld,
                               cudaStream_t stream, unsigned long long* counts, bool power_of_two,
                               TileLoad load) {
  const int64_t blocks_r = (rows + kBlock - 1) / kBlock;
  const int64_t blocks_c = (cols + kBlock - 1) / kBlock;
  if (scale_ld < blocks_c || (scale_inv_t != nullptr && scale_t_ld < blocks_r)) {
    return cudaErrorInvalidValue;
  }
  const int64_t blocks = blocks_r * blocks_c;
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;  // one thread block per scale block
  return dispatch_high_precision(type, [&](auto type_tag) {
    using T = decltype(type_tag);
    return dispatch_format(format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      const TilePaths paths = tile_paths<T>(x, out, out_t, rows, cols);
      return launch_with_monitor_counter<F>(counts, [&](auto counter_tag) {
        using Counter = typename decltype(counter_tag)::type;
        const auto pick = [&](auto load_tag) {
          constexpr TileLoad kLoad = decltype(load_tag)::value;
          return power_of_two ? quantize_per_block_kernel<T, F, Counter, true, kLoad>
                              : quantize_per_block_kernel<T, F, Counter, false, kLoad>;
        };
        const auto kernel = load == TileLoad::kShared ? pick(TileLoadTag<TileLoad::kShared>{})
                            : load == TileLoad::kReadTwice
                                ? pick(TileLoadTag<TileLoad::kReadTwice>{})
                                : pick(TileLoadTag<TileLoad::kRegisters>{});
        int shared_bytes = 0;
        FP8NN_KERNELS_TRY((staged_tile_bytes<T, kBlock, kBlock, kThreads>(
            reinterpret_cast<const void*>(kernel), load, &shared_bytes)));
        kernel<<<static_cast<unsigned>(blocks), kThreads, shared_bytes, stream>>>(
            static_cast<const T*>(x), rows, cols, blocks_c, paths.load_vectorized,
            paths.store_t_vectorized, out, out_t, scale_inv, scale_ld, scale_inv_t, scale_t_ld,
            counts);
        return cudaGetLastError();
      });
    });
  });
}

}  // namespace fp8nn::kernels
