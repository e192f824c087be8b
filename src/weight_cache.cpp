// functional::WeightCache: a weight's FP8 copies, reused while the weight tensor is unchanged.

#include <fp8nn/linear_functional.h>

#include <c10/core/TensorImpl.h>
#include <c10/core/UndefinedTensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <vector>

#ifdef FP8NN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#endif

namespace fp8nn::functional {
namespace {

// The stream-capture context of work queued now for `t`'s device: 0 outside a capture, else the
// id of the capture in progress on the current stream. Copies are reused only within one context,
// since a copy written inside a graph is valid only at its replays and a graph must not read a copy
// that a later eager update would leave stale.
unsigned long long capture_context(const torch::Tensor& t) {
#ifdef FP8NN_WITH_CUDA
  if (t.is_cuda()) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    unsigned long long id = 0;
    const auto stream = at::cuda::getCurrentCUDAStream(t.device().index()).stream();
    const cudaError_t error = cudaStreamGetCaptureInfo(stream, &status, &id);
    TORCH_CHECK(error == cudaSuccess,
                "fp8nn::WeightCache: cudaStreamGetCaptureInfo failed: ", cudaGetErrorString(error));
    return status == cudaStreamCaptureStatusActive ? id : 0;
  }
#endif
  (void)t;
  return 0;
}

}  // namespace

// What identifies the tensor a copy was made of. The weak pointer keeps the TensorImpl's address
// from being reused by another tensor while the entry lives, so equal addresses mean the same
// tensor; the version counter then says whether it was written since.
struct WeightCache::Slot {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> impl;
  const void* data = nullptr;
  uint32_t version = 0;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::kCPU;
  std::vector<int64_t> sizes, strides;
  unsigned long long context = 0;
  QuantizedPair copies;

  Slot(const torch::Tensor& weight, QuantizedPair copies_)
      : impl(weight.getIntrusivePtr()),
        data(weight.data_ptr()),
        version(weight._version()),
        dtype(weight.scalar_type()),
        device(weight.device()),
        sizes(weight.sizes().vec()),
        strides(weight.strides().vec()),
        context(capture_context(weight)),
        copies(std::move(copies_)) {}

  bool matches(const torch::Tensor& weight) const {
    return !impl.expired() && impl._unsafe_get_target() == weight.unsafeGetTensorImpl() &&
           data == weight.data_ptr() && version == weight._version() &&
           dtype == weight.scalar_type() && device == weight.device() &&
           weight.sizes() == at::IntArrayRef(sizes) &&
           weight.strides() == at::IntArrayRef(strides) && context == capture_context(weight);
  }
};

WeightCache::WeightCache() = default;
WeightCache::~WeightCache() = default;

void WeightCache::clear() {
  const std::lock_guard<std::mutex> lock(mutex_);
  slot_.reset();
}

void WeightCache::set_reuse_across_backward(bool reuse) {
  const std::lock_guard<std::mutex> lock(mutex_);
  reuse_across_backward_ = reuse;
}

bool WeightCache::reuse_across_backward() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return reuse_across_backward_;
}

void WeightCache::weight_gradient_computed() {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!reuse_across_backward_) slot_.reset();
}

int64_t WeightCache::hits() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return hits_;
}

int64_t WeightCache::misses() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return misses_;
}

std::optional<QuantizedPair> WeightCache::find(const torch::Tensor& weight) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (slot_ == nullptr || !slot_->matches(weight)) {
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  return slot_->copies;
}

void WeightCache::store(const torch::Tensor& weight, QuantizedPair copies) {
  auto slot = std::make_unique<Slot>(weight, std::move(copies));
  const std::lock_guard<std::mutex> lock(mutex_);
  slot_ = std::move(slot);
}

}  // namespace fp8nn::functional
