#include "bench.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/error.h"

namespace fp8nn::bench {

double median_us(const Options& options, cudaStream_t stream, const std::function<void(int)>& run) {
  cudaEvent_t start, stop;
  FP8NN_CUDA_CHECK(cudaEventCreate(&start));
  FP8NN_CUDA_CHECK(cudaEventCreate(&stop));
  int call = 0;
  for (int s = 0; s < options.warmup; ++s) {
    for (int b = 0; b < options.batch; ++b) run(call++);
  }
  std::vector<double> per_call_us;
  for (int s = 0; s < options.samples; ++s) {
    FP8NN_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int b = 0; b < options.batch; ++b) run(call++);
    FP8NN_CUDA_CHECK(cudaEventRecord(stop, stream));
    FP8NN_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    FP8NN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    per_call_us.push_back(1000.0 * ms / options.batch);
  }
  FP8NN_CUDA_CHECK(cudaEventDestroy(start));
  FP8NN_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(per_call_us.begin(), per_call_us.end());
  return per_call_us[per_call_us.size() / 2];
}

int64_t l2_bytes() {
  int device = 0, bytes = 0;
  FP8NN_CUDA_CHECK(cudaGetDevice(&device));
  FP8NN_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, device));
  return bytes;
}

RotatingBuffers::RotatingBuffers(int64_t bytes, int minimum) {
  const int64_t per_buffer = std::max<int64_t>(bytes, 1);
  const int64_t wanted = (2 * l2_bytes() + per_buffer - 1) / per_buffer + 1;
  const int64_t count = std::max<int64_t>(minimum, wanted);
  for (int64_t i = 0; i < count; ++i) {
    void* p = nullptr;
    FP8NN_CUDA_CHECK(cudaMalloc(&p, per_buffer));
    FP8NN_CUDA_CHECK(cudaMemset(p, 0, per_buffer));
    buffers_.push_back(p);
  }
}

RotatingBuffers::~RotatingBuffers() {
  for (void* p : buffers_) cudaFree(p);
}

std::string device_description() {
  int device = 0;
  FP8NN_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  FP8NN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return fmt::format("{}, {} SMs, {} MB L2, sm_{}{}", prop.name, prop.multiProcessorCount,
                     prop.l2CacheSize / (1024 * 1024), prop.major, prop.minor);
}

}  // namespace fp8nn::bench
