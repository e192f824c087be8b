#pragma once
// The FP8 linear layers as functions (DESIGN.md §1), with their gradients through
// torch::autograd::Function. The modules in linear.h are a few lines around these.
//
//   y[..., out] = x[..., in] W[out, in]^T + b[out]
// x: fp32/fp16/bf16 with at least 2 dimensions; W and b: fp32/fp16/bf16 (high-precision master
// copies), each dtype independent of the others (both operands become FP8 anyway). y comes back in
// x's dtype; gradients in the dtype of the tensor they belong to.
// Nothing here synchronises with the host unless check_finite is on.

#include <c10/util/intrusive_ptr.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <fp8nn/quantize.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace c10d {
class ProcessGroup;
}  // namespace c10d

namespace fp8nn {

/// A shared reference to a c10d::ProcessGroup, or none; converts implicitly from
/// c10::intrusive_ptr<c10d::ProcessGroup>. Options hold one without including c10d's headers,
/// which define logging macros (CHECK, LOG, ...) that clash with test frameworks.
class ProcessGroupRef {
 public:
  ProcessGroupRef();
  ProcessGroupRef(c10::intrusive_ptr<c10d::ProcessGroup> group);  // NOLINT: implicit on purpose
  ProcessGroupRef(const ProcessGroupRef& other);
  ProcessGroupRef(ProcessGroupRef&& other) noexcept;
  ProcessGroupRef& operator=(const ProcessGroupRef& other);
  ProcessGroupRef& operator=(ProcessGroupRef&& other) noexcept;
  ~ProcessGroupRef();
  /// Whether a group is held.
  explicit operator bool() const;
  /// The group (null when none).
  c10::intrusive_ptr<c10d::ProcessGroup> get() const;

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
};

/// The research layer's group size table: G(f) = min(4096, max(64, next_pow2(f))), f > 0.
int64_t default_group_size(int64_t features);

namespace functional {

/// A weight's per-tensor E4M3 copies (row-major and transposed, one scale), kept between calls
/// and reused while the weight is known to be unchanged. An entry is reused only for the same live
/// tensor (same TensorImpl, data pointer, version counter, dtype, shape and strides) and, on CUDA,
/// from the same stream-capture context (eager calls never see copies written inside a CUDA graph,
/// and a graph never captures a read of a copy made outside it).
///
/// The version counter alone cannot see every optimizer: libtorch's torch::optim::SGD updates
/// parameters through `p.data()`, which writes the storage without bumping the parameter's
/// version. So by default a backward pass that computes the weight's gradient also drops the
/// copies: forward calls with no weight gradient in between (inference, evaluation, several
/// forwards before one backward) quantize the weight once, whatever the optimizer. For gradient
/// accumulation, set_reuse_across_backward(true) keeps the copies across backward passes too, until
/// the version changes: only correct when every update of the weight goes through its version
/// counter (torch::optim::Adam and AdamW do; SGD does not). Writes through `tensor.data()` or raw
/// pointers are never seen: call clear() after them. Thread-safe.
class WeightCache {
 public:
  WeightCache();
  ~WeightCache();
  WeightCache(const WeightCache&) = delete;
  WeightCache& operator=(const WeightCache&) = delete;

  /// Drops the cached copies (their memory returns to the allocator once no graph holds them).
  void clear();
  /// Keep the copies across backward passes (see above); default false.
  void set_reuse_across_backward(bool reuse);
  bool reuse_across_backward() const;
  /// Called by the backward pass once it has computed the weight's gradient: drops the copies
  /// unless reuse_across_backward().
  void weight_gradient_computed();
  /// Lookups that found the copies valid / that did not (the call then quantized the weight).
  int64_t hits() const;
  int64_t misses() const;

  /// For the linear functions: the cached E4M3 copies of `weight` if still valid (a hit), else
  /// nothing (a miss).
  std::optional<QuantizedPair> find(const torch::Tensor& weight) const;
  /// Remembers `copies`, just made of `weight`, replacing what was there.
  void store(const torch::Tensor& weight, QuantizedPair copies);

 private:
  struct Slot;
  mutable std::mutex mutex_;
  std::unique_ptr<Slot> slot_;
  mutable int64_t hits_ = 0, misses_ = 0;
  bool reuse_across_backward_ = false;
};

/// Options shared by linear_fp8_global and linear_fp8_mixed. New knobs (e.g. fast accumulation)
/// join here, so existing calls keep compiling.
struct LinearFP8FuncOptions {
  /// Who is calling, for error messages (e.g. "fp8nn::LinearFP8Global"); empty: the function name.
  TORCH_ARG(std::string, name);
  /// Raise a c10::ValueError naming the layer when x or W (forward) or the output gradient
  /// (backward) holds NaN or Inf, instead of letting it propagate. Synchronises with the host
  /// at each check: a debugging aid, off by default.
  TORCH_ARG(bool, check_finite) = false;
  /// Where to keep the weight's FP8 copies between calls (see WeightCache); nullptr: quantize the
  /// weight on every call.
  TORCH_ARG(std::shared_ptr<WeightCache>, weight_cache) = nullptr;
  /// Data parallelism: the per-tensor amaxes (Global: x, W and the output gradient; Mixed: W) are
  /// all-reduced with MAX over this c10d process group before they become scales, so every rank
  /// quantizes with the same scale. Every rank of the group must then run the layer (forward and
  /// backward) in the same order. On CUDA (NCCL) the stream waits for the reduction, the host
  /// does not. Null (the default): each process uses its own amaxes.
  TORCH_ARG(ProcessGroupRef, amax_group);
};

/// Global recipe: x and W per-tensor E4M3, dy per-tensor E5M2; y, dx = dy W and dW = dy^T x are
/// all FP8 products of the quantized copies (only those are kept for backward). bias may be
/// undefined; its gradient is dy summed over rows in fp32.
torch::Tensor linear_fp8_global(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias = {},
                                const LinearFP8FuncOptions& options = {});

/// Mixed recipe: x E4M3 with one scale per G_in consecutive elements of a row, W per-tensor
/// E4M3; dx = dy W with dy E5M2 per G_out elements of a row; dW = dy^T x in high precision (x's
/// dtype, from the unquantized x and dy). G_in, G_out > 0 (see default_group_size).
torch::Tensor linear_fp8_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, int64_t G_in, int64_t G_out,
                               const LinearFP8FuncOptions& options = {});

}  // namespace functional
}  // namespace fp8nn
