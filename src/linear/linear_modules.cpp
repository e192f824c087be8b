// LinearFP8, LinearFP8Global and LinearFP8Mixed: parameters and initialisation as
// torch::nn::Linear, forward through functional::linear_fp8 with each layer's recipe.

#include <fp8nn/linear.h>

#include <torch/nn/init.h>

#include <cmath>
#include <type_traits>
#include <vector>

namespace fp8nn {
namespace detail {
namespace {

// The module's name for messages, e.g. "fp8nn::LinearFP8Global".
template <typename Derived>
const char* layer_name_of();
template <>
const char* layer_name_of<LinearFP8GlobalImpl>() {
  return "fp8nn::LinearFP8Global";
}
template <>
const char* layer_name_of<LinearFP8MixedImpl>() {
  return "fp8nn::LinearFP8Mixed";
}
template <>
const char* layer_name_of<LinearFP8Impl>() {
  return "fp8nn::LinearFP8";
}

// The recipe option: LinearFP8's must be runnable (and group sizes belong to it); the presets
// have their own.
template <typename Derived>
void check_recipe_option(const LinearFP8Options& options, const char* layer) {
  if (std::is_same<Derived, LinearFP8Impl>::value) {
    check_recipe(options.recipe().value_or(Recipe::global()), layer);
    TORCH_CHECK_VALUE(options.group_size_in() == 0 && options.group_size_out() == 0, layer,
                      ": expected group sizes in the recipe (Recipe::mixed(G_in, G_out) or "
                      "OperandRecipe::group_size), got group_size_in=",
                      options.group_size_in(), ", group_size_out=", options.group_size_out());
  } else {
    TORCH_CHECK_VALUE(!options.recipe().has_value(), layer,
                      ": expected no recipe option (this "
                      "layer's recipe is fixed; fp8nn::LinearFP8 takes one), got ",
                      to_string(*options.recipe()));
  }
}

template <typename Derived>
void check_options(const LinearFP8Options& options, const char* layer) {
  TORCH_CHECK_VALUE(options.in_features() > 0, layer, ": expected in_features > 0, got ",
                    options.in_features());
  TORCH_CHECK_VALUE(options.out_features() > 0, layer, ": expected out_features > 0, got ",
                    options.out_features());
  TORCH_CHECK_VALUE(options.group_size_in() >= 0, layer,
                    ": expected group_size_in > 0 (or 0 for the default table), got ",
                    options.group_size_in());
  TORCH_CHECK_VALUE(options.group_size_out() >= 0, layer,
                    ": expected group_size_out > 0 (or 0 for the default table), got ",
                    options.group_size_out());
  check_recipe_option<Derived>(options, layer);
}

// Parameters may be replaced after construction (set_data, torch::load of another layer's
// checkpoint): forward checks them against the options, so a wrong shape is a clear error and
// not a silently different layer.
void check_parameters(const LinearFP8Options& options, const torch::Tensor& weight,
                      const torch::Tensor& bias, const char* layer) {
  const std::vector<int64_t> weight_sizes = {options.out_features(), options.in_features()};
  TORCH_CHECK_VALUE(
      weight.defined() && weight.sizes() == torch::IntArrayRef(weight_sizes), layer,
      ": expected weight of shape ", torch::IntArrayRef(weight_sizes),
      " (out_features=", options.out_features(), ", in_features=", options.in_features(), "), got ",
      weight.defined() ? weight.sizes() : torch::IntArrayRef{}, " (was the parameter replaced?)");
  TORCH_CHECK_VALUE(
      bias.defined() == options.bias(), layer, ": expected ", options.bias() ? "a bias" : "no bias",
      " (bias=", options.bias() ? "true" : "false", "), got ", bias.defined() ? "a bias" : "none");
  TORCH_CHECK_VALUE(!bias.defined() || bias.sizes() == torch::IntArrayRef({options.out_features()}),
                    layer, ": expected bias of shape [", options.out_features(), "], got ",
                    bias.defined() ? bias.sizes() : torch::IntArrayRef{},
                    " (was the parameter replaced?)");
}

}  // namespace

template <typename Derived>
LinearFP8ImplBase<Derived>::LinearFP8ImplBase(const LinearFP8Options& options_)
    : options(options_) {
  check_options<Derived>(options, layer_name_of<Derived>());
  reset();
}

template <typename Derived>
LinearFP8ImplBase<Derived>::LinearFP8ImplBase(const LinearFP8Options& options_,
                                              const torch::Tensor& weight_,
                                              const torch::Tensor& bias_)
    : options(options_) {
  const char* layer = layer_name_of<Derived>();
  check_options<Derived>(options, layer);
  TORCH_CHECK_VALUE(
      weight_.defined() &&
          weight_.sizes() == torch::IntArrayRef({options.out_features(), options.in_features()}),
      layer, ": expected a weight of shape [", options.out_features(), ", ", options.in_features(),
      "], got ", weight_.defined() ? weight_.sizes() : torch::IntArrayRef{});
  TORCH_CHECK_VALUE(bias_.defined() == options.bias(), layer, ": expected ",
                    options.bias() ? "a bias" : "no bias", ", got ",
                    bias_.defined() ? "a bias" : "none");
  TORCH_CHECK_VALUE(
      !bias_.defined() || bias_.sizes() == torch::IntArrayRef({options.out_features()}), layer,
      ": expected a bias of shape [", options.out_features(), "], got ",
      bias_.defined() ? bias_.sizes() : torch::IntArrayRef{});
  // The tensors themselves, keeping their requires_grad (a frozen layer stays frozen).
  weight = this->register_parameter("weight", weight_, weight_.requires_grad());
  bias = this->register_parameter("bias", bias_, bias_.defined() && bias_.requires_grad());
  weight_cache = options.cache_weight() ? std::make_shared<functional::WeightCache>() : nullptr;
  init_delayed_scaling();
}

template <typename Derived>
void LinearFP8ImplBase<Derived>::init_delayed_scaling() {
  // Only LinearFP8 takes a recipe option; the presets run current scaling.
  const auto delayed = options.recipe().value_or(Recipe::global()).delayed;
  if (!delayed.enabled()) {
    delayed_scaling = nullptr;
    return;
  }
  delayed_scaling =
      std::make_shared<functional::DelayedScalingState>(delayed.history_len, weight.device());
  // The buffers are the state's tensors (the same TensorImpls): torch::load and clone() write
  // them in place, and forward passes the state on.
  this->register_buffer("fp8_amax_history", delayed_scaling->amax_history);
  this->register_buffer("fp8_scale", delayed_scaling->scale);
  this->register_buffer("fp8_scaling_counts", delayed_scaling->counts);
}

template <typename Derived>
template <typename Convert>
void LinearFP8ImplBase<Derived>::to_keeping_state(const Convert& convert,
                                                  std::optional<torch::Device> device) {
  if (delayed_scaling == nullptr) {
    convert();
    return;
  }
  auto& state = *delayed_scaling;
  // detach() shares the old storage, which Module::to's set_data leaves alone.
  const auto history = state.amax_history.detach(), scale = state.scale.detach(),
             counts = state.counts.detach();
  convert();
  const auto target = device.value_or(history.device());
  state.amax_history.set_data(history.to(target));
  state.scale.set_data(scale.to(target));
  state.counts.set_data(counts.to(target));
  state.to(target);  // the scratch
}

template <typename Derived>
void LinearFP8ImplBase<Derived>::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  to_keeping_state([&] { torch::nn::Module::to(device, dtype, non_blocking); }, device);
}

template <typename Derived>
void LinearFP8ImplBase<Derived>::to(torch::Dtype dtype, bool non_blocking) {
  to_keeping_state([&] { torch::nn::Module::to(dtype, non_blocking); }, std::nullopt);
}

template <typename Derived>
void LinearFP8ImplBase<Derived>::to(torch::Device device, bool non_blocking) {
  to_keeping_state([&] { torch::nn::Module::to(device, non_blocking); }, device);
}

template <typename Derived>
void LinearFP8ImplBase<Derived>::load(torch::serialize::InputArchive& archive) {
  if (delayed_scaling == nullptr) {
    torch::nn::Module::load(archive);
    return;
  }
  for (auto& parameter : this->named_parameters(/*recurse=*/false)) {
    archive.read(parameter.key(), parameter.value());
  }
  // An archive saved with current scaling has no state: the layer then starts afresh.
  bool found = false;
  for (auto& buffer : this->named_buffers(/*recurse=*/false)) {
    found = archive.try_read(buffer.key(), buffer.value(), /*is_buffer=*/true) || found;
  }
  if (!found) delayed_scaling->reset();
  // A state read from the archive keeps its device; the layer's is the weight's.
  delayed_scaling->to(weight.device());
}

template <typename Derived>
void LinearFP8ImplBase<Derived>::reset() {
  weight = this->register_parameter("weight",
                                    torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = this->register_parameter("bias", torch::empty(options.out_features()));
  } else {
    bias = this->register_parameter("bias", {}, /*requires_grad=*/false);
  }
  reset_parameters();
  weight_cache = options.cache_weight() ? std::make_shared<functional::WeightCache>() : nullptr;
  if (numerics) numerics = std::make_shared<NumericsMonitor>(numerics->options());
  init_delayed_scaling();
}

template <typename Derived>
void LinearFP8ImplBase<Derived>::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

template <typename Derived>
torch::Tensor LinearFP8ImplBase<Derived>::forward(const torch::Tensor& input) {
  const char* layer = layer_name_of<Derived>();
  check_parameters(options, weight, bias, layer);
  return functional::linear_fp8(input, weight, bias, static_cast<const Derived*>(this)->recipe(),
                                functional::LinearFP8FuncOptions()
                                    .name(layer)
                                    .check_finite(options.check_finite())
                                    .weight_cache(weight_cache)
                                    .amax_group(options.amax_group())
                                    .numerics(numerics)
                                    .delayed_scaling(delayed_scaling));
}

template class LinearFP8ImplBase<LinearFP8Impl>;
template class LinearFP8ImplBase<LinearFP8GlobalImpl>;
template class LinearFP8ImplBase<LinearFP8MixedImpl>;

// options for `from`: `linear`'s features and bias, the rest from `extra` (which must agree).
LinearFP8Options options_from(const torch::nn::Linear& linear, const LinearFP8Options* extra,
                              const char* layer) {
  TORCH_CHECK_VALUE(!linear.is_empty(), layer,
                    "::from: expected a torch::nn::Linear, got an empty "
                    "holder");
  const auto& lin = linear->options;
  if (extra == nullptr)
    return LinearFP8Options(lin.in_features(), lin.out_features()).bias(lin.bias());
  TORCH_CHECK_VALUE(extra->in_features() == lin.in_features() &&
                        extra->out_features() == lin.out_features() && extra->bias() == lin.bias(),
                    layer,
                    "::from: expected options matching the Linear (in_features=", lin.in_features(),
                    ", out_features=", lin.out_features(), ", bias=", lin.bias(),
                    "), got in_features=", extra->in_features(),
                    ", out_features=", extra->out_features(), ", bias=", extra->bias());
  return *extra;
}

// The holders' `from`.
template <typename Holder, typename Impl>
Holder LinearFP8HolderBase<Holder, Impl>::from(const torch::nn::Linear& linear) {
  const auto options = options_from(linear, nullptr, layer_name_of<Impl>());
  return Holder(options, linear->weight, linear->bias);
}

template <typename Holder, typename Impl>
Holder LinearFP8HolderBase<Holder, Impl>::from(const torch::nn::Linear& linear,
                                               const LinearFP8Options& options) {
  options_from(linear, &options, layer_name_of<Impl>());
  return Holder(options, linear->weight, linear->bias);
}

template class LinearFP8HolderBase<LinearFP8, LinearFP8Impl>;
template class LinearFP8HolderBase<LinearFP8Global, LinearFP8GlobalImpl>;
template class LinearFP8HolderBase<LinearFP8Mixed, LinearFP8MixedImpl>;

}  // namespace detail

Recipe LinearFP8Impl::recipe() const {
  return options.recipe()
      .value_or(Recipe::global())
      .resolved(options.in_features(), options.out_features());
}

void LinearFP8Impl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fp8nn::LinearFP8(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias()
         << ", recipe=" << recipe() << ")";
}

Recipe LinearFP8GlobalImpl::recipe() const { return Recipe::global(); }

void LinearFP8GlobalImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fp8nn::LinearFP8Global(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias() << ")";
}

int64_t LinearFP8MixedImpl::group_size_in() const {
  return options.group_size_in() > 0 ? options.group_size_in()
                                     : default_group_size(options.in_features());
}

int64_t LinearFP8MixedImpl::group_size_out() const {
  return options.group_size_out() > 0 ? options.group_size_out()
                                      : default_group_size(options.out_features());
}

Recipe LinearFP8MixedImpl::recipe() const {
  return Recipe::mixed(group_size_in(), group_size_out());
}

void LinearFP8MixedImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fp8nn::LinearFP8Mixed(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias()
         << ", group_size_in=" << group_size_in() << ", group_size_out=" << group_size_out() << ")";
}

}  // namespace fp8nn
