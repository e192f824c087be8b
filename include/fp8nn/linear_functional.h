#pragma once
// The FP8 linear layers as functions, with their gradients through torch::autograd::Function:
// linear_fp8 runs any Recipe (recipe.h); linear_fp8_global and linear_fp8_mixed are its presets.
// The modules in linear.h are a few lines around these.
//
//   y[..., out] = x[..., in] W[out, in]^T + b[out]
// x: fp32/fp16/bf16 with at least 2 dimensions; W and b: fp32/fp16/bf16 (high-precision master
// copies), each dtype independent of the others (both operands become FP8 anyway). y comes back in
// x's dtype; gradients in the dtype of the tensor they belong to.
// Nothing here synchronises with the host unless check_finite is on.

#include <c10/macros/Macros.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <fp8nn/numerics.h>
#include <fp8nn/quantize.h>
#include <fp8nn/recipe.h>

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

/// Asks the FP8 layers to quantize each weight once and reuse the copies, on this thread, while
/// the guard lives: an evaluation loop, or the micro-batches of one gradient-accumulation step.
/// The promise it stands for: no weight is written while it lives (the optimizer's step comes
/// after it ends). Writes through the version counter are still seen (the weight is quantized
/// again); writes through tensor.data() are not, so WeightCache::set_verify checks the promise.
/// Copies made inside a guard are never reused after it ends (their memory is released at the
/// layer's next call or clear()). A guard inside another joins the outer one.
///
///   { fp8nn::WeightReuseGuard reuse; for (auto& mb : micro_batches) loss(model(mb)).backward(); }
///   optimizer.step();
class WeightReuseGuard {
 public:
  WeightReuseGuard();
  ~WeightReuseGuard();
  C10_DISABLE_COPY_AND_ASSIGN(WeightReuseGuard);
  /// Whether a guard is active on this thread.
  static bool is_active();

 private:
  bool outermost_;
};

namespace functional {

/// When a WeightCache may hand a forward the weight's FP8 copies made by an earlier call.
enum class WeightReuse {
  /// Never (the default): every forward quantizes the weight and nothing is kept between calls,
  /// so no write to the weight, however it is made, can leave a stale copy. Reuse is then asked
  /// for where it is safe, with a WeightReuseGuard.
  Never,
  /// While the weight is the same tensor with the same version counter (and storage, data
  /// pointer, dtype, shape, strides, capture context). An opt-in: correct only when every write
  /// to the weight bumps its version counter, as in-place ops and torch::optim::Adam, AdamW,
  /// RMSprop, Adagrad and LBFGS do. torch::optim::SGD (it writes through p.data()), any other
  /// write through tensor.data() or raw pointers, and CUDA-graph replays do not: after them call
  /// clear(), or turn on set_verify(true) to have each reuse checked.
  UntilVersionChange,
};

/// A weight's per-tensor E4M3 copies (row-major and transposed, one scale), kept between calls
/// when reuse is asked for: inside a WeightReuseGuard (any policy), or always with
/// WeightReuse::UntilVersionChange. An entry is only ever reused for the same live tensor (same
/// TensorImpl, storage, data pointer, version counter, dtype, shape and strides), from the same
/// stream-capture context (eager calls never see copies written inside a CUDA graph, and a graph
/// never captures a read of a copy made outside it), and copies made under c10::InferenceMode
/// only under InferenceMode (autograd never receives an inference tensor). Thread-safe.
class WeightCache {
 public:
  WeightCache();
  ~WeightCache();
  C10_DISABLE_COPY_AND_ASSIGN(WeightCache);

  /// Drops the cached copies (their memory returns to the allocator once no graph holds them).
  void clear();
  /// When copies may be reused outside a WeightReuseGuard (see WeightReuse); default Never.
  void set_reuse(WeightReuse reuse);
  WeightReuse reuse() const;
  /// The same as set_reuse(reuse ? UntilVersionChange : Never).
  void set_reuse_across_backward(bool reuse);
  bool reuse_across_backward() const;
  /// Checks every reuse: the weight is quantized anew and compared with the cached copies bit for
  /// bit (one host synchronisation per reuse: for debugging); a difference is a c10::Error naming
  /// the layer (the weight was written without bumping its version counter). Default false.
  void set_verify(bool verify);
  bool verify() const;
  /// Drops the copies unless reuse() is UntilVersionChange (what a backward pass used to signal).
  void weight_gradient_computed();
  /// Lookups that found the copies valid / that did not (the call then quantized the weight).
  /// Calls that may not reuse (policy Never, no guard) make no lookup.
  int64_t hits() const;
  int64_t misses() const;

  /// For the linear functions: the cached E4M3 copies of `weight` if they may be reused now (a
  /// hit), else nothing (a miss, which also drops copies that can no longer be reused).
  std::optional<QuantizedPair> find(const torch::Tensor& weight) const;
  /// Remembers `copies`, just made of `weight`, replacing what was there, when reuse is allowed
  /// now (a guard is active on this thread, or reuse() is UntilVersionChange); else does nothing.
  void store(const torch::Tensor& weight, QuantizedPair copies);
  /// Whether a call made now on this thread may reuse copies (find/store would act).
  bool reuse_allowed() const;

 private:
  struct Slot;
  mutable std::mutex mutex_;
  mutable std::unique_ptr<Slot> slot_;
  mutable int64_t hits_ = 0, misses_ = 0;
  WeightReuse reuse_ = WeightReuse::Never;
  bool verify_ = false;
};

/// The delayed-scaling state of one layer (Recipe::delayed): for its two delayed operands, row 0
/// x and row 1 the output gradient, the recorded amaxes and the next scale. A recipe with delayed
/// scaling needs one (LinearFP8 makes its own and registers the tensors as buffers, so
/// torch::save keeps them). All updates run on the device, inside the cast kernels, so they also
/// happen at CUDA-graph replays. Use one state per layer, on the layer's device.
class DelayedScalingState {
 public:
  /// Fresh state on `device`: nothing recorded, scales 1.
  explicit DelayedScalingState(int64_t history_len, torch::Device device = torch::kCPU);
  C10_DISABLE_COPY_AND_ASSIGN(DelayedScalingState);

  /// float [2, history_len]: the recorded amaxes; operand i's next one goes to column
  /// counts[i][0] % history_len.
  torch::Tensor amax_history;
  /// float [2]: the scale each operand's next call casts with (after its first call, which takes
  /// current scaling).
  torch::Tensor scale;
  /// int64 [2, 3]: per operand, amaxes recorded, values saturated (|v * scale| rounded beyond the
  /// format's largest value, and so clamped to it; Inf included), non-finite amaxes (NaN or Inf
  /// in the tensor: counted, not recorded, the scale kept).
  torch::Tensor counts;

  int64_t history_len() const { return amax_history.size(1); }
  /// Moves the tensors to `device` (their dtypes never change). Not while a call is in flight.
  void to(torch::Device device);
  /// Forgets everything recorded: history 0, scales 1, counts 0 (the next calls start afresh).
  void reset();

  /// For the engine: whether operand i has made its first call (which takes current scaling).
  /// Known on the host from the calls it made; after the tensors were replaced (torch::load,
  /// clone(), to()) read once from counts, a host synchronisation (so not inside a CUDA-graph
  /// capture: run a step before capturing, as graphs need anyway).
  bool started(int operand);
  void set_started(int operand) { started_[operand] = true; }
  /// int32 [2, 2] on the state's device, zero between calls: the cast kernels' per-call scratch.
  torch::Tensor scratch();

 private:
  torch::Tensor scratch_;
  bool started_[2] = {false, false};
  const void* known_counts_ = nullptr;  // counts' storage when started_ was last right
};

/// Options of linear_fp8, linear_fp8_global and linear_fp8_mixed (what is not the recipe).
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
  /// Data parallelism: the amaxes of the recipe's per-tensor operands (Global: x, W and the
  /// output gradient; Mixed: W) are all-reduced with MAX over this c10d process group before they
  /// become scales, so every rank quantizes with the same scale. Every rank of the group must then
  /// run the layer (forward and backward) in the same order. On CUDA (NCCL) the stream waits for
  /// the reduction, the host does not. Null (the default): each process uses its own amaxes.
  TORCH_ARG(ProcessGroupRef, amax_group);
  /// Where the quantizations of x, W and dy add their figures (numerics.h); nullptr: nothing is
  /// counted and the kernels run without counters.
  TORCH_ARG(std::shared_ptr<NumericsMonitor>, numerics) = nullptr;
  /// The layer's delayed-scaling state: required by a recipe with delayed scaling (on x's device,
  /// history_len equal to the recipe's), ignored otherwise.
  TORCH_ARG(std::shared_ptr<DelayedScalingState>, delayed_scaling) = nullptr;
};

/// y = x W^T + b with the products and quantizations `recipe` asks for (see Recipe). Only what
/// the backward products need is kept for backward (FP8 copies for FP8 products). bias may be
/// undefined; its gradient is dy summed over rows in fp32. A recipe check_recipe refuses is a
/// c10::ValueError; group sizes of 0 take default_group_size of the row (x: in_features, dy:
/// out_features).
torch::Tensor linear_fp8(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const Recipe& recipe,
                         const LinearFP8FuncOptions& options = {});

/// linear_fp8 with Recipe::global(): x and W per-tensor E4M3, dy per-tensor E5M2; y, dx = dy W and
/// dW = dy^T x are all FP8 products of the quantized copies (only those are kept for backward).
/// bias may be undefined; its gradient is dy summed over rows in fp32.
torch::Tensor linear_fp8_global(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias = {},
                                const LinearFP8FuncOptions& options = {});

/// linear_fp8 with Recipe::mixed(G_in, G_out): x E4M3 with one scale per G_in consecutive elements
/// of a row, W per-tensor E4M3; dx = dy W with dy E5M2 per G_out elements of a row; dW = dy^T x in
/// high precision (x's dtype, from the unquantized x and dy). G_in, G_out > 0 (see
/// default_group_size).
torch::Tensor linear_fp8_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, int64_t G_in, int64_t G_out,
                               const LinearFP8FuncOptions& options = {});

}  // namespace functional
}  // namespace fp8nn
