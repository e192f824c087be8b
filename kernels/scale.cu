// From amax values to scale and scale_inv, on the device.

#include "cuda_check.h"
#include "scale.cuh"
#include "scale.h"

namespace fp8nn::kernels {
namespace {

constexpr int kThreadsPerBlock = 256;

__global__ void compute_scales_kernel(const float* __restrict__ amax, float* __restrict__ scale,
                                      float* __restrict__ scale_inv, int64_t count, float fmt_max) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float s = scale_from_amax(amax[i], fmt_max);
  if (scale != nullptr) scale[i] = s;
  scale_inv[i] = __frcp_rn(s);
}

}  // namespace

void compute_scales(const float* amax, float* scale, float* scale_inv, int64_t count,
                    float fmt_max, cudaStream_t stream) {
  if (count == 0) return;
  const int64_t blocks = (count + kThreadsPerBlock - 1) / kThreadsPerBlock;
  compute_scales_kernel<<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, stream>>>(
      amax, scale, scale_inv, count, fmt_max);
  FP8NN_CUDA_CHECK_LAUNCH();
}

}  // namespace fp8nn::kernels
