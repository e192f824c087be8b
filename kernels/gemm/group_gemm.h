#pragma once
// FP8 GEMM with the scales applied inside the K loop, TN form:
//   c[m][n] = sum_k (a[m][k] * sa(m, k)) * (b[n][k] * sb(n, k))  (+ bias[n])
// a: M x K FP8 (E4M3 or E5M2), b: N x K FP8, both K-major (row-major with leading dims lda, ldb);
// c: M x N row-major (leading dim ldc), bf16/fp16/fp32; bias: N values of c's type, or null.
// Scales are fp32 scale_inv values in device memory (read by the kernel: no host synchronisation,
// graph capturable, nothing allocated), laid out as QuantizedTensor's (include/fp8nn/quantize.h):
//   group_size == 0: one value for the whole operand;
//   group_size == G: [rows, ceil(K / G)] contiguous, sa(m, k) = a_scale_inv[m * ceil(K/G) + k / G]
//   (a row of length K <= G is one group: per-row scaling; the last group of a row may be short);
//   group_rows == R > 1 as well: blocks of R rows x G columns share a scale,
//   [ceil(rows / R), ceil(K / G)] contiguous, sa(m, k) = a_scale_inv[(m / R) * ceil(K/G) + k / G]
//   (a 128x128 block-scaled weight: G = R = 128).
// Accumulation: each K-chunk that lies inside one group of both operands is summed by the tensor
// cores from zero, then promoted: total += (partial * sa) * sb in fp32 (DeepGEMM-style). sa * sb
// may be formed first only where it is a normal float: then partial * (sa * sb) rounds as often
// and over- or underflows only where the true product does; a zero, subnormal or infinite sa * sb
// would lose bits or overflow where the reference's (a * sa)(b * sb) does not.
//
// Two implementations:
//  - group_gemm_mma: portable (sm_80+ tensor cores via exact FP8 -> fp16 conversion), any M, N, K
//    (0 and 1 included), any group sizes on either operand (one row per group: block scales are
//    expanded to one scale row per data row first), any pointer alignment and leading dims, either
//    format on either operand. The correctness fallback.
//  - group_gemm_sm90: Hopper (sm_90a) wgmma + TMA, warp-specialised and persistent. Narrower: see
//    group_gemm_sm90_unsupported_reason. Compiled to a stub (returns cudaErrorNotSupported) when
//    the build has no sm_90a target.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/fp8_format.h"

namespace fp8nn::kernels {

struct GroupGemmArgs {
  const void* a = nullptr;             ///< M x K FP8, a_format
  const void* b = nullptr;             ///< N x K FP8, b_format
  const float* a_scale_inv = nullptr;  ///< see the layout above
  const float* b_scale_inv = nullptr;
  int64_t a_group_size = 0;  ///< 0: per tensor; G > 0: per (row, group of G along K)
  int64_t b_group_size = 0;
  int64_t a_group_rows = 1;  ///< rows sharing a group's scale (with group_size > 0): 1 or more
  int64_t b_group_rows = 1;
  void* c = nullptr;           ///< M x N, out_type
  const void* bias = nullptr;  ///< N values of out_type, or null
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  ///< in elements; >= k, >= k, >= n
  Fp8Format a_format = Fp8Format::kE4M3;
  Fp8Format b_format = Fp8Format::kE4M3;
  HighPrecision out_type = HighPrecision::kBFloat16;
  /// group_gemm_sm90's tile height: 128 or 256; 0 lets it choose (sm90::default_tile_rows in
  /// sm90_tile_scheduler.h)
  int tile_m = 0;
  /// group_gemm_sm90's CTAs per cluster along M, which share b's tile by TMA multicast: 1 or 2;
  /// 0 (with cluster_n 0) lets it choose (sm90::default_configuration in sm90_tile_scheduler.h)
  int cluster_m = 0;
  /// group_gemm_sm90's CTAs per cluster along N, which share a's tile: 1 or 2 (256-row tiles, b
  /// per tensor or per block; not with cluster_m 2); 0 (with cluster_m 0) lets it choose
  int cluster_n = 0;
  /// group_gemm_sm90: the output through shared memory, 16-byte stores of whole rows, instead of
  /// 4-byte stores (2 elements) from the registers. Where the kernel chooses the cluster and
  /// takes pairs, it stages the output whatever this says.
  bool staged_epilogue = false;
  /// group_gemm_sm90 with b per row and 128 of K (b_group_size 128, b_group_rows 1): the values
  /// of b_scale_inv K-block-major, [ceil(k / 128), n] contiguous (its TMA loads a K block's
  /// column scales with the operands); unused otherwise.
  const float* b_scale_inv_k_major = nullptr;
  /// group_gemm_sm90 with a per tensor or per row and b per tensor (scales constant along K): the
  /// tensor cores accumulate across all of K, with no promotion per K block (cuBLASLt's fast
  /// accumulation), and the epilogue applies sa * sb; one CTA, or pairs along N (256-row
  /// tiles). The pipeline's speed without promotions, next to the promoting kernels'.
  bool accumulate_across_k = false;
  /// group_gemm_sm90 with a per row or row group (b per tensor or per block), 256-row tiles in
  /// pairs along N (tile_m 256, cluster_n 2): a's scale_inv group-major, [groups, m] with rows
  /// a_scale_k_major_ld (>= m, a multiple of 4) values apart, 16-byte aligned. Each K block's
  /// row scales then come by TMA with the stage instead of from every consumer thread's global
  /// loads (the library's group_gemm_product sets it where the kernel's own configuration is
  /// that one).
  const float* a_scale_inv_k_major = nullptr;
  int64_t a_scale_k_major_ld = 0;
};

/// Null when the arguments describe a valid product (sizes >= 0, leading dims large enough,
/// pointers present where sizes need them, group sizes >= 0, group rows >= 1, tile_m 0, 128 or
/// 256, cluster_m and cluster_n 0, 1 or 2 and not both 2); else what is wrong.
const char* group_gemm_invalid_reason(const GroupGemmArgs& args);

/// Portable kernel. cudaErrorInvalidValue for invalid arguments (group_gemm_invalid_reason),
/// cudaErrorNotSupported for group_rows other than 1, else the launch status. Enqueues on `stream`;
/// never synchronises.
cudaError_t group_gemm_mma(const GroupGemmArgs& args, cudaStream_t stream);

/// Null when group_gemm_sm90 can run this problem on a device of compute capability
/// `device_sm` (e.g. 90); else the reason, e.g. "k must be a multiple of 16 (pad K or use
/// group_gemm_mma)". A pure check of the arguments (whether this build has the sm_90a kernel is
/// group_gemm_sm90_compiled's question). Needs: device_sm == 90, K % 16 == 0,
/// N % 16 == 0 (TMA row pitch and the epilogue), lda/ldb multiples of 16, ldc a multiple of 8,
/// a/b/c/bias 16-byte aligned, b E4M3 per tensor, per 128x128 block or per row and 128 of K (the
/// last two with a E4M3; per row group with b_scale_inv_k_major, 128-row tiles), a per tensor or
/// with groups of one row that are multiples of 128 (or cover the row), M, N >= 1. M is free
/// (TMA fills out-of-range rows with zeros). Tiles are 128 x 128 or 256 x 128 (tile_m 0: the
/// kernel's choice), in clusters of one CTA, two along M (cluster_m 2) or, with 256-row tiles, two
/// along N (cluster_n 2).
const char* group_gemm_sm90_unsupported_reason(const GroupGemmArgs& args, int device_sm);

inline bool group_gemm_sm90_supported(const GroupGemmArgs& args, int device_sm) {
  return group_gemm_sm90_unsupported_reason(args, device_sm) == nullptr;
}

/// Sets *compiled to whether the current device runs the real sm_90a kernel (the build had 9.0a and
/// the device is sm_90); false where only the stub (or nothing) is loaded. Returns a CUDA error
/// already pending on the thread (which the query would otherwise clear), else cudaSuccess.
cudaError_t group_gemm_sm90_compiled(bool* compiled);

/// The configuration of the calling thread's last group_gemm_sm90 launch (for tests: that a
/// requested configuration is the one that ran): tile height, CTAs per cluster along M and N, the
/// staged epilogue, and whether the first kernel (b per tensor, 128 rows, one CTA, stores from
/// the registers) took it, and whether it accumulated across K. All zero before any launch.
struct Sm90Launch {
  int tile_m = 0;
  int cluster_m = 0;
  int cluster_n = 0;
  bool staged_epilogue = false;
  bool first_kernel = false;
  bool across_k = false;
  bool staged_a_scales = false;
};
Sm90Launch group_gemm_sm90_last_launch();

/// Hopper kernel. cudaErrorNotSupported when !group_gemm_sm90_supported(args, sm of the current
/// device), cudaErrorInvalidValue for invalid arguments, else the first failing CUDA/driver status
/// (an error already pending on the thread, tensor-map encoding, attribute setting, launch). Never
/// synchronises, allocates nothing (the tensor maps travel as __grid_constant__ kernel parameters).
cudaError_t group_gemm_sm90(const GroupGemmArgs& args, cudaStream_t stream);

}  // namespace fp8nn::kernels
