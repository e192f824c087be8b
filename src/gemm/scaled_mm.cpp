// scaled_mm: argument checks, then CUDA tensors to the tensor-core paths (gemm/cuda/) when built
// with CUDA, everything else to the reference product (scaled_mm_reference.cpp).

#include <fp8nn/scaled_mm.h>

#include <ATen/ATen.h>

#include "gemm/scaled_mm_reference.h"
#include "quantize/quantize_detail.h"

#ifdef FP8NN_WITH_CUDA
#include "gemm/cuda/cublaslt_gemm.h"
#include "gemm/cuda/scaled_mm_cuda.h"
#endif

namespace fp8nn::functional {
namespace {

void check_operand(const QuantizedTensor& q, const char* name) {
  TORCH_CHECK_VALUE(q.data.defined() && q.scale_inv.defined(), "fp8nn::scaled_mm: expected ", name,
                    " with data and scale_inv");
  TORCH_CHECK_VALUE(q.data.dim() == 2, "fp8nn::scaled_mm: expected ", name, " to be 2-d, got ",
                    q.data.dim(), "-d");
  TORCH_CHECK_TYPE(q.data.scalar_type() == dtype_of(q.format), "fp8nn::scaled_mm: expected ", name,
                   " of dtype ", dtype_of(q.format), ", got ", q.data.scalar_type());
  TORCH_CHECK_TYPE(q.scale_inv.scalar_type() == at::kFloat, "fp8nn::scaled_mm: expected ", name,
                   ".scale_inv of dtype float, got ", q.scale_inv.scalar_type());
  TORCH_CHECK(q.scale_inv.device() == q.data.device(), "fp8nn::scaled_mm: expected ", name,
              ".scale_inv on ", q.data.device(), ", got ", q.scale_inv.device());
  TORCH_CHECK_VALUE(q.group_size >= 0, "fp8nn::scaled_mm: expected ", name,
                    ".group_size >= 0, got ", q.group_size);
  TORCH_CHECK_VALUE(q.group_rows >= 1 && (q.group_size > 0 || q.group_rows == 1),
                    "fp8nn::scaled_mm: expected ", name,
                    ".group_rows >= 1 (1 when per tensor), got ", q.group_rows);
  if (q.group_size == 0) {
    TORCH_CHECK_VALUE(q.scale_inv.numel() == 1, "fp8nn::scaled_mm: expected one scale_inv for ",
                      "per-tensor ", name, ", got ", q.scale_inv.numel());
  } else {
    const auto shape = detail::group_scale_shape(q);
    TORCH_CHECK_VALUE(q.scale_inv.sizes() == at::IntArrayRef(shape), "fp8nn::scaled_mm: expected ",
                      name, ".scale_inv of shape ", at::IntArrayRef(shape), ", got ",
                      q.scale_inv.sizes());
  }
}

}  // namespace

torch::Tensor scaled_mm(const QuantizedTensor& a, const QuantizedTensor& b,
                        const c10::optional<torch::Tensor>& bias, at::ScalarType out_dtype,
                        bool fast_accumulation) {
  check_operand(a, "a");
  check_operand(b, "b");
  TORCH_CHECK_VALUE(a.data.size(1) == b.data.size(1), "fp8nn::scaled_mm: expected a [M, K] and b ",
                    "[N, K] with the same K, got a ", a.data.sizes(), " and b ", b.data.sizes());
  TORCH_CHECK(a.data.device() == b.data.device(), "fp8nn::scaled_mm: expected a and b on one ",
              "device, got ", a.data.device(), " and ", b.data.device());
  TORCH_CHECK_TYPE(out_dtype == at::kFloat || out_dtype == at::kHalf || out_dtype == at::kBFloat16,
                   "fp8nn::scaled_mm: expected out_dtype float, half or bfloat16, got ", out_dtype);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == b.data.size(0),
                      "fp8nn::scaled_mm: expected bias of shape [", b.data.size(0), "], got ",
                      bias->sizes());
    TORCH_CHECK(bias->device() == a.data.device(), "fp8nn::scaled_mm: expected bias on ",
                a.data.device(), ", got ", bias->device());
    const auto bias_dtype = bias->scalar_type();
    TORCH_CHECK_TYPE(
        bias_dtype == at::kFloat || bias_dtype == at::kHalf || bias_dtype == at::kBFloat16,
        "fp8nn::scaled_mm: expected bias of dtype float, half or bfloat16, got ", bias_dtype);
  }
#ifdef FP8NN_WITH_CUDA
  if (a.data.is_cuda()) return scaled_mm_cuda(a, b, bias, out_dtype, fast_accumulation);
#endif
  (void)fast_accumulation;  // the reference accumulates in fp32 throughout
  return scaled_mm_reference(a, b, bias, out_dtype);
}

void set_gemm_autotuning(bool enabled) {
#ifdef FP8NN_WITH_CUDA
  cuda::set_gemm_autotuning(enabled);
#else
  (void)enabled;
#endif
}

bool gemm_autotuning() {
#ifdef FP8NN_WITH_CUDA
  return cuda::gemm_autotuning();
#else
  return false;
#endif
}

}  // namespace fp8nn::functional
