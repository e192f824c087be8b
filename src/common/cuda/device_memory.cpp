#include "common/cuda/device_memory.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/EmptyTensor.h>

#include <map>
#include <mutex>
#include <utility>

#include "common/error.h"

namespace fp8nn::cuda {

at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype, c10::Device device) {
  return at::Tensor(at::detail::empty_cuda(sizes, dtype, device, c10::nullopt));
}

at::Tensor empty_bytes(int64_t bytes, c10::Device device) {
  return empty({bytes}, at::kByte, device);
}

at::Tensor carve(const at::Tensor& block, int64_t offset, at::IntArrayRef sizes,
                 at::ScalarType dtype) {
  const auto meta = c10::scalarTypeToTypeMeta(dtype);
  int64_t numel = 1;
  for (const int64_t size : sizes) numel *= size;
  TORCH_INTERNAL_ASSERT(offset % kCarveAlignment == 0 && offset >= 0 &&
                            offset + numel * static_cast<int64_t>(meta.itemsize()) <=
                                static_cast<int64_t>(block.storage().nbytes()),
                        "fp8nn: carve of ", numel, " elements at byte ", offset,
                        " out of a block of ", block.storage().nbytes(), " bytes");
  auto view = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(block.storage()),
                                                       block.key_set(), meta);
  view.unsafeGetTensorImpl()->set_sizes_contiguous(sizes);
  view.unsafeGetTensorImpl()->set_storage_offset(offset / static_cast<int64_t>(meta.itemsize()));
  return view;
}

at::Tensor stream_workspace(int64_t bytes) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  const c10::Device device(c10::kCUDA, stream.device_index());
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  FP8NN_CUDA_CHECK(cudaStreamIsCapturing(stream.stream(), &capture));
  if (capture != cudaStreamCaptureStatusNone)
    return empty_bytes(std::max<int64_t>(bytes, 1), device);
  // Never destroyed: the blocks may outlive the CUDA context at exit.
  static auto* blocks = new std::map<std::pair<c10::DeviceIndex, cudaStream_t>, at::Tensor>();
  static std::mutex mutex;
  const std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& block = (*blocks)[{stream.device_index(), stream.stream()}];
  if (!block.defined() || block.numel() < bytes) {
    // Grown in whole MiB, so that sizes that creep up do not reallocate on every call. The old
    // block goes back to the caching allocator, whose reuse on this stream follows stream order.
    constexpr int64_t kGrain = int64_t{1} << 20;
    block = at::Tensor();
    block = empty_bytes((bytes + kGrain - 1) / kGrain * kGrain, device);
  }
  return block;
}

}  // namespace fp8nn::cuda
