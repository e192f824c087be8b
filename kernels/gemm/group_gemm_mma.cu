// Portable group-scaled FP8 GEMM (see group_gemm.h): the correctness fallback for any shape.
//
// FP8 values (E4M3 and E5M2 alike) are exactly representable in fp16, so the kernel converts them
// to fp16 in shared memory and runs mma.sync m16n8k16 with fp32 accumulators (sm_80+): no format
// pair is excluded and every product is exact. K is walked in chunks of at most kChunkK that never
// cross a group boundary of either operand (so any group size works, even one that is not a
// multiple of anything); each chunk is summed from zero on the tensor cores and promoted,
// total += (partial * sa[row]) * sb[col], in fp32.
//
// Loads are byte-granular with bounds checks, upgraded to one 16-byte load where a chunk row is
// whole and aligned, so ragged shapes, odd leading dims and unaligned pointers need no padding.
// One 64x64 output tile per block of 4 warps (2 x 2, 32 x 32 each); no pipelining: this kernel is
// for shapes and scalings the fast paths refuse, not for speed.

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <limits>

#include "kernels/common/dtypes.cuh"
#include "kernels/gemm/group_gemm.h"

namespace fp8nn::kernels {
namespace {

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kChunkK = 32;
constexpr int kThreads = 128;
// fp16 row pitch in shared memory: 32 + 8 halves = 80 bytes keeps the fragment reads of the 8 rows
// of a quad conflict-free and every row 16-byte aligned.
constexpr int kPitch = kChunkK + 8;
constexpr int kWarpTileM = 32;
constexpr int kWarpTileN = 32;
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 16;
constexpr int kWarpMmasM = kWarpTileM / kMmaM;  // 2
constexpr int kWarpMmasN = kWarpTileN / kMmaN;  // 4
// Each thread stages 16 bytes of one operand row per chunk: 64 rows x 32 bytes / 128 threads.
constexpr int kBytesPerThread = kTileM * kChunkK / kThreads;
static_assert(kBytesPerThread == 16 && kTileM == kTileN, "staging assumes 16 bytes per thread");

// Index of the scale of (row, k) in a QuantizedTensor-style scale_inv array.
__device__ __forceinline__ int64_t scale_index(int64_t row, int64_t k, int64_t group_size,
                                               int64_t groups_per_row) {
  return group_size == 0 ? 0 : row * groups_per_row + k / group_size;
}

struct OperandView {
  const uint8_t* data;
  const float* scale_inv;
  int64_t rows, ld, group_size, groups_per_row;
  __nv_fp8_interpretation_t format;
};

// Stages rows [row0, row0 + 64) x columns [k0, k0 + length) of an operand as fp16 into `tile`
// (zeros outside the matrix or past `length`) and the chunk's scale of each row into `scales`.
__device__ __forceinline__ void stage_chunk(const OperandView& op, int64_t row0, int64_t k0,
                                            int length, __half (*tile)[kPitch], float* scales) {
  const int r = threadIdx.x / 2;
  const int c = (threadIdx.x % 2) * kBytesPerThread;
  const int64_t row = row0 + r;
  alignas(16) __half values[kBytesPerThread];
  if (row < op.rows) {
    const uint8_t* source = op.data + row * op.ld + k0 + c;
    if (c + kBytesPerThread <= length && reinterpret_cast<uintptr_t>(source) % 16 == 0) {
      const uint4 bytes = *reinterpret_cast<const uint4*>(source);
      const uint8_t* b = reinterpret_cast<const uint8_t*>(&bytes);
#pragma unroll
      for (int j = 0; j < kBytesPerThread; ++j) values[j] = fp8_to_half(b[j], op.format);
    } else {
#pragma unroll
      for (int j = 0; j < kBytesPerThread; ++j) {
        values[j] = c + j < length ? fp8_to_half(source[j], op.format) : __half(0.0f);
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < kBytesPerThread; ++j) values[j] = __half(0.0f);
  }
  uint4* destination = reinterpret_cast<uint4*>(&tile[r][c]);
  destination[0] = reinterpret_cast<const uint4*>(values)[0];
  destination[1] = reinterpret_cast<const uint4*>(values)[1];
  if (threadIdx.x % 2 == 0) {
    scales[r] =
        row < op.rows ? op.scale_inv[scale_index(row, k0, op.group_size, op.groups_per_row)] : 0.0f;
  }
}

__device__ __forceinline__ uint32_t load_pair(const __half* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4],
                                          const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Calls fn(i, j, e, row, col) for each accumulator element total[i][j][e] of the warp: C fragment
// element e of mma (i, j) sits at row quad_row (+8 for e >= 2), col quad_col + e % 2 of the
// mma's 16 x 8 tile; row and col are that position in the block's 64 x 64 tile plus (row0, col0):
// pass the block's origin for matrix indices, zeros for tile indices.
template <typename Index, typename Fn>
__device__ __forceinline__ void for_each_accumulator(Index row0, Index col0, int warp_m, int warp_n,
                                                     int lane, Fn&& fn) {
  const int quad_row = lane / 4;        // "groupID" of the PTX fragment tables
  const int quad_col = (lane % 4) * 2;  // 2 * "threadID_in_group"
#pragma unroll
  for (int i = 0; i < kWarpMmasM; ++i) {
#pragma unroll
    for (int j = 0; j < kWarpMmasN; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const Index row = row0 + warp_m + i * kMmaM + quad_row + (e / 2) * 8;
        const Index col = col0 + warp_n + j * kMmaN + quad_col + e % 2;
        fn(i, j, e, row, col);
      }
    }
  }
}

template <typename OutT>
__global__ void __launch_bounds__(kThreads)
    group_gemm_mma_kernel(OperandView a, OperandView b, OutT* __restrict__ c, int64_t ldc,
                          const OutT* __restrict__ bias, int64_t K) {
  __shared__ alignas(16) __half a_tile[kTileM][kPitch];
  __shared__ alignas(16) __half b_tile[kTileN][kPitch];
  __shared__ float a_scales[kTileM];
  __shared__ float b_scales[kTileN];

  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int quad_row = lane / 4;        // "groupID" of the PTX fragment tables
  const int quad_col = (lane % 4) * 2;  // 2 * "threadID_in_group"
  const int warp_m = (warp / 2) * kWarpTileM;
  const int warp_n = (warp % 2) * kWarpTileN;

  float total[kWarpMmasM][kWarpMmasN][4] = {};

  for (int64_t k0 = 0; k0 < K;) {
    // The chunk ends at kChunkK, at K, or at the next group boundary of either operand.
    int64_t k_end = k0 + kChunkK < K ? k0 + kChunkK : K;
    if (a.group_size > 0) k_end = min(k_end, (k0 / a.group_size + 1) * a.group_size);
    if (b.group_size > 0) k_end = min(k_end, (k0 / b.group_size + 1) * b.group_size);
    const int length = static_cast<int>(k_end - k0);

    stage_chunk(a, m0, k0, length, a_tile, a_scales);
    stage_chunk(b, n0, k0, length, b_tile, b_scales);
    __syncthreads();

    float partial[kWarpMmasM][kWarpMmasN][4] = {};
#pragma unroll
    for (int kk = 0; kk < kChunkK; kk += kMmaK) {
      uint32_t a_frag[kWarpMmasM][4];
      uint32_t b_frag[kWarpMmasN][2];
#pragma unroll
      for (int i = 0; i < kWarpMmasM; ++i) {
        const int row = warp_m + i * kMmaM + quad_row;
        a_frag[i][0] = load_pair(&a_tile[row][kk + quad_col]);
        a_frag[i][1] = load_pair(&a_tile[row + 8][kk + quad_col]);
        a_frag[i][2] = load_pair(&a_tile[row][kk + quad_col + 8]);
        a_frag[i][3] = load_pair(&a_tile[row + 8][kk + quad_col + 8]);
      }
#pragma unroll
      for (int j = 0; j < kWarpMmasN; ++j) {
        const int col = warp_n + j * kMmaN + quad_row;
        b_frag[j][0] = load_pair(&b_tile[col][kk + quad_col]);
        b_frag[j][1] = load_pair(&b_tile[col][kk + quad_col + 8]);
      }
#pragma unroll
      for (int i = 0; i < kWarpMmasM; ++i) {
#pragma unroll
        for (int j = 0; j < kWarpMmasN; ++j) mma_16816(partial[i][j], a_frag[i], b_frag[j]);
      }
    }

    // Promotion: (partial * sa) * sb, the reference's order ((a * sa)(b * sb)): sa * sb alone can
    // overflow, or round in the subnormals, where the product itself is finite and normal.
    for_each_accumulator(0, 0, warp_m, warp_n, lane, [&](int i, int j, int e, int row, int col) {
      total[i][j][e] = fmaf(partial[i][j][e] * a_scales[row], b_scales[col], total[i][j][e]);
    });
    __syncthreads();  // the next chunk overwrites the tiles
    k0 = k_end;
  }

  for_each_accumulator(m0, n0, warp_m, warp_n, lane,
                       [&](int i, int j, int e, int64_t row, int64_t col) {
                         if (row < a.rows && col < b.rows) {
                           float value = total[i][j][e];
                           if (bias != nullptr) value += to_float(bias[col]);
                           c[row * ldc + col] = from_float<OutT>(value);
                         }
                       });
}

// An operand of `rows` rows of K bytes, row pitch `ld`, in the kernel's terms.
OperandView operand_view(const void* data, const float* scale_inv, int64_t rows, int64_t ld,
                         int64_t group_size, int64_t k, Fp8Format format) {
  const int64_t groups_per_row = group_size == 0 ? 1 : (k + group_size - 1) / group_size;
  return {static_cast<const uint8_t*>(data), scale_inv, rows, ld, group_size, groups_per_row,
          interpretation_of(format)};
}

template <typename OutT>
cudaError_t launch(const GroupGemmArgs& args, cudaStream_t stream) {
  const OperandView a = operand_view(args.a, args.a_scale_inv, args.m, args.lda, args.a_group_size,
                                     args.k, args.a_format);
  const OperandView b = operand_view(args.b, args.b_scale_inv, args.n, args.ldb, args.b_group_size,
                                     args.k, args.b_format);
  const dim3 grid(static_cast<unsigned>((args.m + kTileM - 1) / kTileM),
                  static_cast<unsigned>((args.n + kTileN - 1) / kTileN));
  group_gemm_mma_kernel<OutT><<<grid, kThreads, 0, stream>>>(
      a, b, static_cast<OutT*>(args.c), args.ldc, static_cast<const OutT*>(args.bias), args.k);
  return cudaGetLastError();
}

}  // namespace

const char* group_gemm_invalid_reason(const GroupGemmArgs& args) {
  if (args.m < 0 || args.n < 0 || args.k < 0) return "m, n and k must be >= 0";
  if (args.a_group_size < 0 || args.b_group_size < 0) return "group sizes must be >= 0";
  if (args.a_group_rows < 1 || args.b_group_rows < 1) return "group rows must be >= 1";
  if (args.tile_m != 0 && args.tile_m != 128 && args.tile_m != 256) {
    return "tile_m must be 0, 128 or 256";
  }
  if (args.cluster_m < 0 || args.cluster_m > 2) return "cluster_m must be 0, 1 or 2";
  if (args.cluster_n < 0 || args.cluster_n > 2) return "cluster_n must be 0, 1 or 2";
  if (args.cluster_m == 2 && args.cluster_n == 2) return "cluster_m and cluster_n are not both 2";
  if (args.m > 0 && args.n > 0) {
    if (args.c == nullptr) return "c is null";
    if (args.ldc < args.n) return "ldc must be >= n";
  }
  if (args.m > 0 && args.k > 0) {
    if (args.a == nullptr || args.a_scale_inv == nullptr) return "a or a_scale_inv is null";
    if (args.lda < args.k) return "lda must be >= k";
  }
  if (args.n > 0 && args.k > 0) {
    if (args.b == nullptr || args.b_scale_inv == nullptr) return "b or b_scale_inv is null";
    if (args.ldb < args.k) return "ldb must be >= k";
  }
  return nullptr;
}

cudaError_t group_gemm_mma(const GroupGemmArgs& args, cudaStream_t stream) {
  if (group_gemm_invalid_reason(args) != nullptr) return cudaErrorInvalidValue;
  if (args.a_group_rows != 1 || args.b_group_rows != 1) return cudaErrorNotSupported;
  if (args.m == 0 || args.n == 0) return cudaSuccess;
  // Grid limits: x (M tiles) up to 2^31 - 1, y (N tiles) up to 65535.
  if ((args.m + kTileM - 1) / kTileM > std::numeric_limits<int32_t>::max() ||
      (args.n + kTileN - 1) / kTileN > 65535) {
    return cudaErrorInvalidValue;
  }
  return dispatch_high_precision(
      args.out_type, [&](auto out_tag) { return launch<decltype(out_tag)>(args, stream); });
}

}  // namespace fp8nn::kernels
