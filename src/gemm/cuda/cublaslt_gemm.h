#pragma once
// The FP8 product on cuBLASLt: out[M, N] = (scale_a * a[M, K]) @ (scale_b * b[N, K])^T (+ bias[N]),
// a and b row-major with K contiguous (the TN form Hopper's FP8 tensor cores need), fp32 compute,
// output bf16/fp16/fp32. One cuBLASLt handle per device, heuristics cached per problem, the
// workspace from the caching allocator, the current stream; no host synchronisation.
//
// This is the bare tensor-core call: the caller (scaled_mm_cuda.cpp) pads and converts so that the
// preconditions below hold, and falls back to another path when this returns false.

#include <torch/types.h>

#include <c10/util/Optional.h>

namespace fp8nn::cuda {

/// How an operand's scale_inv applies (cuBLASLt's A/B_SCALE_MODE):
///  - PerTensor: one fp32 value for the whole tensor;
///  - PerRow: one fp32 value per row (OUTER_VEC_32F; both operands must then use it);
///  - Vec128: one fp32 value per row and 128 of K (VEC128_32F), K-block-major: the value of
///    (row r, K block kb) at scale_inv[kb * rows + r], ceil(K / 128) * rows values;
///  - Block128x128: one fp32 value per 128 x 128 block (BLK128x128_32F), row-block-major with
///    each row of K blocks padded to a multiple of 4: (row block rb, K block kb) at
///    scale_inv[rb * round_up(ceil(K / 128), 4) + kb].
/// Vec128 pairs with Vec128 or Block128x128 (not two Block128x128), and these block modes
/// accumulate precisely only (fast_accumulation must be false): cuBLAS 12.9+, Hopper.
enum class ScaleMode { PerTensor, PerRow, Vec128, Block128x128 };

/// One FP8 operand: data [rows, K] contiguous (e4m3fn or e5m2, 16-byte aligned); scale_inv fp32 on
/// the same device, contiguous and 16-byte aligned, holding the values `mode` describes.
struct FP8Operand {
  const torch::Tensor& data;
  const torch::Tensor& scale_inv;
  ScaleMode mode;
};

/// The number of scale_inv values an operand of `rows` x `k` takes in `mode`.
int64_t scale_count(ScaleMode mode, int64_t rows, int64_t k);

/// Runs the product into `out` ([M, N] contiguous, bf16/fp16/fp32, on a's device) on the current
/// stream. Preconditions (asserted): K % 16 == 0, N % 16 == 0, not e5m2 x e5m2, a pairing of
/// ScaleModes described above, and no fast accumulation with the block modes; bias, when given, is
/// [N] contiguous of out's dtype and out is not fp32 (for fp32 output cuBLASLt's FP8 epilogue wants
/// a bf16 bias, which would round an fp32 one; the caller adds that bias itself). Returns false,
/// writing nothing, when cuBLASLt does not support the problem on this device (no algorithm,
/// CUBLAS_STATUS_NOT_SUPPORTED, or a configuration it rejects as invalid); other cuBLASLt failures
/// raise c10::Error.
bool cublaslt_scaled_mm(const FP8Operand& a, const FP8Operand& b,
                        const c10::optional<torch::Tensor>& bias, torch::Tensor& out,
                        bool fast_accumulation);

/// Autotuning of the algorithm per problem (see fp8nn::functional::set_gemm_autotuning).
void set_gemm_autotuning(bool enabled);
bool gemm_autotuning();

}  // namespace fp8nn::cuda
