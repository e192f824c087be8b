// functional::WeightCache and WeightReuseGuard: a weight's FP8 copies, reused only where the
// caller asked for reuse, and then only while the weight tensor is unchanged.

#include <fp8nn/linear_functional.h>

#include <c10/core/InferenceMode.h>
#include <c10/core/StorageImpl.h>
#include <c10/core/TensorImpl.h>
#include <c10/core/UndefinedTensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <atomic>
#include <cstdint>
#include <vector>

#ifdef FP8NN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>

#include "common/error.h"
#endif

namespace fp8nn {
namespace functional {
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
    FP8NN_CUDA_CHECK(cudaStreamGetCaptureInfo(stream, &status, &id));
    return status == cudaStreamCaptureStatusActive ? id : 0;
  }
#endif
  (void)t;
  return 0;
}

// The guard active on this thread: 0 for none, else the id of the outermost guard.
thread_local uint64_t active_guard = 0;
std::atomic<uint64_t> last_guard_id{0};

}  // namespace

// What identifies the tensor a copy was made of, and when it may be reused. The weak pointers
// keep the TensorImpl's and StorageImpl's addresses from being reused by other objects while the
// entry lives, so equal addresses mean the same tensor and the same storage (module->to() and
// torch::load give a parameter new storage); the version counter then says whether it was written
// since, through the counter.
struct WeightCache::Slot {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> impl;
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const void* data = nullptr;
  uint32_t version = 0;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::kCPU;
  std::vector<int64_t> sizes, strides;
  unsigned long long context = 0;
  bool inference = false;  // made under c10::InferenceMode: its tensors are inference tensors
  uint64_t guard = 0;      // the guard it was made in (0: none)
  QuantizedPair copies;

  Slot(const torch::Tensor& weight, QuantizedPair copies_)
      : impl(weight.getIntrusivePtr()),
        storage(weight.storage().getWeakStorageImpl()),
        data(weight.data_ptr()),
        version(weight._version()),
        dtype(weight.scalar_type()),
        device(weight.device()),
        sizes(weight.sizes().vec()),
        strides(weight.strides().vec()),
        context(capture_context(weight)),
        inference(c10::InferenceMode::is_enabled()),
        guard(active_guard),
        copies(std::move(copies_)) {}

  bool matches(const torch::Tensor& weight, WeightReuse reuse) const {
    const bool permitted = reuse == WeightReuse::UntilVersionChange ||
                           (guard != 0 && guard == active_guard);
    return permitted && (!inference || c10::InferenceMode::is_enabled()) && !impl.expired() &&
           impl._unsafe_get_target() == weight.unsafeGetTensorImpl() && !storage.expired() &&
           storage._unsafe_get_target() == weight.storage().unsafeGetStorageImpl() &&
           data == weight.data_ptr() && version == weight._version() &&
           dtype == weight.scalar_type() && device == weight.device() &&
           weight.sizes() == at::IntArrayRef(sizes) &&
           weight.strides() == at::IntArrayRef(strides) && context == capture_context(weight);
  }
};

}  // namespace functional

WeightReuseGuard::WeightReuseGuard() : outermost_(functional::active_guard == 0) {
  if (outermost_) functional::active_guard = ++functional::last_guard_id;
}

WeightReuseGuard::~WeightReuseGuard() {
  if (outermost_) functional::active_guard = 0;
}

bool WeightReuseGuard::is_active() { return functional::active_guard != 0; }

namespace functional {

WeightCache::WeightCache() = default;
WeightCache::~WeightCache() = default;

void WeightCache::clear() {
  const std::lock_guard<std::mutex> lock(mutex_);
  slot_.reset();
}

void WeightCache::set_reuse(WeightReuse reuse) {
  const std::lock_guard<std::mutex> lock(mutex_);
  reuse_ = reuse;
  if (reuse_ == WeightReuse::Never) slot_.reset();
}

WeightReuse WeightCache::reuse() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return reuse_;
}

void WeightCache::set_reuse_across_backward(bool reuse) {
  set_reuse(reuse ? WeightReuse::UntilVersionChange : WeightReuse::Never);
}

bool WeightCache::reuse_across_backward() const {
  return reuse() == WeightReuse::UntilVersionChange;
}

void WeightCache::set_verify(bool verify) {
  const std::lock_guard<std::mutex> lock(mutex_);
  verify_ = verify;
}

bool WeightCache::verify() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return verify_;
}

void WeightCache::weight_gradient_computed() {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (reuse_ != WeightReuse::UntilVersionChange) slot_.reset();
}

int64_t WeightCache::hits() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return hits_;
}

int64_t WeightCache::misses() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return misses_;
}

bool WeightCache::reuse_allowed() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return reuse_ == WeightReuse::UntilVersionChange || active_guard != 0;
}

std::optional<QuantizedPair> WeightCache::find(const torch::Tensor& weight) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (slot_ == nullptr || !slot_->matches(weight, reuse_)) {
    // Copies that do not serve this call are not kept for a later one: a call that may store
    // replaces them anyway, and one that may not would otherwise hold their memory for nothing.
    slot_.reset();
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  return slot_->copies;
}

void WeightCache::store(const torch::Tensor& weight, QuantizedPair copies) {
  if (!reuse_allowed()) return;
  auto slot = std::make_unique<Slot>(weight, std::move(copies));
  const std::lock_guard<std::mutex> lock(mutex_);
  slot_ = std::move(slot);
}

}  // namespace functional
}  // namespace fp8nn
