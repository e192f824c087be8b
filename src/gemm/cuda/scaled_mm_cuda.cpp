// Path choice for the FP8 product on CUDA:
//  0. Block-scaled operands (group_rows > 1: 128x128 blocks) and pairs of 1x128 operands (per
//     group of 128 on both sides), the DeepSeek-V3 products, depend on FP8NN_GROUP_GEMM:
//     `cublaslt` and auto take cuBLASLt's block scale modes (cuBLAS 12.9+, Hopper) where they
//     apply, the fastest of the paths (docs/blockwise-gemm-plan.md); then `sm90` and auto
//     group_gemm_sm90 for a 1x128 a and a 128x128 b, and group_gemm_mma for any other
//     block-scaled product; `mma` group_gemm_mma. What remains (1x128 pairs that cuBLASLt did
//     not take) goes on as below, to group_gemm_sm90 under `sm90` only (auto keeps them on the
//     K split).
//  0b. Mixed's product, an E4M3 a per row group of 128 * j along K times an E4M3 b per tensor,
//     under auto and `cublaslt` on Hopper: restated per 128 of K and per 128x128 block
//     (block_operands.h) and taken by cuBLASLt's block modes like 0.; else as below.
//  1. cuBLASLt FP8 tensor cores (sm_89+) when both operands are per-tensor or per-row scaled (a
//     group covering a whole row is per-row: OUTER_VEC_32F) and not e5m2 x e5m2. K and N that are
//     not multiples of 16, and misaligned data, are handled by zero-padded copies: zeros along K
//     add nothing to any dot product, and padded rows of b only make output columns that are
//     dropped. M needs no padding (it is cuBLASLt's n, on which FP8 puts no constraint with these
//     scale modes; the block modes of 0. pad it too).
//  2. Groups that split rows: K split at the group boundaries, one cuBLASLt product per slice.
//  3. Otherwise, or when cuBLASLt refuses: the reference product (dequantize, fp32 matmul) on the
//     device.
// FP8NN_GROUP_GEMM (gemm/cuda/group_gemm_cuda.h) swaps in the hand-written kernels: `mma`
// replaces 2 and 3 with group_gemm_mma; `sm90` and auto send group-scaled a to group_gemm_sm90
// first (where it applies) and replace 3 with group_gemm_mma (the faster route on an H100:
// docs/kernels.md).

#include "gemm/cuda/scaled_mm_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <array>
#include <cstdint>

#include "common/cuda/device_memory.h"
#include "gemm/block_operands.h"
#include "gemm/cuda/cublaslt_gemm.h"
#include "gemm/cuda/group_gemm_cuda.h"
#include "gemm/scaled_mm_reference.h"

namespace fp8nn::functional {
namespace {

thread_local std::array<int64_t, kScaledMmPathCount> path_counts{};

// Counts the call under `path` (scaled_mm_path_count) and returns its result.
torch::Tensor counted(ScaledMmPath path, torch::Tensor out) {
  ++path_counts[static_cast<size_t>(path)];
  return out;
}

// cuBLASLt FP8: K and N multiples of 16, buffers 16-byte aligned.
constexpr int64_t kDimMultiple = 16;
constexpr uintptr_t kPointerAlignmentBytes = 16;

int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

bool aligned(const torch::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % kPointerAlignmentBytes == 0;
}

// cuBLASLt's block scale modes (VEC128, BLK128x128): Hopper only.
bool has_block_modes(c10::DeviceIndex device) {
  return at::cuda::getDeviceProperties(device)->major == 9;
}

// FP8 tensor cores with fp32 accumulation: Ada (8.9) and later.
bool has_fp8_tensor_cores(c10::DeviceIndex device) {
  const cudaDeviceProp* properties = at::cuda::getDeviceProperties(device);
  return properties->major * 10 + properties->minor >= 89;
}

// The cuBLASLt scale mode that expresses an operand exactly, if any: per tensor, or one group per
// row (group_size >= K).
c10::optional<cuda::ScaleMode> scale_mode_of(const QuantizedTensor& q) {
  if (q.group_size == 0) return cuda::ScaleMode::PerTensor;
  if (q.group_size >= q.data.size(1)) return cuda::ScaleMode::PerRow;
  return c10::nullopt;
}

// scale_inv as `rows` contiguous, aligned fp32 values (a per-tensor value repeated), padded with
// ones to `padded_rows` (padded rows hold zeros, so their scale does not matter).
torch::Tensor row_scales(const QuantizedTensor& q, int64_t padded_rows) {
  const int64_t rows = q.data.size(0);
  auto scales =
      q.group_size == 0 ? q.scale_inv.reshape({1}).expand({rows}) : q.scale_inv.reshape({rows});
  if (padded_rows != rows) return at::constant_pad_nd(scales, {0, padded_rows - rows}, 1.0);
  scales = scales.contiguous();
  return aligned(scales) ? scales : scales.clone();
}

// FP8 data as a contiguous, aligned [padded_rows, padded_cols] tensor, zeros in the padding (the
// FP8 zero is the all-zero byte in both formats, so the padding is built on a byte view).
torch::Tensor padded_data(const torch::Tensor& data, int64_t padded_rows, int64_t padded_cols) {
  auto contiguous = data.contiguous();
  if (padded_rows == data.size(0) && padded_cols == data.size(1) && aligned(contiguous)) {
    return contiguous;
  }
  auto padded = at::zeros({padded_rows, padded_cols}, data.options().dtype(at::kByte));
  padded.narrow(0, 0, data.size(0)).narrow(1, 0, data.size(1)).copy_(contiguous.view(at::kByte));
  return padded.view(data.scalar_type());
}

// The product on cuBLASLt, or nullopt when it cannot express it.
c10::optional<torch::Tensor> tensor_core_product(const QuantizedTensor& a, const QuantizedTensor& b,
                                                 const c10::optional<torch::Tensor>& bias,
                                                 at::ScalarType out_dtype, bool fast_accumulation) {
  const int64_t M = a.data.size(0);
  const int64_t K = a.data.size(1);
  const int64_t N = b.data.size(0);
  if (M == 0 || N == 0 || K == 0) return c10::nullopt;
  if (!has_fp8_tensor_cores(a.data.device().index())) return c10::nullopt;
  if (a.format == Format::E5M2 && b.format == Format::E5M2) return c10::nullopt;
  const auto a_mode = scale_mode_of(a);
  const auto b_mode = scale_mode_of(b);
  if (!a_mode || !b_mode) return c10::nullopt;

  const int64_t padded_K = round_up(K, kDimMultiple);
  const int64_t padded_N = round_up(N, kDimMultiple);
  const auto a_data = padded_data(a.data, M, padded_K);
  const auto b_data = padded_data(b.data, padded_N, padded_K);

  // OUTER_VEC_32F is all or nothing: a per-tensor partner gets its scale repeated per row.
  const bool per_row = *a_mode == cuda::ScaleMode::PerRow || *b_mode == cuda::ScaleMode::PerRow;
  const auto mode = per_row ? cuda::ScaleMode::PerRow : cuda::ScaleMode::PerTensor;
  const auto a_scale = per_row ? row_scales(a, M) : a.scale_inv;
  const auto b_scale = per_row ? row_scales(b, padded_N) : b.scale_inv;

  // The epilogue adds a bias of the output's type for bf16/fp16 output (cuBLASLt's FP8 table). For
  // fp32 output that table asks for a bf16 bias, which would round an fp32 one, so that bias is
  // added afterwards, exactly, in fp32.
  const bool has_bias = bias.has_value() && bias->defined();
  c10::optional<torch::Tensor> epilogue_bias;
  if (has_bias && out_dtype != at::kFloat) {
    auto converted = bias->to(out_dtype).contiguous();
    if (padded_N != N) converted = at::constant_pad_nd(converted, {0, padded_N - N}, 0.0);
    epilogue_bias = aligned(converted) ? converted : converted.clone();
  }

  auto out = cuda::empty({M, padded_N}, out_dtype, a.data.device());
  const cuda::FP8Operand lt_a{a_data, a_scale, mode};
  const cuda::FP8Operand lt_b{b_data, b_scale, mode};
  if (!cuda::cublaslt_scaled_mm(lt_a, lt_b, epilogue_bias, out, fast_accumulation)) {
    return c10::nullopt;
  }
  if (padded_N != N) out = out.narrow(1, 0, N).contiguous();
  if (has_bias && out_dtype == at::kFloat) out.add_(*bias);
  return out;
}

// The columns [begin, begin + length) of an operand, with the scale that applies to them: one
// group per row of the slice (a per-row vector) when the operand is group-scaled, its tensor scale
// otherwise. The slice lies inside one of the operand's groups.
QuantizedTensor k_slice(const QuantizedTensor& q, int64_t begin, int64_t length) {
  auto data = q.data.narrow(1, begin, length);
  if (q.group_size == 0) return {data, q.scale_inv, q.format, 0};
  const auto scales = q.scale_inv.select(1, begin / q.group_size).contiguous();
  return {data, scales, q.format, length};
}

// Group scales that change along K cannot go into one tensorwise or per-row product. Split K at
// the group boundaries: each slice is a per-row (OUTER_VEC) product on the tensor cores, summed in
// fp32; then the bias and the output dtype. Exact up to accumulation order. (The hand-written
// group-scaled GEMMs promote inside the K loop instead of re-reading the output.)
// The cuBLASLt scale mode of a block-scaled operand: 1x128 (per group of 128 along K) or 128x128.
c10::optional<cuda::ScaleMode> block_mode_of(const QuantizedTensor& q) {
  if (q.group_size != kBlockSize) return c10::nullopt;
  if (q.group_rows == 1) return cuda::ScaleMode::Vec128;
  if (q.group_rows == kBlockSize) return cuda::ScaleMode::Block128x128;
  return c10::nullopt;
}

// scale_inv in the layout cuBLASLt's block modes read (cublaslt_gemm.h), for `rows` rows (more
// than the operand has when its data was padded: the extra scales are ones, their rows zeros).
torch::Tensor block_scales(const QuantizedTensor& q, cuda::ScaleMode mode, int64_t rows) {
  torch::Tensor scales;
  if (mode == cuda::ScaleMode::Vec128) {
    // [rows, K blocks] -> K-block-major.
    scales = q.scale_inv.t();
    const int64_t extra_rows = rows - q.data.size(0);
    if (extra_rows > 0) scales = at::constant_pad_nd(scales, {0, extra_rows}, 1.0);
  } else {
    // [row blocks, K blocks] with each row padded to a multiple of 4 K blocks. Padded data rows
    // stay inside the last row block (rows round up to 16 only), so no row block is added.
    const int64_t k_blocks = q.scale_inv.size(1);
    const int64_t padded_k_blocks = round_up(k_blocks, 4);
    scales = q.scale_inv;
    if (padded_k_blocks != k_blocks) {
      scales = at::constant_pad_nd(scales, {0, padded_k_blocks - k_blocks}, 1.0);
    }
  }
  scales = scales.contiguous();
  return aligned(scales) ? scales : scales.clone();
}

// The product on cuBLASLt's block scale modes, or nullopt when they cannot express it (operands,
// device or library) or cuBLASLt refuses. Always accumulates precisely (the only mode there is).
c10::optional<torch::Tensor> block_product(const QuantizedTensor& a, const QuantizedTensor& b,
                                           const c10::optional<torch::Tensor>& bias,
                                           at::ScalarType out_dtype) {
  const int64_t M = a.data.size(0);
  const int64_t K = a.data.size(1);
  const int64_t N = b.data.size(0);
  if (M == 0 || N == 0 || K == 0) return c10::nullopt;
  const auto a_mode = block_mode_of(a);
  const auto b_mode = block_mode_of(b);
  if (!a_mode || !b_mode) return c10::nullopt;
  if (*a_mode == cuda::ScaleMode::Block128x128 && *b_mode == cuda::ScaleMode::Block128x128) {
    return c10::nullopt;  // cuBLASLt pairs a 128x128 operand with a 1x128 one only
  }
  if (!has_block_modes(a.data.device().index())) return c10::nullopt;
  if (a.format == Format::E5M2 && b.format == Format::E5M2) return c10::nullopt;

  // K in whole blocks of 128 (the block modes scale per 128 of K; a short last block is not
  // something to rely on them for): zeros add nothing, and the last block keeps its scale.
  // M as well as N in multiples of 16: unlike the per-tensor modes, a 1x128-scaled operand needs
  // its rows (cuBLASLt's n for a) in multiples of 8, and its scales' rows then stay 16-byte
  // aligned per K block.
  const int64_t padded_K = round_up(K, kBlockSize);
  const int64_t padded_M = round_up(M, kDimMultiple);
  const int64_t padded_N = round_up(N, kDimMultiple);
  const auto a_data = padded_data(a.data, padded_M, padded_K);
  const auto b_data = padded_data(b.data, padded_N, padded_K);
  const auto a_scale = block_scales(a, *a_mode, padded_M);
  const auto b_scale = block_scales(b, *b_mode, padded_N);

  // The epilogue's bias as on the per-tensor path; should cuBLASLt refuse it with these modes,
  // the product comes out in fp32 and the bias is added there, rounding once to out_dtype.
  const bool has_bias = bias.has_value() && bias->defined();
  const auto run = [&](const c10::optional<torch::Tensor>& epilogue_bias,
                       at::ScalarType dtype) -> c10::optional<torch::Tensor> {
    auto out = cuda::empty({padded_M, padded_N}, dtype, a.data.device());
    const cuda::FP8Operand lt_a{a_data, a_scale, *a_mode};
    const cuda::FP8Operand lt_b{b_data, b_scale, *b_mode};
    if (!cuda::cublaslt_scaled_mm(lt_a, lt_b, epilogue_bias, out, /*fast_accumulation=*/false)) {
      return c10::nullopt;
    }
    if (padded_M != M || padded_N != N) out = out.narrow(0, 0, M).narrow(1, 0, N).contiguous();
    return out;
  };
  if (has_bias && out_dtype != at::kFloat) {
    auto converted = bias->to(out_dtype).contiguous();
    if (padded_N != N) converted = at::constant_pad_nd(converted, {0, padded_N - N}, 0.0);
    if (!aligned(converted)) converted = converted.clone();
    if (auto out = run(converted, out_dtype)) return out;
  }
  auto out = run(c10::nullopt, has_bias ? at::kFloat : out_dtype);
  if (!out || !has_bias) return out;
  out->add_(*bias);
  return out_dtype == at::kFloat ? out : out->to(out_dtype);
}

// The product on group_gemm_mma, which takes every problem (built for the FP8 architectures only,
// 8.9 and 9.0a, like the rest of kernels/: the caller checks the device).
torch::Tensor mma_product(const QuantizedTensor& a, const QuantizedTensor& b,
                          const c10::optional<torch::Tensor>& bias, at::ScalarType out_dtype) {
  auto out = cuda::group_gemm_product(a, b, bias, out_dtype, cuda::GroupGemmKernel::Mma);
  TORCH_INTERNAL_ASSERT(out.has_value(), "fp8nn::scaled_mm: group_gemm_mma refused a ",
                        a.data.sizes(), " x ", b.data.sizes(), "^T product");
  return *out;
}

c10::optional<torch::Tensor> k_split_product(const QuantizedTensor& a, const QuantizedTensor& b,
                                             const c10::optional<torch::Tensor>& bias,
                                             at::ScalarType out_dtype, bool fast_accumulation) {
  const int64_t K = a.data.size(1);
  const int64_t group_a = a.group_size > 0 && a.group_size < K ? a.group_size : 0;
  const int64_t group_b = b.group_size > 0 && b.group_size < K ? b.group_size : 0;
  if (group_a == 0 && group_b == 0) return c10::nullopt;
  const int64_t step = group_a == 0 ? group_b : group_b == 0 ? group_a : std::min(group_a, group_b);
  if ((group_a != 0 && group_a % step != 0) || (group_b != 0 && group_b % step != 0) ||
      step % kDimMultiple != 0) {
    return c10::nullopt;  // slices would straddle groups or break cuBLASLt's alignment
  }
  c10::optional<torch::Tensor> sum;
  for (int64_t begin = 0; begin < K; begin += step) {
    const int64_t length = std::min(step, K - begin);
    auto part = tensor_core_product(k_slice(a, begin, length), k_slice(b, begin, length),
                                    c10::nullopt, at::kFloat, fast_accumulation);
    if (!part) return c10::nullopt;
    if (sum) {
      sum->add_(*part);
    } else {
      sum = std::move(part);
    }
  }
  // group_a or group_b is a group size below K, so K > 0 and the loop ran at least once.
  TORCH_INTERNAL_ASSERT(sum.has_value(), "fp8nn::scaled_mm: K split of an empty K");
  if (bias.has_value() && bias->defined()) sum->add_(*bias);
  return sum->to(out_dtype);
}

}  // namespace

torch::Tensor scaled_mm_cuda(const QuantizedTensor& a, const QuantizedTensor& b,
                             const c10::optional<torch::Tensor>& bias, at::ScalarType out_dtype,
                             bool fast_accumulation) {
  const c10::cuda::CUDAGuard guard(a.data.device());
  // A bias of another dtype than the output (e.g. fp32 master bias, bf16 activations) would be
  // rounded to the output's dtype before an epilogue adds it: the product comes out in fp32
  // instead, and one elementwise kernel adds the bias in fp32 and rounds the sum once to the
  // output's dtype (add_out computes in the inputs' common dtype and casts on the store).
  if (bias.has_value() && bias->defined() && bias->scalar_type() != out_dtype &&
      out_dtype != at::kFloat) {
    const auto product = scaled_mm_cuda(a, b, c10::nullopt, at::kFloat, fast_accumulation);
    auto out = at::empty(product.sizes(), product.options().dtype(out_dtype));
    at::add_out(out, product, *bias);
    return out;
  }
  // FP8NN_GROUP_GEMM is read only where it can matter: a product that cuBLASLt's one-launch path
  // takes (every per-tensor one) reads no environment.
  const int64_t K = a.data.size(1);
  const bool block_scaled = a.group_rows > 1 || b.group_rows > 1;
  const bool both_per_128 =
      a.group_size == kBlockSize && b.group_size == kBlockSize && K > kBlockSize;
  if (block_scaled || both_per_128) {
    const auto route = cuda::group_gemm_route();
    const bool automatic = route == cuda::GroupGemmRoute::Auto;
    if (route == cuda::GroupGemmRoute::CublasLt || automatic) {
      if (auto out = block_product(a, b, bias, out_dtype)) {
        return counted(ScaledMmPath::CublasLtBlock, *out);
      }
    }
    if (block_scaled) {
      if (route == cuda::GroupGemmRoute::Sm90 || automatic) {
        if (auto out =
                cuda::group_gemm_product(a, b, bias, out_dtype, cuda::GroupGemmKernel::Sm90)) {
          return counted(ScaledMmPath::GroupGemmSm90, *out);
        }
      }
      if (route != cuda::GroupGemmRoute::CublasLt &&
          has_fp8_tensor_cores(a.data.device().index())) {
        return counted(ScaledMmPath::GroupGemmMma, mma_product(a, b, bias, out_dtype));
      }
      return counted(ScaledMmPath::Reference, scaled_mm_reference(a, b, bias, out_dtype));
    }
  }
  const bool a_split_by_groups = a.group_size > 0 && a.group_size < K;
  // Mixed's products (a per row group of 128 * j, E4M3 or E5M2: x or dy; b per tensor E4M3),
  // under auto and `cublaslt`: the same scales restated per 128 of K and per 128x128 block, in
  // cuBLASLt's block modes (block_operands.h), the fastest measured path for that shape of
  // scaling. Where cuBLASLt refuses a pairing, block_product answers nothing and the paths below
  // take it.
  if (a_split_by_groups && b.group_size == 0 && b.format == Format::E4M3 &&
      has_block_modes(a.data.device().index())) {
    const auto route = cuda::group_gemm_route();
    if (route == cuda::GroupGemmRoute::Auto || route == cuda::GroupGemmRoute::CublasLt) {
      if (const auto blocks = detail::row_groups_as_blocks(a, b)) {
        if (auto out = block_product(blocks->first, blocks->second, bias, out_dtype)) {
          return counted(ScaledMmPath::CublasLtBlock, *out);
        }
      }
    }
  }
  // auto keeps a group-scaled b (the 1D1D product) off the kernel: cuBLASLt's block modes took it
  // above where they can, faster, and the K split takes it here.
  const auto takes_sm90 = [&](cuda::GroupGemmRoute route) {
    return route == cuda::GroupGemmRoute::Sm90 ||
           (route == cuda::GroupGemmRoute::Auto && b.group_size == 0);
  };
  if (a_split_by_groups && takes_sm90(cuda::group_gemm_route())) {
    if (auto out = cuda::group_gemm_product(a, b, bias, out_dtype, cuda::GroupGemmKernel::Sm90)) {
      return counted(ScaledMmPath::GroupGemmSm90, *out);
    }
  }
  if (auto out = tensor_core_product(a, b, bias, out_dtype, fast_accumulation)) {
    return counted(ScaledMmPath::CublasLt, *out);
  }
  const auto route = cuda::group_gemm_route();
  if (route != cuda::GroupGemmRoute::Mma) {
    if (auto out = k_split_product(a, b, bias, out_dtype, fast_accumulation)) {
      return counted(ScaledMmPath::CublasLtKSplit, *out);
    }
  }
  if (route != cuda::GroupGemmRoute::CublasLt && has_fp8_tensor_cores(a.data.device().index())) {
    return counted(ScaledMmPath::GroupGemmMma, mma_product(a, b, bias, out_dtype));
  }
  return counted(ScaledMmPath::Reference, scaled_mm_reference(a, b, bias, out_dtype));
}

int64_t scaled_mm_path_count(ScaledMmPath path) { return path_counts[static_cast<size_t>(path)]; }

const char* path_name(ScaledMmPath path) {
  switch (path) {
    case ScaledMmPath::CublasLt:
      return "cublaslt";
    case ScaledMmPath::CublasLtKSplit:
      return "cublaslt_k_split";
    case ScaledMmPath::GroupGemmSm90:
      return "group_gemm_sm90";
    case ScaledMmPath::GroupGemmMma:
      return "group_gemm_mma";
    case ScaledMmPath::Reference:
      return "reference";
    case ScaledMmPath::CublasLtBlock:
      return "cublaslt_block";
  }
  return "unknown";
}

}  // namespace fp8nn::functional
