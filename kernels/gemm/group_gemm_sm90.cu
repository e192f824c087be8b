// Hopper group-scaled FP8 GEMM (see group_gemm.h), sm_90a only.
//
//   c = (a * sa) (b * sb)^T (+ bias): a M x K FP8 (E4M3/E5M2) with scale_inv per tensor, per row
//   or per (row, group of G = 128 * j along K); b N x K E4M3 with one scale_inv, or (a E4M3) one
//   per 128x128 block (the 1D2D product) or per (row, 128 of K) (the 1D1D product).
//
// Design (DeepGEMM-style promotion on a CUTLASS-style warp-specialised persistent pipeline):
//  - one CTA per SM (persistent), 3 warpgroups: WG 0 produces (one thread issues the TMA loads,
//    registers given back with setmaxnreg.dec), WGs 1 and 2 consume (setmaxnreg.inc), each owning
//    64 rows of each 128-row wave of the output tile (one wave: 128 x 128; two: 256 x 128);
//  - K in blocks of 128 bytes: a kStages-deep ring of (A, B 128x128) FP8 tiles in shared
//    memory, filled by cp.async.bulk.tensor (128-byte swizzle, out-of-range rows and columns read
//    as zeros) and guarded by "full" / "empty" mbarriers;
//  - per K block and wave a consumer runs 4 wgmma m64n128k32 (FP8 x FP8 -> fp32) into a fresh
//    `partial`, waits for them, frees the stage after the last wave, and promotes:
//    total += partial * sa[row, group] (then * sb of the block, or of the column, where b's scale
//    changes along K; with b per block, partial * (sa * sb) where that is normal for every row of
//    the warp). A K block never crosses a group (G % 128 == 0), so every block has one scale per
//    row. A per-tensor sb is applied once in the epilogue: c = total * sb + bias;
//  - the epilogue stores straight from registers (2 elements per store).
// Tile order: columns of kRasterWidth N-blocks, M-blocks down each column, so a wave of CTAs
// shares both operand slices in L2 (sm90_tile_scheduler.h for the general kernel, whose CTAs may
// also pair up in clusters along M that share b's tile by TMA multicast, or along N sharing a's).
//
// The PTX it is built from (mbarriers, TMA loads, wgmma, setmaxnreg) is in sm90_pipeline.cuh, the
// tensor-map encoding in sm90_tensor_map.h; this file holds the tiles, the kernel and its launcher.
//
// The 8.9 (and any non-sm_90a) compilation of this file gets an empty kernel; the host side tells
// the two apart by the kernel's static shared memory (the mbarriers live there only in the real
// one).

#include <cuda.h>  // CUtensorMap and its enums (types only: the driver is reached through cudart)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "kernels/common/cuda_error.h"
#include "kernels/common/dtypes.cuh"
#include "kernels/gemm/group_gemm.h"
#include "kernels/gemm/sm90_pipeline.cuh"  // defines FP8NN_SM90_DEVICE_CODE
#include "kernels/gemm/sm90_tensor_map.h"
#include "kernels/gemm/sm90_tile_scheduler.h"

namespace fp8nn::kernels {
namespace {

constexpr int kWaveM = 128;  // rows one pass of the two consumers covers (2 x wgmma m64)
constexpr int kBlockN = 128;
constexpr int kBlockK = 128;  // bytes of K per stage row = one 128-byte swizzle atom
constexpr int kConsumerWarpgroups = 2;
constexpr int kThreads = 128 * (1 + kConsumerWarpgroups);
constexpr int kProducerRegisters = 40;
constexpr int kConsumerRegisters = 232;
constexpr int kStageBytesB = kBlockN * kBlockK;
constexpr int kSwizzleAlignment = 1024;  // 128B swizzle repeats every 8 rows of 128 bytes
static_assert(kProducerRegisters * 128 + kConsumerRegisters * 256 <= 65536, "register budget");

#if FP8NN_SM90_DEVICE_CODE
// The first kSwizzleAlignment-aligned byte of dynamic shared memory, as an offset from `raw` (not
// through an integer cast, which hides the address space: the compiler then knows that pointers
// into it are shared and reads and writes them with LDS/STS, not generic loads and stores).
__device__ __forceinline__ uint8_t* aligned_shared(uint8_t* raw) {
  const uint32_t misalignment = sm90::smem_address(raw) % kSwizzleAlignment;
  return raw + (misalignment == 0 ? 0 : kSwizzleAlignment - misalignment);
}
#endif

// A tile of Waves x 128 rows by 128 columns: each consumer owns 64 rows of every 128-row wave and
// runs the waves one after the other on the same stage. Taller tiles read B once for more rows
// (fewer L2 bytes per FLOP) at the cost of fewer stages and 64 more accumulators per wave.
// How b's scale_inv applies:
//  - kPerTensor: one value, applied in the epilogue;
//  - kPerBlock: one value per 128x128 block (b_scale_row_stride K blocks per row of blocks), read
//    per K block and applied in the promotion (the 1D2D product);
//  - kPerRowGroup: one value per row of b and 128 of K (the 1D1D product, a weight gradient):
//    the tile's 128 values of a K block come by TMA with the stage, from a K-block-major copy,
//    and apply per accumulator column in the promotion;
//  - kAcrossK: one value, and a's scale constant along K (per tensor or per row): no promotion,
//    the tensor cores accumulate across all of K (fast accumulation) and the epilogue applies
//    sa * sb (GroupGemmArgs::accumulate_across_k).
enum class BScale { kPerTensor, kPerBlock, kPerRowGroup, kAcrossK };

constexpr int kBScaleBytes = kBlockN * static_cast<int>(sizeof(float));  // kPerRowGroup, per stage

// The staged epilogue (Sm90Params::staged_epilogue): each consumer warp writes 8 output rows of
// 256 bytes at a time into its own shared rows, then stores them as 16-byte vectors, whole rows
// per half-warp. Row pitch: 256 bytes plus a pad that spreads the rows' writes over the banks
// (4-byte pairs of 16-bit outputs: 68 words; 8-byte pairs of fp32: 72).
constexpr int kStagingRows = 8;
constexpr int kStagingRowBytes = 256;
template <typename OutT>
constexpr int kStagingPitch = sizeof(OutT) == 4 ? 288 : 272;
constexpr int kStagingBytesPerWarp = kStagingRows * 288;
constexpr int kStagingBytes = kConsumerWarpgroups * 4 * kStagingBytesPerWarp;

template <int Waves, BScale B>
struct Tile {
  static constexpr int kBlockM = Waves * kWaveM;
  static constexpr int kStageBytesA = kBlockM * kBlockK;
  static constexpr int kStageBytes = kStageBytesA + kStageBytesB;
  static constexpr int kStages = Waves == 1 ? 6 : 4;
  // b's column scales of each stage, after the stages (whose tiles keep their 1024-byte alignment)
  static constexpr int kScaleRingBytes = B == BScale::kPerRowGroup ? kStages * kBScaleBytes : 0;
  static constexpr int kSharedBytes = kStages * kStageBytes + kScaleRingBytes + kSwizzleAlignment;
  static_assert(kSharedBytes <= 227 * 1024, "pipeline does not fit in shared memory");
  // The general kernel's: its epilogue's staging rows after the scale ring.
  static constexpr int kGeneralSharedBytes = kSharedBytes + kStagingBytes;
  static_assert(kGeneralSharedBytes <= 227 * 1024, "staging does not fit in shared memory");
  static_assert(kBlockM <= 256, "a TMA box holds at most 256 rows");
  static_assert(B != BScale::kPerRowGroup || Waves == 1,
                "per-column scales are read during the promotion: one wave's registers only");
};

struct Sm90Params {
  const float* a_scale_inv;
  const float* b_scale_inv;
  void* c;
  const void* bias;
  int m, n, k;
  int64_t ldc;
  int64_t a_scale_row_stride;  // 0 per tensor, else groups per row
  int k_blocks_per_group;      // K blocks sharing one scale column (huge when per row/tensor)
  int m_blocks, n_blocks, k_blocks;
  int64_t b_scale_row_stride;  // b per 128x128 block: K blocks per row of blocks
  int staged_epilogue;         // the general kernel: 1 stores through shared memory
};

// ---- device side -------------------------------------------------------------------------------
#if FP8NN_SM90_DEVICE_CODE

constexpr int kWgmmaK = 32;
constexpr int kRowsPerConsumer = kWaveM / kConsumerWarpgroups;  // 64: one wgmma m64
constexpr int kAccumulators = kBlockN / 2;                      // m64n128 f32: 64 per thread
constexpr int kRasterWidth = 16;                                // N-blocks per raster column

// Tile t of the persistent sequence -> (m_block, n_block), raster columns of kRasterWidth N-blocks.
__device__ __forceinline__ void tile_coordinates(int tile, int m_blocks, int n_blocks, int& m_block,
                                                 int& n_block) {
  const int column_tiles = kRasterWidth * m_blocks;
  const int column = tile / column_tiles;
  const int within = tile % column_tiles;
  const int first_n = column * kRasterWidth;
  const int width = min(kRasterWidth, n_blocks - first_n);
  m_block = within / width;
  n_block = first_n + within % width;
}
__device__ __forceinline__ void tile_coordinates(int tile, const Sm90Params& p, int& m_block,
                                                 int& n_block) {
  tile_coordinates(tile, p.m_blocks, p.n_blocks, m_block, n_block);
}

#endif  // FP8NN_SM90_DEVICE_CODE

// The per-tensor b, 128-row tile configuration: the kernel the GPU tests and benchmarks have run,
// kept as it was; the general kernel below (the same pipeline with taller tiles and b's scales
// changing along K) takes every other configuration.
template <Fp8Format FormatA, typename OutT>
__global__ void __launch_bounds__(kThreads, 1)
    group_gemm_sm90_kernel(const __grid_constant__ CUtensorMap map_a,
                           const __grid_constant__ CUtensorMap map_b, const Sm90Params p) {
#if FP8NN_SM90_DEVICE_CODE
  using T = Tile<1, BScale::kPerTensor>;
  // Static shared memory: only this (real) variant has any; see group_gemm_sm90_compiled().
  __shared__ uint64_t full[T::kStages];
  __shared__ uint64_t empty[T::kStages];
  extern __shared__ uint8_t raw_shared[];
  uint8_t* const shared = aligned_shared(raw_shared);
  auto tile_a = [&](int stage) { return shared + stage * T::kStageBytes; };
  auto tile_b = [&](int stage) { return shared + stage * T::kStageBytes + T::kStageBytesA; };

  const int warpgroup =
      __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 128), 0);  // uniform
  const int thread_in_group = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    sm90::prefetch_tensor_map(&map_a);
    sm90::prefetch_tensor_map(&map_b);
    for (int s = 0; s < T::kStages; ++s) {
      sm90::barrier_init(&full[s], 1);  // the producer's arrive.expect_tx; TMA completes the bytes
      sm90::barrier_init(&empty[s], kConsumerWarpgroups * 4);  // one arrival per consumer warp
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  const int tiles = p.m_blocks * p.n_blocks;
  if (warpgroup == 0) {
    sm90::setmaxnreg_dec<kProducerRegisters>();
    if (thread_in_group != 0) return;
    int stage = 0;
    uint32_t phase = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      int m_block, n_block;
      tile_coordinates(tile, p, m_block, n_block);
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        sm90::barrier_wait(&empty[stage], phase ^ 1);
        sm90::barrier_arrive_expect_bytes(&full[stage], T::kStageBytes);
        sm90::tma_load_2d(tile_a(stage), &map_a, &full[stage], kb * kBlockK, m_block * T::kBlockM);
        sm90::tma_load_2d(tile_b(stage), &map_b, &full[stage], kb * kBlockK, n_block * kBlockN);
        if (++stage == T::kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }

  sm90::setmaxnreg_inc<kConsumerRegisters>();
  const int consumer = warpgroup - 1;
  const int warp = thread_in_group / 32;
  const int lane = thread_in_group % 32;
  // wgmma m64 accumulator layout: warp w holds rows 16w..16w+15; lane l rows l/4 and l/4 + 8,
  // columns 8j + 2(l%4) + {0, 1} for j = 0..15 (registers 4j..4j+3).
  const int row_in_tile = consumer * kRowsPerConsumer + warp * 16 + lane / 4;
  const int col_in_block = (lane % 4) * 2;
  const float b_scale = *p.b_scale_inv;
  OutT* const c = static_cast<OutT*>(p.c);
  const OutT* const bias = static_cast<const OutT*>(p.bias);

  int stage = 0;
  uint32_t phase = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int m_block, n_block;
    tile_coordinates(tile, p, m_block, n_block);
    const int row0 = m_block * T::kBlockM + row_in_tile;
    const int row1 = row0 + 8;
    // Scale rows of this thread (rows past M read nothing: their results are never stored).
    const float* scale_row0 = row0 < p.m ? p.a_scale_inv + row0 * p.a_scale_row_stride : nullptr;
    const float* scale_row1 = row1 < p.m ? p.a_scale_inv + row1 * p.a_scale_row_stride : nullptr;

    float total[kAccumulators];
#pragma unroll
    for (int i = 0; i < kAccumulators; ++i) total[i] = 0.0f;
    float partial[kAccumulators];

    for (int kb = 0; kb < p.k_blocks; ++kb) {
      // Scales first: their global-load latency hides behind the barrier wait and the wgmmas.
      const int group = kb / p.k_blocks_per_group;
      const float scale0 = scale_row0 != nullptr ? __ldg(scale_row0 + group) : 0.0f;
      const float scale1 = scale_row1 != nullptr ? __ldg(scale_row1 + group) : 0.0f;

      sm90::barrier_wait(&full[stage], phase);
      const uint64_t desc_a =
          sm90::smem_descriptor(tile_a(stage) + consumer * kRowsPerConsumer * kBlockK);
      const uint64_t desc_b = sm90::smem_descriptor(tile_b(stage));
      sm90::fence_registers(partial);
      sm90::wgmma_fence();
#pragma unroll
      for (int step = 0; step < kBlockK / kWgmmaK; ++step) {
        // +32 bytes along K inside the swizzle atom = +2 in the 16-byte address field.
        sm90::wgmma_m64n128k32<FormatA>(partial, desc_a + 2 * step, desc_b + 2 * step, step > 0);
      }
      sm90::wgmma_commit();
      sm90::wgmma_wait_all();
      sm90::fence_registers(partial);
      __syncwarp();
      if (lane == 0) sm90::barrier_arrive(&empty[stage]);
      if (++stage == T::kStages) {
        stage = 0;
        phase ^= 1;
      }
#pragma unroll
      for (int j = 0; j < kAccumulators / 4; ++j) {
        total[4 * j + 0] = fmaf(partial[4 * j + 0], scale0, total[4 * j + 0]);
        total[4 * j + 1] = fmaf(partial[4 * j + 1], scale0, total[4 * j + 1]);
        total[4 * j + 2] = fmaf(partial[4 * j + 2], scale1, total[4 * j + 2]);
        total[4 * j + 3] = fmaf(partial[4 * j + 3], scale1, total[4 * j + 3]);
      }
    }

    // Epilogue: c = total * sb + bias, two adjacent columns per store (N even, ldc % 8 == 0).
    const int col_base = n_block * kBlockN + col_in_block;
#pragma unroll
    for (int j = 0; j < kAccumulators / 4; ++j) {
      const int col = col_base + 8 * j;
      if (col >= p.n) continue;
      float2 bias_pair = make_float2(0.0f, 0.0f);
      if (bias != nullptr) bias_pair = to_float2(*reinterpret_cast<const Vec2<OutT>*>(bias + col));
      if (row0 < p.m) {
        *reinterpret_cast<Vec2<OutT>*>(c + int64_t{row0} * p.ldc + col) =
            from_float2<OutT>(fmaf(total[4 * j + 0], b_scale, bias_pair.x),
                              fmaf(total[4 * j + 1], b_scale, bias_pair.y));
      }
      if (row1 < p.m) {
        *reinterpret_cast<Vec2<OutT>*>(c + int64_t{row1} * p.ldc + col) =
            from_float2<OutT>(fmaf(total[4 * j + 2], b_scale, bias_pair.x),
                              fmaf(total[4 * j + 3], b_scale, bias_pair.y));
      }
    }
  }
#endif  // FP8NN_SM90_DEVICE_CODE
}

// kStageA (GroupGemmArgs::a_scale_inv_k_major, b per tensor or per block, 256-row tiles in pairs
// along N): a's row scales of each K block come by TMA with the stage (256 values from a
// group-major copy, [groups, m], through map_b_scale's slot), into a ring after the epilogue's
// staging rows, instead of each consumer thread loading its rows' scales from global memory.
// map_b_scale: b's scales K-block-major ([k_blocks, n] fp32, boxes of 128 x 1) for kPerRowGroup;
// unused otherwise.
// Cluster: CTAs per cluster, stacked along M, or side by side along N with kAlongN
// (sm90_tile_scheduler.h). With 2 along M, each CTA loads half of b's tile (map_b's box: 64 rows;
// with kPerRowGroup also half of its column scales) and multicasts it into both CTAs' stage, so b
// crosses L2 once per pair; along N (256-row tiles, the larger operand tile being a's), half of
// a's tile (map_a's box: 128 rows) likewise, and each CTA loads its own b. Each CTA's consumers
// release a stage on both CTAs' "empty" barriers, as both producers write into it, and each
// producer finally waits for its stages' last releases, so that no arrival from the peer reaches a
// CTA that has exited.
template <Fp8Format FormatA, typename OutT, int Waves, BScale B, int Cluster, bool kAlongN = false,
          bool kStageA = false>
__global__ void __launch_bounds__(kThreads, 1)
    group_gemm_sm90_general_kernel(const __grid_constant__ CUtensorMap map_a,
                                   const __grid_constant__ CUtensorMap map_b, const Sm90Params p,
                                   const __grid_constant__ CUtensorMap map_b_scale) {
#if FP8NN_SM90_DEVICE_CODE
  using T = Tile<Waves, B>;
  constexpr bool kRowGroupB = B == BScale::kPerRowGroup;
  static_assert(Cluster == 1 || Cluster == 2, "clusters of one or two CTAs");
  static_assert(!kAlongN || (Cluster == 2 && Waves == 2 && !kRowGroupB),
                "pairs along N share a's 256-row tile; b's column scales are per CTA");
  static_assert(!kStageA || (kAlongN && (B == BScale::kPerTensor || B == BScale::kPerBlock)),
                "a's staged scales: pairs along N, b per tensor or per block");
  static_assert(!kStageA || T::kGeneralSharedBytes + T::kStages * T::kBlockM * 4 <= 227 * 1024,
                "a's scale ring does not fit in shared memory");
  constexpr int kClusterM = kAlongN ? 1 : Cluster;
  constexpr int kClusterN = kAlongN ? Cluster : 1;
  // Static shared memory: only this (real) variant has any; see group_gemm_sm90_compiled().
  __shared__ uint64_t full[T::kStages];
  __shared__ uint64_t empty[T::kStages];
  extern __shared__ uint8_t raw_shared[];
  uint8_t* const shared = aligned_shared(raw_shared);
  auto tile_a = [&](int stage) { return shared + stage * T::kStageBytes; };
  auto tile_b = [&](int stage) { return shared + stage * T::kStageBytes + T::kStageBytesA; };
  auto b_scales = [&](int stage) {
    return reinterpret_cast<float*>(shared + T::kStages * T::kStageBytes + stage * kBScaleBytes);
  };
  auto a_scales = [&](int stage) {
    return reinterpret_cast<float*>(shared + T::kGeneralSharedBytes - kSwizzleAlignment +
                                    stage * T::kBlockM * static_cast<int>(sizeof(float)));
  };

  // Broadcast from lane 0: the compiler then knows it is the same across the warp and keeps what
  // derives from it (the consumers' shared-memory descriptors) in uniform registers.
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 128), 0);
  const int thread_in_group = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    sm90::prefetch_tensor_map(&map_a);
    sm90::prefetch_tensor_map(&map_b);
    if (kRowGroupB || kStageA) sm90::prefetch_tensor_map(&map_b_scale);
    for (int s = 0; s < T::kStages; ++s) {
      sm90::barrier_init(&full[s], 1);  // the producer's arrive.expect_tx; TMA completes the bytes
      // one arrival per consumer warp of every CTA of the cluster
      sm90::barrier_init(&empty[s], Cluster * kConsumerWarpgroups * 4);
    }
    sm90::fence_barrier_init();
  }
  if constexpr (Cluster > 1) {
    __syncwarp();          // warp 0 converged again after thread 0's initialisation
    sm90::cluster_sync();  // the peer's multicasts and arrivals find the barriers initialised
  } else {
    __syncthreads();
  }

  const sm90::TileScheduler schedule{p.m_blocks, p.n_blocks, kClusterM, kClusterN};
  const int rank = Cluster > 1 ? static_cast<int>(sm90::cluster_rank()) : 0;
  const int first_tile = static_cast<int>(blockIdx.x) / Cluster;
  const int clusters = static_cast<int>(gridDim.x) / Cluster;
  const int tiles = schedule.cluster_tiles();
  if (warpgroup == 0) {
    sm90::setmaxnreg_dec<kProducerRegisters>();
    if (thread_in_group != 0) return;
    constexpr int kARowsPerCta = T::kBlockM / kClusterN;
    constexpr int kBRowsPerCta = kBlockN / kClusterM;
    constexpr uint16_t kClusterMask = (1u << Cluster) - 1;
    int stage = 0;
    uint32_t phase = 0;
    const auto next_stage = [&] {
      if (++stage == T::kStages) {
        stage = 0;
        phase ^= 1;
      }
    };
    for (int tile = first_tile; tile < tiles; tile += clusters) {
      int m_block, n_block;
      schedule.tile(tile, rank, m_block, n_block);
      // A tile past M (past N: a cluster's spare rank) loads no a (no b) of its own; it still
      // takes the shared operand for its peer.
      const bool has_rows = m_block < p.m_blocks;
      const bool has_columns = n_block < p.n_blocks;
      const uint32_t stage_bytes = (kAlongN || has_rows ? T::kStageBytesA : 0) +
                                   (!kAlongN || has_columns ? kStageBytesB : 0) +
                                   (kRowGroupB ? kBScaleBytes : 0) +
                                   (kStageA ? T::kBlockM * sizeof(float) : 0);
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        sm90::barrier_wait(&empty[stage], phase ^ 1);
        sm90::barrier_arrive_expect_bytes(&full[stage], stage_bytes);
        if constexpr (kAlongN) {
          sm90::tma_load_2d_multicast(tile_a(stage) + rank * kARowsPerCta * kBlockK, &map_a,
                                      &full[stage], kb * kBlockK,
                                      m_block * T::kBlockM + rank * kARowsPerCta, kClusterMask);
          if (has_columns) {
            sm90::tma_load_2d(tile_b(stage), &map_b, &full[stage], kb * kBlockK, n_block * kBlockN);
          }
          if constexpr (kStageA) {  // each CTA its own copy of the tile's 256 row scales
            const int group = p.k_blocks_per_group >= p.k_blocks ? 0 : kb / p.k_blocks_per_group;
            sm90::tma_load_2d(a_scales(stage), &map_b_scale, &full[stage], m_block * T::kBlockM,
                              group);
          }
          next_stage();
          continue;
        }
        if (has_rows) {
          sm90::tma_load_2d(tile_a(stage), &map_a, &full[stage], kb * kBlockK,
                            m_block * T::kBlockM);
        }
        if constexpr (Cluster > 1) {
          sm90::tma_load_2d_multicast(tile_b(stage) + rank * kBRowsPerCta * kBlockK, &map_b,
                                      &full[stage], kb * kBlockK,
                                      n_block * kBlockN + rank * kBRowsPerCta, kClusterMask);
        } else {
          sm90::tma_load_2d(tile_b(stage), &map_b, &full[stage], kb * kBlockK, n_block * kBlockN);
        }
        if constexpr (kRowGroupB && Cluster > 1) {  // b's column scales are shared like b
          sm90::tma_load_2d_multicast(b_scales(stage) + rank * kBRowsPerCta, &map_b_scale,
                                      &full[stage], n_block * kBlockN + rank * kBRowsPerCta, kb,
                                      kClusterMask);
        } else if constexpr (kRowGroupB) {
          sm90::tma_load_2d(b_scales(stage), &map_b_scale, &full[stage], n_block * kBlockN, kb);
        }
        next_stage();
      }
    }
    if constexpr (Cluster > 1) {
      // Every stage's last releases, the peer's included, have arrived before this CTA exits.
      for (int s = 0; s < T::kStages; ++s) {
        sm90::barrier_wait(&empty[stage], phase ^ 1);
        next_stage();
      }
    }
    return;
  }

  sm90::setmaxnreg_inc<kConsumerRegisters>();
  const int consumer = warpgroup - 1;
  const int warp = thread_in_group / 32;
  const int lane = thread_in_group % 32;
  // wgmma m64 accumulator layout: warp w holds rows 16w..16w+15; lane l rows l/4 and l/4 + 8,
  // columns 8j + 2(l%4) + {0, 1} for j = 0..15 (registers 4j..4j+3). Wave v adds 128 v rows.
  const int row_in_wave = consumer * kRowsPerConsumer + warp * 16 + lane / 4;
  const int col_in_block = (lane % 4) * 2;
  // b's per-tensor scale_inv as the epilogue applies it (across K: applied before, with sa).
  const float b_scale = B == BScale::kPerTensor ? *p.b_scale_inv : 1.0f;
  OutT* const c = static_cast<OutT*>(p.c);
  const OutT* const bias = static_cast<const OutT*>(p.bias);
  // Shared-memory addresses of the barriers and of this consumer's first rows of a (stage 0).
  const uint32_t full_address = sm90::smem_address(full);
  const uint32_t empty_address = sm90::smem_address(empty);
  const uint32_t a_address = sm90::smem_address(tile_a(0) + consumer * kRowsPerConsumer * kBlockK);
  const uint32_t b_address = sm90::smem_address(tile_b(0));

  int stage = 0;
  uint32_t phase = 0;
  for (int tile = first_tile; tile < tiles; tile += clusters) {
    int m_block, n_block;
    schedule.tile(tile, rank, m_block, n_block);
    // This thread's rows (two per wave) and their scale rows (rows past M read nothing: their
    // results are never stored; a tile wholly past M multiplies whatever its stages hold).
    int rows[Waves][2];
    const float* scale_rows[Waves][2];
#pragma unroll
    for (int v = 0; v < Waves; ++v) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        rows[v][h] = m_block * T::kBlockM + v * kWaveM + row_in_wave + 8 * h;
        scale_rows[v][h] =
            rows[v][h] < p.m ? p.a_scale_inv + rows[v][h] * p.a_scale_row_stride : nullptr;
      }
    }
    // (A tile past N, a spare rank along N, reads no scales of b: its results are never stored.)
    const float* const b_scale_row = B == BScale::kPerBlock && n_block < p.n_blocks
                                         ? p.b_scale_inv + n_block * p.b_scale_row_stride
                                         : nullptr;

    float total[Waves][kAccumulators];
#pragma unroll
    for (int v = 0; v < Waves; ++v) {
#pragma unroll
      for (int i = 0; i < kAccumulators; ++i) total[v][i] = 0.0f;
    }
    // The promotion of one wave's K block: total += partial * sa, then * sb where b's scale
    // changes along K. With b per block, the warp takes one multiply-add per element,
    // partial * (sa * sb), when every row's sa * sb of its own is a normal float (rows past M do
    // not count: they are never stored); else the two multiplies (group_gemm.h). column_scales:
    // the stage's scales of b's columns (per row group), this thread's first column.
    const auto promote = [&](float(&sum)[kAccumulators], const float(&acc)[kAccumulators],
                             const float(&scales)[2], float block_scale,
                             const float* const(&rows_scaled)[2], const float* column_scales) {
      float row_scales[2] = {0.0f, 0.0f};
      bool fused = false;
      if constexpr (B == BScale::kPerBlock) {
        bool normal = true;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          row_scales[h] = scales[h] * block_scale;
          const float magnitude = fabsf(row_scales[h]);
          normal &= rows_scaled[h] == nullptr || (magnitude >= FLT_MIN && magnitude <= FLT_MAX);
        }
        fused = __all_sync(0xffffffffu, normal);
      }
      if (fused) {
#pragma unroll
        for (int i = 0; i < kAccumulators; ++i) {
          sum[i] = fmaf(acc[i], row_scales[(i % 4) / 2], sum[i]);
        }
        return;
      }
#pragma unroll
      for (int j = 0; j < kAccumulators / 4; ++j) {
        float2 column_pair = make_float2(1.0f, 1.0f);
        if (kRowGroupB) column_pair = *reinterpret_cast<const float2*>(column_scales + 8 * j);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float scale = scales[e / 2];
          if (B == BScale::kPerTensor) {
            sum[4 * j + e] = fmaf(acc[4 * j + e], scale, sum[4 * j + e]);
          } else if (B == BScale::kPerBlock) {
            sum[4 * j + e] = fmaf(acc[4 * j + e] * scale, block_scale, sum[4 * j + e]);
          } else {
            sum[4 * j + e] = fmaf(acc[4 * j + e] * scale,
                                  e % 2 == 0 ? column_pair.x : column_pair.y, sum[4 * j + e]);
          }
        }
      }
    };
    // The stage's last reader in this warp is done with it.
    const auto release = [&](int released) {
      __syncwarp();
      if constexpr (Cluster > 1) {
        if (lane < Cluster) sm90::barrier_arrive_cluster(&empty[released], lane);
      } else {
        if (lane == 0) sm90::barrier_arrive_at(empty_address + 8 * released);
      }
    };

    // The scales of K block kb: a's per row (and group), b's per block.
    const auto load_scales = [&](int kb, float(&scales)[Waves][2], float& block_scale) {
      // (no integer division in the common cases: one K block per group, one group per row)
      const int group = p.k_blocks_per_group == 1            ? kb
                        : p.k_blocks_per_group >= p.k_blocks ? 0
                                                             : kb / p.k_blocks_per_group;
#pragma unroll
      for (int v = 0; v < Waves; ++v) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          scales[v][h] = kStageA || scale_rows[v][h] == nullptr
                             ? 0.0f
                             : __ldg(scale_rows[v][h] + group);  // (staged: read with the stage)
        }
      }
      block_scale =
          B == BScale::kPerBlock && b_scale_row != nullptr ? __ldg(b_scale_row + kb) : 1.0f;
    };
    // Loaded a K block ahead: ptxas computes a promotion's scale products and its warp vote
    // before the K block's first wgmma, so scales loaded in the same K block would hold up every
    // K block's wgmmas for a global load.
    float next_scales[Waves][2], next_block_scale = 1.0f;
    if (B != BScale::kAcrossK && p.k_blocks > 0) load_scales(0, next_scales, next_block_scale);

    if constexpr (B == BScale::kAcrossK) {
      // Every K block's wgmmas accumulate into total; a K block's stage is released once its
      // wgmmas have finished, checked one K block later (wait depth 1), so that the tensor cores
      // always hold the next block's work.
      int previous = -1;
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        sm90::barrier_wait_at(full_address + 8 * stage, phase);
        const uint64_t desc_b = sm90::smem_descriptor_at(b_address + stage * T::kStageBytes);
#pragma unroll
        for (int v = 0; v < Waves; ++v) {
          const uint64_t desc_a =
              sm90::smem_descriptor_at(a_address + stage * T::kStageBytes + v * kWaveM * kBlockK);
          sm90::fence_registers(total[v]);
          sm90::wgmma_fence();
#pragma unroll
          for (int step = 0; step < kBlockK / kWgmmaK; ++step) {
            sm90::wgmma_m64n128k32<FormatA>(total[v], desc_a + 2 * step, desc_b + 2 * step,
                                            kb > 0 || step > 0);
          }
        }
        sm90::wgmma_commit();
        sm90::wgmma_wait<1>();
        if (previous >= 0) release(previous);
        previous = stage;
        if (++stage == T::kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
      sm90::wgmma_wait_all();
#pragma unroll
      for (int v = 0; v < Waves; ++v) sm90::fence_registers(total[v]);
      if (previous >= 0) release(previous);
      // total *= sa * sb per row: one multiply where that product is a normal float, else two
      // (group_gemm.h). Rows past M read no scale (never stored).
      const float sb = *p.b_scale_inv;
#pragma unroll
      for (int v = 0; v < Waves; ++v) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float sa = scale_rows[v][h] != nullptr ? __ldg(scale_rows[v][h]) : 0.0f;
          const float both = sa * sb;
          const float magnitude = fabsf(both);
          const bool fused = magnitude >= FLT_MIN && magnitude <= FLT_MAX;
#pragma unroll
          for (int j = 0; j < kAccumulators / 4; ++j) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float& value = total[v][4 * j + 2 * h + e];
              value = fused ? value * both : (value * sa) * sb;
            }
          }
        }
      }
    }

    float partial[kAccumulators];
    for (int kb = 0; kb < (B == BScale::kAcrossK ? 0 : p.k_blocks); ++kb) {
      float scales[Waves][2], block_scale;
#pragma unroll
      for (int v = 0; v < Waves; ++v) {
        scales[v][0] = next_scales[v][0];
        scales[v][1] = next_scales[v][1];
      }
      block_scale = next_block_scale;
      if (kb + 1 < p.k_blocks) load_scales(kb + 1, next_scales, next_block_scale);

      sm90::barrier_wait_at(full_address + 8 * stage, phase);
      const uint64_t desc_b = sm90::smem_descriptor_at(b_address + stage * T::kStageBytes);
#pragma unroll
      for (int v = 0; v < Waves; ++v) {
        const uint64_t desc_a =
            sm90::smem_descriptor_at(a_address + stage * T::kStageBytes + v * kWaveM * kBlockK);
        sm90::fence_registers(partial);
        sm90::wgmma_fence();
#pragma unroll
        for (int step = 0; step < kBlockK / kWgmmaK; ++step) {
          // +32 bytes along K inside the swizzle atom = +2 in the 16-byte address field.
          sm90::wgmma_m64n128k32<FormatA>(partial, desc_a + 2 * step, desc_b + 2 * step, step > 0);
        }
        sm90::wgmma_commit();
        if constexpr (kStageA) {
          // The stage's row scales, read while the first wave's wgmmas run (before its release).
          if (v == 0) {
            const float* const staged = a_scales(stage);
#pragma unroll
            for (int w = 0; w < Waves; ++w) {
#pragma unroll
              for (int h = 0; h < 2; ++h) scales[w][h] = staged[w * kWaveM + row_in_wave + 8 * h];
            }
          }
        }
        sm90::wgmma_wait_all();
        sm90::fence_registers(partial);
        // The stage is free after the last wave's wgmmas, or, when the promotion reads the
        // stage's column scales, after the promotion.
        const int used = stage;
        if (v == Waves - 1) {
          if (!kRowGroupB) release(used);
          if (++stage == T::kStages) {
            stage = 0;
            phase ^= 1;
          }
        }
        promote(total[v], partial, scales[v], block_scale, scale_rows[v],
                kRowGroupB ? b_scales(used) + col_in_block : nullptr);
        if (kRowGroupB) release(used);
      }
    }

    // Epilogue: c = total * sb + bias (sb already applied unless per tensor).
    const int col_base = n_block * kBlockN + col_in_block;
    if (p.staged_epilogue != 0) {
      // Through this warp's shared rows: per wave and half (8 rows), per 256 bytes of columns,
      // each lane writes its pairs, then each half-warp stores whole rows as 16-byte vectors
      // (N a multiple of 16: a vector is wholly inside or past N; ldc % 8 == 0 and c 16-byte
      // aligned: every row starts 16-byte aligned).
      constexpr int kPitch = kStagingPitch<OutT>;
      constexpr int kChunkColumns = kStagingRowBytes / static_cast<int>(sizeof(OutT));
      constexpr int kVectorColumns = 16 / static_cast<int>(sizeof(OutT));
      uint8_t* const staging = shared + T::kStages * T::kStageBytes + T::kScaleRingBytes +
                               (consumer * 4 + warp) * kStagingBytesPerWarp;
      float2 bias_pairs[kAccumulators / 4];
#pragma unroll
      for (int j = 0; j < kAccumulators / 4; ++j) {
        const int col = col_base + 8 * j;
        bias_pairs[j] = bias != nullptr && col < p.n
                            ? to_float2(*reinterpret_cast<const Vec2<OutT>*>(bias + col))
                            : make_float2(0.0f, 0.0f);
      }
#pragma unroll
      for (int v = 0; v < Waves; ++v) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int first_row =
              m_block * T::kBlockM + v * kWaveM + consumer * kRowsPerConsumer + warp * 16 + 8 * h;
#pragma unroll
          for (int chunk = 0; chunk < kBlockN / kChunkColumns; ++chunk) {
            __syncwarp();  // the rows' last reads are done
#pragma unroll
            for (int jj = 0; jj < kChunkColumns / 8; ++jj) {
              const int j = chunk * (kChunkColumns / 8) + jj;
              *reinterpret_cast<Vec2<OutT>*>(staging + (lane / 4) * kPitch +
                                             (8 * jj + col_in_block) * sizeof(OutT)) =
                  from_float2<OutT>(fmaf(total[v][4 * j + 2 * h], b_scale, bias_pairs[j].x),
                                    fmaf(total[v][4 * j + 2 * h + 1], b_scale, bias_pairs[j].y));
            }
            __syncwarp();
#pragma unroll
            for (int pass = 0; pass < kStagingRows / 2; ++pass) {
              const int r = 2 * pass + lane / 16;
              const int row = first_row + r;
              const int col =
                  n_block * kBlockN + chunk * kChunkColumns + (lane % 16) * kVectorColumns;
              if (row < p.m && col < p.n) {
                *reinterpret_cast<uint4*>(c + int64_t{row} * p.ldc + col) =
                    *reinterpret_cast<const uint4*>(staging + r * kPitch + (lane % 16) * 16);
              }
            }
          }
        }
      }
      continue;
    }
    // Straight from the registers: two adjacent columns per store (N even, ldc % 8 == 0).
#pragma unroll
    for (int j = 0; j < kAccumulators / 4; ++j) {
      const int col = col_base + 8 * j;
      if (col >= p.n) continue;
      float2 bias_pair = make_float2(0.0f, 0.0f);
      if (bias != nullptr) bias_pair = to_float2(*reinterpret_cast<const Vec2<OutT>*>(bias + col));
#pragma unroll
      for (int v = 0; v < Waves; ++v) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (rows[v][h] >= p.m) continue;
          *reinterpret_cast<Vec2<OutT>*>(c + int64_t{rows[v][h]} * p.ldc + col) =
              from_float2<OutT>(fmaf(total[v][4 * j + 2 * h], b_scale, bias_pair.x),
                                fmaf(total[v][4 * j + 2 * h + 1], b_scale, bias_pair.y));
        }
      }
    }
  }
#endif  // FP8NN_SM90_DEVICE_CODE
}

// ---- host side -------------------------------------------------------------------------------

// A rows x cols FP8 matrix (row pitch ld bytes) read in kBlockK x 128-row boxes, 128-byte swizzle,
// zeros outside the matrix.
cudaError_t encode_operand_map(CUtensorMap* map, const void* data, int64_t rows, int64_t cols,
                               int64_t ld, int box_rows) {
  return sm90::encode_tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, data,
                                    static_cast<uint64_t>(cols), static_cast<uint64_t>(rows),
                                    static_cast<uint64_t>(ld), kBlockK,
                                    static_cast<uint32_t>(box_rows), CU_TENSOR_MAP_SWIZZLE_128B);
}

// Facts about a device that the launcher needs on every call, asked of the runtime once per
// device (devices past kCachedDevices are asked every time).
constexpr int kCachedDevices = 64;
struct DeviceFacts {
  std::atomic<int> sm{-1};  // major * 10 + minor; -1: not asked yet
  std::atomic<int> sm_count{0};
  std::atomic<int> loaded{-1};  // real_kernel_loaded's answer; -1: not asked yet
};
DeviceFacts device_facts[kCachedDevices];

DeviceFacts* facts_of(int device) {
  return device >= 0 && device < kCachedDevices ? &device_facts[device] : nullptr;
}

thread_local Sm90Launch last_launch;

template <Fp8Format FormatA, typename OutT, int Waves, BScale B, int Cluster, bool kAlongN = false,
          bool kStageA = false>
cudaError_t launch(const GroupGemmArgs& args, cudaStream_t stream, int device, int sm_count) {
  constexpr int kClusterM = kAlongN ? 1 : Cluster;
  constexpr int kClusterN = kAlongN ? Cluster : 1;
  using T = Tile<Waves, B>;
  // The configuration the first kernel takes (whose epilogue stores from the registers).
  const bool tested =
      Waves == 1 && B == BScale::kPerTensor && Cluster == 1 && !args.staged_epilogue;
  const void* const kernel =
      tested
          ? reinterpret_cast<const void*>(group_gemm_sm90_kernel<FormatA, OutT>)
          : reinterpret_cast<const void*>(
                group_gemm_sm90_general_kernel<FormatA, OutT, Waves, B, Cluster, kAlongN, kStageA>);
  const int shared_bytes =
      tested ? T::kSharedBytes
             : T::kGeneralSharedBytes + (kStageA ? T::kStages * T::kBlockM * 4 : 0);
  CUtensorMap map_a, map_b, map_b_scale;
  // Each CTA of a cluster loads its share of the shared operand's tile (and multicasts it to the
  // others).
  FP8NN_KERNELS_TRY(
      encode_operand_map(&map_a, args.a, args.m, args.k, args.lda, T::kBlockM / kClusterN));
  FP8NN_KERNELS_TRY(
      encode_operand_map(&map_b, args.b, args.n, args.k, args.ldb, kBlockN / kClusterM));
  if (B == BScale::kPerRowGroup) {
    // [k_blocks, n] fp32 rows of n values; a box is one K block's 128 columns (zeros past n), or
    // a cluster CTA's share of them.
    const int64_t k_blocks = (args.k + kBlockK - 1) / kBlockK;
    FP8NN_KERNELS_TRY(sm90::encode_tensor_map_2d(
        &map_b_scale, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, args.b_scale_inv_k_major,
        static_cast<uint64_t>(args.n), static_cast<uint64_t>(k_blocks),
        static_cast<uint64_t>(args.n) * sizeof(float), kBlockN / kClusterM, 1,
        CU_TENSOR_MAP_SWIZZLE_NONE));
  } else if (kStageA) {
    // a's scales group-major, [groups, m] fp32 with rows args.a_scale_k_major_ld apart; a box is
    // one group's 256 rows of the tile (zeros past m).
    const int64_t g = args.a_group_size;
    const int64_t groups = g == 0 || g >= args.k ? 1 : (args.k + g - 1) / g;
    FP8NN_KERNELS_TRY(sm90::encode_tensor_map_2d(
        &map_b_scale, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, args.a_scale_inv_k_major,
        static_cast<uint64_t>(args.m), static_cast<uint64_t>(groups),
        static_cast<uint64_t>(args.a_scale_k_major_ld) * sizeof(float), T::kBlockM, 1,
        CU_TENSOR_MAP_SWIZZLE_NONE));
  } else {
    map_b_scale = map_b;  // a valid map the kernel never reads
  }

  Sm90Params p{};
  p.a_scale_inv = args.a_scale_inv;
  p.b_scale_inv = args.b_scale_inv;
  p.c = args.c;
  p.bias = args.bias;
  p.m = static_cast<int>(args.m);
  p.n = static_cast<int>(args.n);
  p.k = static_cast<int>(args.k);
  p.ldc = args.ldc;
  const int64_t g = args.a_group_size;
  const bool one_column = g == 0 || g >= args.k;  // per tensor or per row
  p.a_scale_row_stride = g == 0 ? 0 : (args.k + g - 1) / g;
  p.k_blocks_per_group = one_column ? (1 << 30) : static_cast<int>(g / kBlockK);
  p.b_scale_row_stride = (args.k + kBlockK - 1) / kBlockK;
  p.m_blocks = static_cast<int>((args.m + T::kBlockM - 1) / T::kBlockM);
  p.n_blocks = static_cast<int>((args.n + kBlockN - 1) / kBlockN);
  p.k_blocks = static_cast<int>((args.k + kBlockK - 1) / kBlockK);
  p.staged_epilogue = args.staged_epilogue ? 1 : 0;

  // The shared-memory opt-in holds for the device once set: set once per device and kernel.
  static std::atomic<uint64_t> opted_in[2] = {};  // [tested]
  const uint64_t bit = device < kCachedDevices ? uint64_t{1} << device : 0;
  if (bit == 0 || (opted_in[tested].load() & bit) == 0) {
    FP8NN_KERNELS_TRY(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes));
    opted_in[tested].fetch_or(bit);
  }
  const int64_t tiles =
      sm90::TileScheduler{p.m_blocks, p.n_blocks, kClusterM, kClusterN}.cluster_tiles();
  if (tested) {
    const unsigned grid = static_cast<unsigned>(tiles < sm_count ? tiles : sm_count);
    group_gemm_sm90_kernel<FormatA, OutT>
        <<<grid, kThreads, shared_bytes, stream>>>(map_a, map_b, p);
  } else if constexpr (Cluster == 1) {
    const unsigned grid = static_cast<unsigned>(tiles < sm_count ? tiles : sm_count);
    group_gemm_sm90_general_kernel<FormatA, OutT, Waves, B, 1>
        <<<grid, kThreads, shared_bytes, stream>>>(map_a, map_b, p, map_b_scale);
  } else {
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = Cluster;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    cudaLaunchConfig_t config{};
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
    // One cluster per co-resident slot (not every SM pairs up inside its GPC), asked once per
    // device and kernel.
    static std::atomic<int> resident[kCachedDevices] = {};
    int clusters = device < kCachedDevices ? resident[device].load() : 0;
    if (clusters == 0) {
      config.gridDim = dim3(Cluster * (sm_count / Cluster));
      FP8NN_KERNELS_TRY(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
      if (clusters < 1) return cudaErrorNotSupported;
      if (device < kCachedDevices) resident[device].store(clusters);
    }
    config.gridDim = dim3(static_cast<unsigned>(Cluster * (tiles < clusters ? tiles : clusters)));
    FP8NN_KERNELS_TRY(cudaLaunchKernelEx(
        &config, group_gemm_sm90_general_kernel<FormatA, OutT, Waves, B, Cluster, kAlongN, kStageA>,
        map_a, map_b, p, map_b_scale));
  }
  FP8NN_KERNELS_TRY(cudaGetLastError());
  last_launch = {Waves * kWaveM,        kClusterM, kClusterN, args.staged_epilogue, tested,
                 B == BScale::kAcrossK, kStageA};
  return cudaSuccess;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Sets `loaded` to whether the current device runs the real kernel: only it has static shared
// memory (its mbarriers); the stub compiled for other targets has none. On a device the build has
// no image for, the query fails (loaded = false) and leaves its error as the thread's last error,
// to be cleared; an error pending from earlier work would be cleared with it, so that one is
// returned first, as is any other failure of the query.
cudaError_t real_kernel_loaded(bool& loaded) {
  loaded = false;
  cudaError_t status = cudaPeekAtLastError();
  if (status != cudaSuccess) return status;
  cudaFuncAttributes attributes{};
  status =
      cudaFuncGetAttributes(&attributes, group_gemm_sm90_kernel<Fp8Format::kE4M3, __nv_bfloat16>);
  if (status == cudaErrorInvalidDeviceFunction || status == cudaErrorNoKernelImageForDevice) {
    static_cast<void>(cudaGetLastError());  // the query's own error: nothing else was pending
    return cudaSuccess;
  }
  if (status != cudaSuccess) return status;
  loaded = attributes.sharedSizeBytes > 0;
  return cudaSuccess;
}

// real_kernel_loaded, asked once per device.
cudaError_t kernel_loaded_on(int device, bool& loaded) {
  DeviceFacts* facts = facts_of(device);
  const int known = facts != nullptr ? facts->loaded.load() : -1;
  if (known >= 0) {
    loaded = known == 1;
    return cudaSuccess;
  }
  FP8NN_KERNELS_TRY(real_kernel_loaded(loaded));
  if (facts != nullptr) facts->loaded.store(loaded ? 1 : 0);
  return cudaSuccess;
}

// The device's compute capability (major * 10 + minor) and SM count, asked once per device.
cudaError_t sm_of(int device, int& sm, int& sm_count) {
  DeviceFacts* facts = facts_of(device);
  if (facts != nullptr && facts->sm.load() >= 0) {
    sm = facts->sm.load();
    sm_count = facts->sm_count.load();
    return cudaSuccess;
  }
  int major = 0, minor = 0;
  FP8NN_KERNELS_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  FP8NN_KERNELS_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  FP8NN_KERNELS_TRY(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  sm = major * 10 + minor;
  if (facts != nullptr) {
    facts->sm_count.store(sm_count);
    facts->sm.store(sm);  // last: a reader that sees sm sees sm_count
  }
  return cudaSuccess;
}

}  // namespace

Sm90Launch group_gemm_sm90_last_launch() { return last_launch; }

cudaError_t group_gemm_sm90_compiled(bool* compiled) {
  int device = 0;
  FP8NN_KERNELS_TRY(cudaGetDevice(&device));
  return kernel_loaded_on(device, *compiled);
}

const char* group_gemm_sm90_unsupported_reason(const GroupGemmArgs& args, int device_sm) {
  if (const char* invalid = group_gemm_invalid_reason(args)) return invalid;
  if (device_sm != 90) return "the sm90 kernel needs a compute capability 9.0 device";
  if (args.m < 1 || args.n < 1 || args.k < 1) return "m, n and k must be >= 1";
  if (args.m > INT32_MAX || args.n > INT32_MAX || args.k > INT32_MAX) {
    return "m, n and k must fit in 32 bits";
  }
  if (args.k % 16 != 0) return "k must be a multiple of 16 (pad K or use group_gemm_mma)";
  if (args.n % 16 != 0) return "n must be a multiple of 16 (pad N or use group_gemm_mma)";
  if (args.lda % 16 != 0 || args.ldb % 16 != 0) return "lda and ldb must be multiples of 16";
  if (args.ldc % 8 != 0) return "ldc must be a multiple of 8";
  if (!aligned16(args.a) || !aligned16(args.b) || !aligned16(args.c) ||
      (args.bias != nullptr && !aligned16(args.bias))) {
    return "a, b, c and bias must be 16-byte aligned";
  }
  if (args.b_format != Fp8Format::kE4M3) return "b must be E4M3";
  const bool b_blocks = args.b_group_size == kBlockK && args.b_group_rows == kBlockN;
  const bool b_row_groups = args.b_group_size == kBlockK && args.b_group_rows == 1;
  if (args.b_group_size != 0 && !b_blocks && !b_row_groups) {
    return "b must be scaled per tensor, per 128x128 block or per row and 128 of K";
  }
  if (args.b_group_size != 0 && args.a_format != Fp8Format::kE4M3) {
    return "a must be E4M3 with a group-scaled b";
  }
  if (b_row_groups) {
    if (args.b_scale_inv_k_major == nullptr || !aligned16(args.b_scale_inv_k_major)) {
      return "b per row group needs b_scale_inv_k_major, 16-byte aligned";
    }
    if (args.tile_m == 256) return "256-row tiles take b per tensor or per block";
    if (args.cluster_n == 2) return "pairs along N take b per tensor or per block";
  }
  if (args.cluster_n == 2 && args.tile_m != 256) return "pairs along N take 256-row tiles";
  if (args.a_group_size != 0 && args.a_group_rows != 1) {
    return "a must be scaled per tensor, per row or per row group";
  }
  const int64_t g = args.a_group_size;
  if (g != 0 && g < args.k && g % kBlockK != 0) {
    return "a's group size must be a multiple of 128 or cover the row";
  }
  if (args.a_scale_inv_k_major != nullptr) {
    if (b_row_groups || args.accumulate_across_k || g == 0) {
      return "a's staged scales take a per row or row group, b per tensor or per block, "
             "promoting per K block";
    }
    if (args.tile_m != 256 || args.cluster_n != 2) {
      return "a's staged scales run 256-row tiles in pairs along N";
    }
    if (!aligned16(args.a_scale_inv_k_major) || args.a_scale_k_major_ld < args.m ||
        args.a_scale_k_major_ld % 4 != 0) {
      return "a_scale_inv_k_major must be 16-byte aligned with rows of >= m values, a multiple "
             "of 4";
    }
  }
  if (args.accumulate_across_k) {
    if (args.b_group_size != 0 || (g != 0 && g < args.k)) {
      return "accumulation across K needs scales constant along K (a per tensor or per row, b "
             "per tensor)";
    }
    if (args.cluster_m == 2) {
      return "accumulation across K runs in one CTA or, with 256-row tiles, pairs along N";
    }
  }
  return nullptr;
}

cudaError_t group_gemm_sm90(const GroupGemmArgs& asked, cudaStream_t stream) {
  if (group_gemm_invalid_reason(asked) != nullptr) return cudaErrorInvalidValue;
  int device = 0, sm = 0, sm_count = 0;
  FP8NN_KERNELS_TRY(cudaGetDevice(&device));
  FP8NN_KERNELS_TRY(sm_of(device, sm, sm_count));
  if (!group_gemm_sm90_supported(asked, sm)) return cudaErrorNotSupported;
  bool loaded = false;
  FP8NN_KERNELS_TRY(kernel_loaded_on(device, loaded));
  if (!loaded) return cudaErrorNotSupported;
  const bool row_group_b = asked.b_group_size != 0 && asked.b_group_rows == 1;
  // The configuration that runs: the one asked for, or the kernel's choice where the cluster is
  // left to it (which supports whatever the asked one does).
  GroupGemmArgs args = asked;
  const sm90::Configuration chosen =
      sm90::default_configuration(asked.m, asked.n, asked.tile_m, row_group_b,
                                  asked.accumulate_across_k, asked.staged_epilogue, sm_count);
  args.tile_m = chosen.tile_m;
  if (asked.cluster_m == 0 && asked.cluster_n == 0) {
    args.cluster_m = chosen.cluster_m;
    args.cluster_n = chosen.cluster_n;
    args.staged_epilogue = chosen.staged_epilogue;
  }
  const bool tall = args.tile_m == 256;
  const bool pairs = args.cluster_m == 2;
  // The tile height, cluster size and cluster direction of a configuration, as template
  // arguments (pairs along N: 256-row tiles, unsupported_reason).
  const auto shaped = [&](auto launch_with) {
    using std::integral_constant;
    using Along = integral_constant<bool, false>;
    if (args.cluster_n == 2) {
      return launch_with(integral_constant<int, 2>{}, integral_constant<int, 2>{},
                         integral_constant<bool, true>{});
    }
    if (tall) {
      return pairs ? launch_with(integral_constant<int, 2>{}, integral_constant<int, 2>{}, Along{})
                   : launch_with(integral_constant<int, 2>{}, integral_constant<int, 1>{}, Along{});
    }
    return pairs ? launch_with(integral_constant<int, 1>{}, integral_constant<int, 2>{}, Along{})
                 : launch_with(integral_constant<int, 1>{}, integral_constant<int, 1>{}, Along{});
  };
  if (row_group_b) {  // per row group: a E4M3, 128 rows
    return dispatch_high_precision(args.out_type, [&](auto out_tag) {
      using OutT = decltype(out_tag);
      return pairs ? launch<Fp8Format::kE4M3, OutT, 1, BScale::kPerRowGroup, 2>(args, stream,
                                                                                device, sm_count)
                   : launch<Fp8Format::kE4M3, OutT, 1, BScale::kPerRowGroup, 1>(args, stream,
                                                                                device, sm_count);
    });
  }
  if (args.a_scale_inv_k_major != nullptr) {  // pairs along N (unsupported_reason)
    return dispatch_format(args.a_format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      return dispatch_high_precision(args.out_type, [&](auto out_tag) {
        using OutT = decltype(out_tag);
        if (args.b_group_size != 0) {
          // (b per block takes an E4M3 a: unsupported_reason)
          return launch<Fp8Format::kE4M3, OutT, 2, BScale::kPerBlock, 2, true, true>(
              args, stream, device, sm_count);
        }
        return launch<F, OutT, 2, BScale::kPerTensor, 2, true, true>(args, stream, device,
                                                                     sm_count);
      });
    });
  }
  if (args.b_group_size != 0) {  // per 128x128 block; a is E4M3 (unsupported_reason)
    return dispatch_high_precision(args.out_type, [&](auto out_tag) {
      using OutT = decltype(out_tag);
      return shaped([&](auto waves, auto cluster, auto along_n) {
        return launch<Fp8Format::kE4M3, OutT, decltype(waves)::value, BScale::kPerBlock,
                      decltype(cluster)::value, decltype(along_n)::value>(args, stream, device,
                                                                          sm_count);
      });
    });
  }
  if (args.accumulate_across_k) {  // scales constant along K: one CTA, or pairs along N
    return dispatch_format(args.a_format, [&](auto format_tag) {
      constexpr Fp8Format F = decltype(format_tag)::value;
      return dispatch_high_precision(args.out_type, [&](auto out_tag) {
        using OutT = decltype(out_tag);
        if (args.cluster_n == 2) {
          return launch<F, OutT, 2, BScale::kAcrossK, 2, true>(args, stream, device, sm_count);
        }
        return tall ? launch<F, OutT, 2, BScale::kAcrossK, 1>(args, stream, device, sm_count)
                    : launch<F, OutT, 1, BScale::kAcrossK, 1>(args, stream, device, sm_count);
      });
    });
  }
  return dispatch_format(args.a_format, [&](auto format_tag) {
    constexpr Fp8Format F = decltype(format_tag)::value;
    return dispatch_high_precision(args.out_type, [&](auto out_tag) {
      using OutT = decltype(out_tag);
      return shaped([&](auto waves, auto cluster, auto along_n) {
        return launch<F, OutT, decltype(waves)::value, BScale::kPerTensor, decltype(cluster)::value,
                      decltype(along_n)::value>(args, stream, device, sm_count);
      });
    });
  });
}

}  // namespace fp8nn::kernels
