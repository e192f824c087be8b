#pragma once
// The tile moves that the cast+transpose kernels share (cast_transpose.cu, quantize_per_block.cu):
// a block of kThreads threads reads a kRows x kCols tile of a row-major x as 16-byte vectors,
// casts it into `out` and into a shared byte tile, and writes the shared tile's transpose into
// `out_t` with 16-byte stores.

#include <type_traits>

#include "kernels/quantize/quantize_common.cuh"
#include "kernels/quantize/tile_load.h"

namespace fp8nn::kernels {

// A TileLoad as a type, for picking a kernel instance at run time.
template <TileLoad kLoad>
using TileLoadTag = std::integral_constant<TileLoad, kLoad>;

// 16 bytes from global to shared memory without passing through registers (cp.async, which
// bypasses L1; sm_80 and later, a plain load and store before), and the calling thread's wait for
// its own copies (other threads' copies need a barrier after their waits as well).
__device__ __forceinline__ void copy_async_16(void* shared, const void* global) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global)
               : "memory");
#else
  *static_cast<uint4*>(shared) = *static_cast<const uint4*>(global);
#endif
}
__device__ __forceinline__ void wait_async_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
#endif
}

// The 16-byte vectors of a kRows x kCols tile that thread `tid` owns: vector k sits at row
// (tid + k * kThreads) / kVectorsPerRow, column ((tid + k * kThreads) % kVectorsPerRow) * kVec.
// kThreads is a multiple of kVectorsPerRow, so a thread's vectors share their columns.
template <typename T, int kRows, int kCols, int kThreads>
struct TileVectors {
  static constexpr int kVec = kVec16<T>;
  static constexpr int kVectorsPerRow = kCols / kVec;
  static constexpr int kLoads = kRows * kVectorsPerRow / kThreads;
  static_assert(kLoads * kThreads == kRows * kVectorsPerRow, "whole loads per thread");
  using Vector = Vec<T, kVec>;

  // Every load issued before the first use. x + r0 * cols + c0 and cols keep 16-byte alignment.
  // The _part forms take the kCount vectors from the first-th on.
  template <int kCount>
  static __device__ __forceinline__ void load_part(const T* __restrict__ x, int64_t cols,
                                                   int64_t r0, int64_t c0, int tid, int first,
                                                   Vector (&v)[kCount]) {
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      const int index = tid + (first + k) * kThreads;
      const int r = index / kVectorsPerRow, c = (index % kVectorsPerRow) * kVec;
      v[k] = *reinterpret_cast<const Vector*>(x + (r0 + r) * cols + c0 + c);
    }
  }
  static __device__ __forceinline__ void load(const T* __restrict__ x, int64_t cols, int64_t r0,
                                              int64_t c0, int tid, Vector (&v)[kLoads]) {
    load_part(x, cols, r0, c0, tid, 0, v);
  }

  // The thread's vectors copied into `staged` (the whole tile, vector index i at staged[i], so a
  // warp's copies fill 512 consecutive bytes) by copy_async_16, waited for: the thread may read
  // its own vectors back at once (staged[tid + k * kThreads], vector k).
  static __device__ __forceinline__ void stage(const T* __restrict__ x, int64_t cols, int64_t r0,
                                               int64_t c0, int tid, Vector* staged) {
#pragma unroll
    for (int k = 0; k < kLoads; ++k) {
      const int index = tid + k * kThreads;
      const int r = index / kVectorsPerRow, c = (index % kVectorsPerRow) * kVec;
      copy_async_16(staged + index, x + (r0 + r) * cols + c0 + c);
    }
    wait_async_copies();
  }
  static constexpr int kStagedBytes = kRows * kCols * static_cast<int>(sizeof(T));

  // load_part again, through L2 only (ld.global.cg): the second read of a kernel that does not
  // keep the first in registers. The loads are volatile asm, so that the compiler cannot keep the
  // first read's registers alive in their place.
  template <int kCount>
  static __device__ __forceinline__ void load_part_again(const T* x, int64_t cols, int64_t r0,
                                                         int64_t c0, int tid, int first,
                                                         Vector (&v)[kCount]) {
    static_assert(sizeof(Vector) == 16, "16-byte vectors");
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      const int index = tid + (first + k) * kThreads;
      const int r = index / kVectorsPerRow, c = (index % kVectorsPerRow) * kVec;
      uint32_t w[4];
      asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                   : "l"(x + (r0 + r) * cols + c0 + c));
      memcpy(&v[k], w, sizeof(w));
    }
  }

  // The cast with `scale`: the bytes go to `out` (row-major, when not null) and to the shared
  // tile (row pitch kPitch bytes, a multiple of 4) as 4-byte words.
  template <Fp8Format F, int kPitch, typename Counter>
  static __device__ __forceinline__ void cast_store(const Vector (&v)[kLoads], float scale,
                                                    uint8_t* __restrict__ out, int64_t cols,
                                                    int64_t r0, int64_t c0, uint8_t* tile, int tid,
                                                    Counter& counter) {
    cast_store_part<F, kPitch>(v, 0, scale, out, cols, r0, c0, tile, tid, counter);
  }
  template <Fp8Format F, int kPitch, int kCount, typename Counter>
  static __device__ __forceinline__ void cast_store_part(const Vector (&v)[kCount], int first,
                                                         float scale, uint8_t* __restrict__ out,
                                                         int64_t cols, int64_t r0, int64_t c0,
                                                         uint8_t* tile, int tid, Counter& counter) {
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      const int index = tid + (first + k) * kThreads;
      const int r = index / kVectorsPerRow, c = (index % kVectorsPerRow) * kVec;
      const Vec<uint32_t, kVec / 4> q = cast_vec_to_fp8<F>(v[k], scale, counter);
      if (out != nullptr) {
        *reinterpret_cast<Vec<uint32_t, kVec / 4>*>(out + (r0 + r) * cols + c0 + c) = q;
      }
#pragma unroll
      for (int w = 0; w < kVec / 4; ++w) {
        *reinterpret_cast<uint32_t*>(tile + r * kPitch + c + 4 * w) = q.v[w];
      }
    }
  }
};

// Host side: the dynamic shared memory a 128 x 128-style tile kernel launched with `load` takes
// (kShared: the staged tile of TileVectors<T, kRows, kCols, kThreads>, granted to `kernel` on the
// current device; otherwise none), in *bytes.
template <typename T, int kRows, int kCols, int kThreads>
inline cudaError_t staged_tile_bytes(const void* kernel, TileLoad load, int* bytes) {
  *bytes = 0;
  if (load != TileLoad::kShared) return cudaSuccess;
  *bytes = TileVectors<T, kRows, kCols, kThreads>::kStagedBytes;
  return allow_dynamic_shared(kernel, *bytes);
}

// Bytes of one transposed store.
constexpr int kRowsPerTransposedStore = 16;

// Host side: which phases of a tile kernel over x [rows, cols] of T take the 16-byte paths. Loads
// and `out` stores: rows of whole vectors, x 16-byte aligned, out aligned to a vector of FP8
// bytes (a null out counts as aligned). Transposed stores: rows a multiple of 16, out_t 16-byte
// aligned.
struct TilePaths {
  bool load_vectorized, store_t_vectorized;
};

template <typename T>
inline TilePaths tile_paths(const void* x, const uint8_t* out, const uint8_t* out_t, int64_t rows,
                            int64_t cols) {
  return {cols % kVec16<T> == 0 && is_aligned(x, 16) && is_aligned(out, kVec16<T>),
          rows % kRowsPerTransposedStore == 0 && is_aligned(out_t, 16)};
}

// out_t[c0 + c][r0 + r] = tile[r][c] for the kRows x kCols shared tile (row pitch kPitch), out_t
// having `rows` columns. Vectorized (a whole tile, rows and out_t 16-byte aligned): each warp
// takes 16 columns, lane l column l / 2 of them, and the two lanes of a column the rows of two
// neighbouring 16-byte stores, which fill one 32-byte sector of an out_t row. A warp reads 16
// consecutive columns of two rows 16 apart; with a pitch of 4 bytes past a multiple of 64 those
// rows sit 16 banks apart, so the byte reads are conflict-free. Otherwise one byte at a time,
// bounds-checked.
template <int kRows, int kCols, int kPitch, int kThreads>
__device__ __forceinline__ void store_tile_transposed(const uint8_t* tile, uint8_t* out_t,
                                                      int64_t rows, int64_t cols, int64_t r0,
                                                      int64_t c0, bool vectorized, int tid) {
  constexpr int kStore = kRowsPerTransposedStore;
  constexpr int kColumnGroups = kCols / 16;  // warps side by side across the tile
  constexpr int kWarps = kThreads / 32;
  constexpr int kStoresPerRound = 2 * kWarps / kColumnGroups;  // row stores one round covers
  static_assert(kCols % 16 == 0 && kWarps % kColumnGroups == 0, "whole warps per column group");
  static_assert(kRows % (kStore * kStoresPerRound) == 0, "whole transposed store rounds");
  if (vectorized) {
    const int warp = tid / 32, lane = tid % 32;
    const int c = (warp % kColumnGroups) * 16 + lane / 2;
#pragma unroll
    for (int k = 0; k < kRows / (kStore * kStoresPerRound); ++k) {
      const int r = ((warp / kColumnGroups) * 2 + lane % 2 + kStoresPerRound * k) * kStore;
      *reinterpret_cast<Vec<uint32_t, kStore / 4>*>(out_t + (c0 + c) * rows + r0 + r) =
          tile_column<kStore>(tile, kPitch, r, c);
    }
  } else {
    for (int index = tid; index < kRows * kCols; index += kThreads) {
      const int c = index / kRows, r = index % kRows;
      if (r0 + r < rows && c0 + c < cols) out_t[(c0 + c) * rows + r0 + r] = tile[r * kPitch + c];
    }
  }
}

}  // namespace fp8nn::kernels
