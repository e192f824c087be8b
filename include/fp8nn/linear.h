#pragma once
// The FP8 linear layers as torch::nn modules, drop-in for torch::nn::Linear:
//
//   fp8nn::LinearFP8 l(fp8nn::LinearFP8Options(1024, 4096).recipe(fp8nn::Recipe::mixed(128)));
//   fp8nn::LinearFP8Global g(fp8nn::LinearFP8Options(1024, 4096).bias(true));
//   fp8nn::LinearFP8Mixed m(fp8nn::LinearFP8Options(1024, 4096).group_size_in(128));
//   torch::Tensor y = g(x);  // x: [..., 1024] fp32/fp16/bf16 -> y: [..., 4096], x's dtype
//
// LinearFP8 runs any Recipe; LinearFP8Global and LinearFP8Mixed are the same engine with a
// preset (their names, options, printing and checkpoints are those of earlier versions).
//
// weight [out, in] and bias [out] are ordinary high-precision parameters (fp32, or bf16/fp16
// after ->to(dtype)); FP8 copies exist only inside forward/backward.

#include <fp8nn/linear_functional.h>
#include <fp8nn/recipe.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <ostream>

namespace fp8nn {

/// Options of LinearFP8, LinearFP8Global and LinearFP8Mixed.
struct LinearFP8Options {
  LinearFP8Options(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  /// Size of each input sample (> 0).
  TORCH_ARG(int64_t, in_features);
  /// Size of each output sample (> 0).
  TORCH_ARG(int64_t, out_features);
  /// Learn an additive bias. Default: true.
  TORCH_ARG(bool, bias) = true;
  /// LinearFP8 only: the recipe (default Recipe::global()). LinearFP8Global and LinearFP8Mixed
  /// have theirs fixed and refuse one here.
  TORCH_ARG(std::optional<Recipe>, recipe);
  /// Mixed only: elements of an input row sharing one scale; 0 = default_group_size(in_features).
  TORCH_ARG(int64_t, group_size_in) = 0;
  /// Mixed only: elements of an output-gradient row sharing one scale; 0 =
  /// default_group_size(out_features).
  TORCH_ARG(int64_t, group_size_out) = 0;
  /// Raise an error naming the layer on NaN/Inf in input, weight or output gradient (a host
  /// synchronisation per check; for debugging).
  TORCH_ARG(bool, check_finite) = false;
  /// Give the layer a functional::WeightCache, which reuses the weight's FP8 copies between calls
  /// only where reuse is asked for (a WeightReuseGuard, or weight_cache->set_reuse(...)); by
  /// default every forward quantizes the weight. Reused copies cost one byte per weight element,
  /// twice, on the weight's device. Default: true.
  TORCH_ARG(bool, cache_weight) = true;
  /// Data parallelism: all-reduce the layer's per-tensor amaxes (MAX) over this c10d process
  /// group so that every rank uses one scale (see functional::LinearFP8FuncOptions::amax_group).
  /// Default: none, each process scales by its own amaxes.
  TORCH_ARG(ProcessGroupRef, amax_group);
};

namespace detail {

/// What the layers share: options, parameters, initialisation (that of torch::nn::Linear), and
/// forward through functional::linear_fp8 with Derived::recipe().
template <typename Derived>
class LinearFP8ImplBase : public torch::nn::Cloneable<Derived> {
 public:
  explicit LinearFP8ImplBase(const LinearFP8Options& options);
  LinearFP8ImplBase(int64_t in_features, int64_t out_features)
      : LinearFP8ImplBase(LinearFP8Options(in_features, out_features)) {}
  /// Adopts existing parameter tensors (shared, not copied): see LinearFP8Global::from.
  LinearFP8ImplBase(const LinearFP8Options& options, const torch::Tensor& weight,
                    const torch::Tensor& bias);

  /// Registers fresh `weight` and `bias` and initialises them.
  void reset() override;
  /// kaiming_uniform_(weight, a = sqrt(5)); bias uniform in +-1/sqrt(in_features).
  void reset_parameters();

  /// The options used to configure this module.
  LinearFP8Options options;
  /// The learned weight, [out_features, in_features].
  torch::Tensor weight;
  /// The learned bias, [out_features]; undefined when options.bias() is false.
  torch::Tensor bias;
  /// The weight's FP8 copies between calls, where reuse is asked for (nullptr when
  /// options.cache_weight() is false). Not a parameter or buffer: save/load and optimizers never
  /// see it; reset() and clone() start with a new, empty one (policy WeightReuse::Never).
  std::shared_ptr<functional::WeightCache> weight_cache;
  /// The numerics monitor of this layer (numerics.h), or nullptr (the default: nothing counted).
  /// Set it directly or through fp8nn::enable_numerics(model). Not a parameter or buffer;
  /// clone() and reset() give the layer a new, empty monitor with the same options.
  std::shared_ptr<NumericsMonitor> numerics;
  /// With a recipe that asks for delayed scaling (Recipe::global_delayed()), the layer's state,
  /// on the weight's device; its tensors are the buffers fp8_amax_history, fp8_scale and
  /// fp8_scaling_counts, which torch::save keeps and to(dtype) leaves in their own dtypes. A
  /// checkpoint without them (saved with current scaling) loads with fresh state. Else nullptr.
  std::shared_ptr<functional::DelayedScalingState> delayed_scaling;

  /// y = x W^T + b through functional::linear_fp8 with Derived::recipe().
  torch::Tensor forward(const torch::Tensor& input);

  /// As torch::nn::Module's, keeping the delayed-scaling buffers in their dtypes.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;
  /// As torch::nn::Module's; the delayed-scaling buffers are read when the archive has them.
  void load(torch::serialize::InputArchive& archive) override;

 private:
  // Makes delayed_scaling (and registers its buffers) when the recipe asks for it.
  void init_delayed_scaling();
  // Runs Module::to through `convert`, then gives the delayed-scaling tensors their old values,
  // on `device` (or where they were).
  template <typename Convert>
  void to_keeping_state(const Convert& convert, std::optional<torch::Device> device);
};

/// The holders: TORCH_MODULE(X) written out, plus `from`, which TORCH_MODULE cannot add.
template <typename Holder, typename Impl>
class LinearFP8HolderBase : public torch::nn::ModuleHolder<Impl> {
 public:
  using torch::nn::ModuleHolder<Impl>::ModuleHolder;

  /// An FP8 layer computing what `linear` computes, sharing its weight and bias tensors (an
  /// optimizer step on one is seen by the other).
  static Holder from(const torch::nn::Linear& linear);
  /// The same with more options (recipe, group sizes, check_finite, ...); their features and bias
  /// must match `linear`'s.
  static Holder from(const torch::nn::Linear& linear, const LinearFP8Options& options);
};

}  // namespace detail

/// Any recipe (options.recipe(), default Recipe::global()). Construction refuses
/// (c10::ValueError) a recipe that check_recipe refuses, and group_size_in/out (the recipe holds
/// the group sizes).
class LinearFP8Impl : public detail::LinearFP8ImplBase<LinearFP8Impl> {
 public:
  using LinearFP8ImplBase::LinearFP8ImplBase;

  /// fp8nn::LinearFP8(in_features=…, out_features=…, bias=…, recipe=…)
  void pretty_print(std::ostream& stream) const override;
  /// The recipe in use, group sizes of 0 resolved from the default table.
  Recipe recipe() const;
};

/// Global recipe: per-tensor E4M3 input and weight, per-tensor E5M2 output gradient; forward,
/// input gradient and weight gradient are all FP8 products.
class LinearFP8GlobalImpl : public detail::LinearFP8ImplBase<LinearFP8GlobalImpl> {
 public:
  using LinearFP8ImplBase::LinearFP8ImplBase;

  /// fp8nn::LinearFP8Global(in_features=…, out_features=…, bias=…)
  void pretty_print(std::ostream& stream) const override;
  /// Recipe::global().
  Recipe recipe() const;
};

/// Mixed recipe: E4M3 input with a scale per group of group_size_in elements of a row, per-tensor
/// E4M3 weight, E5M2 output gradient per group of group_size_out; weight gradient in high
/// precision.
class LinearFP8MixedImpl : public detail::LinearFP8ImplBase<LinearFP8MixedImpl> {
 public:
  using LinearFP8ImplBase::LinearFP8ImplBase;

  /// fp8nn::LinearFP8Mixed(in_features=…, out_features=…, bias=…, group_size_in=…,
  /// group_size_out=…)
  void pretty_print(std::ostream& stream) const override;

  /// The group sizes in use: the options', or the table's (default_group_size) where they are 0.
  int64_t group_size_in() const;
  int64_t group_size_out() const;
  /// Recipe::mixed(group_size_in(), group_size_out()).
  Recipe recipe() const;
};

/// Holder of LinearFP8Impl (shared-pointer semantics, like torch::nn::Linear).
class LinearFP8 : public detail::LinearFP8HolderBase<LinearFP8, LinearFP8Impl> {
 public:
  using LinearFP8HolderBase::LinearFP8HolderBase;
  using Impl = LinearFP8Impl;
};

/// Holder of LinearFP8GlobalImpl.
class LinearFP8Global : public detail::LinearFP8HolderBase<LinearFP8Global, LinearFP8GlobalImpl> {
 public:
  using LinearFP8HolderBase::LinearFP8HolderBase;
  using Impl = LinearFP8GlobalImpl;
};

/// Holder of LinearFP8MixedImpl.
class LinearFP8Mixed : public detail::LinearFP8HolderBase<LinearFP8Mixed, LinearFP8MixedImpl> {
 public:
  using LinearFP8HolderBase::LinearFP8HolderBase;
  using Impl = LinearFP8MixedImpl;
};

}  // namespace fp8nn
