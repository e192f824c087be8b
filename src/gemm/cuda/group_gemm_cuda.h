#pragma once
// The hand-written group-scaled FP8 GEMMs (kernels/gemm/group_gemm.h) on tensors, and the switch
// that decides whether scaled_mm on CUDA uses them (environment variable FP8NN_GROUP_GEMM).

#include <fp8nn/quantize.h>

#include <c10/util/Optional.h>

#include <string>

#include "common/scoped_env.h"

namespace fp8nn::cuda {

/// Which products scaled_mm_cuda sends to the hand-written kernels:
///  - CublasLt: none (cuBLASLt, its block scale modes for 1x128 and 128x128 operands, K split at
///    group boundaries, the on-device reference);
///  - Mma: what cuBLASLt cannot do directly goes to group_gemm_mma instead of the K split and the
///    reference, block-scaled operands (group_rows > 1) included;
///  - Sm90: group-scaled a, also with a 128x128 block-scaled b, goes to group_gemm_sm90 where it
///    supports the problem (sm_90 device, 9.0a build, aligned shapes); the rest as Mma;
///  - Auto: as Sm90 for operands without block scales; block-scaled and 1x128 x 1x128 products
///    take cuBLASLt's block scale modes first (the fastest path), then, for what those refuse,
///    block-scaled ones as Sm90 and 1x128 pairs the K split.
enum class GroupGemmRoute { CublasLt, Mma, Sm90, Auto };

/// FP8NN_GROUP_GEMM=cublaslt|mma|sm90|auto (unset or empty = auto), read by the first scaled_mm
/// call that may take a hand-written kernel (a per-tensor product that cuBLASLt takes never asks)
/// and kept. An unknown value raises c10::Error naming it, on every call until the variable is
/// fixed and reload_group_gemm_route() called.
GroupGemmRoute group_gemm_route();

/// group_gemm_sm90's configuration (kernels::GroupGemmArgs::tile_m, cluster_m, staged_epilogue,
/// cluster_n); zeros (and false) let the kernel choose.
struct Sm90Tile {
  int tile_m = 0;
  int cluster_m = 0;
  bool staged_epilogue = false;
  int cluster_n = 0;
  /// GroupGemmArgs::accumulate_across_k (a per tensor or per row, b per tensor): for measuring
  /// the kernel without its promotions; no route names it.
  bool accumulate_across_k = false;
  /// GroupGemmArgs::a_scale_inv_k_major (a per row or row group; 256-row tiles in pairs along
  /// N): a's row scales by TMA with each stage. group_gemm_product takes it by itself where the
  /// configuration is left to the kernel and that is the kernel's choice; FP8NN_GROUP_GEMM's
  /// named tiles do not.
  bool stage_a_scales = false;
};

/// The tile FP8NN_GROUP_GEMM names after the route, for measuring the configurations in whole
/// training steps: "sm90:256" (256-row tiles), "sm90:128x2" (128-row tiles in clusters of two CTAs
/// along M sharing b's tile), "sm90:256n2" (256-row tiles in pairs along N sharing a's tile),
/// "auto:256x2s" (and the output through shared memory), ...; without one, zeros. Read and kept
/// with the route. A product with b per row group (the weight gradient) takes 128-row tiles, and
/// pairs along M where the tile names pairs along N.
Sm90Tile group_gemm_sm90_tile();

/// Makes the next group_gemm_route() read FP8NN_GROUP_GEMM again: for tests and benchmarks that
/// switch the route while running.
void reload_group_gemm_route();

/// FP8NN_GROUP_GEMM set to `route` for a scope (the next product reads it again), and put back
/// as it was, set or not, when the scope ends: for tests and benchmarks that compare routes in
/// one process. Not thread-safe (it writes the environment).
class ScopedGroupGemmRoute {
 public:
  explicit ScopedGroupGemmRoute(const char* route);
  ~ScopedGroupGemmRoute();
  ScopedGroupGemmRoute(const ScopedGroupGemmRoute&) = delete;
  ScopedGroupGemmRoute& operator=(const ScopedGroupGemmRoute&) = delete;

 private:
  ScopedEnv setting_;
};

enum class GroupGemmKernel { Mma, Sm90 };

/// out[M, N] = (a * sa)(b * sb)^T (+ bias) with the given kernel on the current stream, or nullopt
/// when that kernel does not support the problem (Sm90: see group_gemm_sm90_unsupported_reason).
/// a: [M, K], b: [N, K], any group sizes and group rows (Mma); CUDA errors raise c10::Error. The
/// kernels always promote every K-chunk to fp32, so scaled_mm's fast_accumulation flag does not
/// apply to them. tile: group_gemm_sm90's configuration; zeros take group_gemm_sm90_tile(), or,
/// where that names none either, the kernel's choice (with a's scales staged by TMA where it
/// pairs 256-row tiles along N and a is per row or row group).
c10::optional<torch::Tensor> group_gemm_product(const QuantizedTensor& a, const QuantizedTensor& b,
                                                const c10::optional<torch::Tensor>& bias,
                                                at::ScalarType out_dtype, GroupGemmKernel kernel,
                                                Sm90Tile tile = {});

}  // namespace fp8nn::cuda
