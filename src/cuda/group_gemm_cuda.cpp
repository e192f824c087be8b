#include "cuda/group_gemm_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "group_gemm.h"

namespace fp8nn::cuda {
namespace {

// What FP8NN_GROUP_GEMM=auto (or unset) means: the sm90 kernel for activations whose groups split
// rows. Measured on the H100 (fp8nn_bench gemm, bf16 out, 2026-11-25), against the cuBLASLt route
// (one product per group slice of K, summed in fp32): groups of 128 at (4096,4096,4096) to
// (16384,8192,8192): 0.17-2.7 ms against 3.6-47.6 ms (21-26x faster); groups of 4096 with
// K = 14336: 1.05 against 1.75 ms; K = 8192: 2.74 against 3.22 ms. Rows of one group (per-row
// scales) stay on cuBLASLt's OUTER_VEC path either way (the kernel is not asked).
constexpr GroupGemmRoute kAutoGroupGemmRoute = GroupGemmRoute::Sm90;

GroupGemmRoute parse_route(const char* value) {
  const std::string text = value == nullptr ? "" : value;
  if (text.empty() || text == "auto") return kAutoGroupGemmRoute;
  if (text == "cublaslt") return GroupGemmRoute::CublasLt;
  if (text == "mma") return GroupGemmRoute::Mma;
  if (text == "sm90") return GroupGemmRoute::Sm90;
  TORCH_CHECK_VALUE(false, "fp8nn: FP8NN_GROUP_GEMM must be cublaslt, mma, sm90 or auto, got '",
                    text, "'");
}

kernels::HighPrecision output_type_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return kernels::HighPrecision::kFloat32;
    case at::kHalf:
      return kernels::HighPrecision::kFloat16;
    case at::kBFloat16:
      return kernels::HighPrecision::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "fp8nn::scaled_mm: expected float, half or bfloat16 output, got ",
                       dtype);
  }
}

kernels::Fp8Format fp8_format_of(Format format) {
  return format == Format::E4M3 ? kernels::Fp8Format::kE4M3 : kernels::Fp8Format::kE5M2;
}

// FP8 data as [rows, K] with unit stride along K; the leading dim is the row stride.
torch::Tensor k_major(const torch::Tensor& data) {
  const int64_t K = data.size(1);
  const bool usable =
      data.stride(1) == 1 && (data.size(0) <= 1 || data.stride(0) >= std::max<int64_t>(K, 1));
  return usable ? data : data.contiguous();
}

int64_t leading_dim(const torch::Tensor& data) {
  return data.size(0) <= 1 ? std::max<int64_t>(data.size(1), 1) : data.stride(0);
}

int device_sm(c10::DeviceIndex device) {
  const cudaDeviceProp* properties = at::cuda::getDeviceProperties(device);
  return properties->major * 10 + properties->minor;
}

// group_gemm_sm90_compiled, its report of a CUDA error pending from earlier work as c10::Error.
bool sm90_kernel_compiled() {
  try {
    return kernels::group_gemm_sm90_compiled();
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, "fp8nn::scaled_mm: ", e.what());
  }
}

}  // namespace

GroupGemmRoute group_gemm_route() { return parse_route(std::getenv("FP8NN_GROUP_GEMM")); }

c10::optional<torch::Tensor> group_gemm_product(const QuantizedTensor& a, const QuantizedTensor& b,
                                                const c10::optional<torch::Tensor>& bias,
                                                at::ScalarType out_dtype, GroupGemmKernel kernel) {
  const int64_t M = a.data.size(0);
  const int64_t K = a.data.size(1);
  const int64_t N = b.data.size(0);
  const auto a_data = k_major(a.data);
  const auto b_data = k_major(b.data);
  const auto a_scale = a.scale_inv.contiguous();
  const auto b_scale = b.scale_inv.contiguous();
  c10::optional<torch::Tensor> epilogue_bias;
  if (bias.has_value() && bias->defined()) epilogue_bias = bias->to(out_dtype).contiguous();
  auto out = at::empty({M, N}, a.data.options().dtype(out_dtype));

  kernels::GroupGemmArgs args;
  args.a = a_data.data_ptr();
  args.b = b_data.data_ptr();
  args.a_scale_inv = a_scale.data_ptr<float>();
  args.b_scale_inv = b_scale.data_ptr<float>();
  args.a_group_size = a.group_size;
  args.b_group_size = b.group_size;
  args.c = out.data_ptr();
  args.bias = epilogue_bias ? epilogue_bias->data_ptr() : nullptr;
  args.m = M;
  args.n = N;
  args.k = K;
  args.lda = leading_dim(a_data);
  args.ldb = leading_dim(b_data);
  args.ldc = std::max<int64_t>(N, 1);
  args.a_format = fp8_format_of(a.format);
  args.b_format = fp8_format_of(b.format);
  args.out_type = output_type_of(out_dtype);
  const char* invalid = kernels::group_gemm_invalid_reason(args);
  TORCH_INTERNAL_ASSERT(invalid == nullptr, "fp8nn: group GEMM arguments: ", invalid);

  const auto device = a.data.device().index();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device).stream();
  cudaError_t status;
  if (kernel == GroupGemmKernel::Sm90) {
    if (!kernels::group_gemm_sm90_supported(args, device_sm(device)) || !sm90_kernel_compiled()) {
      return c10::nullopt;
    }
    status = kernels::group_gemm_sm90(args, stream);
  } else {
    status = kernels::group_gemm_mma(args, stream);
  }
  TORCH_CHECK(status == cudaSuccess, "fp8nn::scaled_mm: group_gemm_",
              kernel == GroupGemmKernel::Sm90 ? "sm90" : "mma",
              " failed: ", cudaGetErrorString(status));
  return out;
}

}  // namespace fp8nn::cuda
