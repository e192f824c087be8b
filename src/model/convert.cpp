// convert(): rebuilds Sequential/ModuleList containers with FP8 layers in place of accepted
// Linear layers; everything else is shared with the original.
//
// libtorch cannot store a Sequential inside a Sequential (its forward is a template), so nesting
// happens through ModuleList: a ModuleList may hold Linear, Sequential and ModuleList children.
// Only those exact types are rebuilt; subclasses (custom modules) are kept as they are.

#include <fp8nn/convert.h>

#include <memory>
#include <typeinfo>

namespace fp8nn {
namespace {

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

template <typename Impl>
std::shared_ptr<Impl> exactly(const std::shared_ptr<torch::nn::Module>& module) {
  return module && typeid(*module) == typeid(Impl) ? std::static_pointer_cast<Impl>(module)
                                                   : nullptr;
}

torch::nn::Sequential convert_sequential(const torch::nn::Sequential& model, const Recipe& recipe,
                                         const ConvertFilter& filter, const std::string& prefix);
torch::nn::ModuleList convert_list(const torch::nn::ModuleList& model, const Recipe& recipe,
                                   const ConvertFilter& filter, const std::string& prefix);

// The FP8 layer replacing `child`, or an empty AnyModule when it stays.
torch::nn::AnyModule converted_linear(const std::shared_ptr<torch::nn::Module>& child,
                                      const Recipe& recipe, const ConvertFilter& filter,
                                      const std::string& path) {
  const auto linear = exactly<torch::nn::LinearImpl>(child);
  if (!linear || !filter(path, *linear)) return {};
  const torch::nn::Linear holder(linear);
  const auto& lin = linear->options;
  const auto options = LinearFP8Options(lin.in_features(), lin.out_features()).bias(lin.bias());
  if (recipe == Recipe::global()) return torch::nn::AnyModule(LinearFP8Global::from(holder));
  if (recipe.is_mixed()) {
    return torch::nn::AnyModule(
        LinearFP8Mixed::from(holder, LinearFP8Options(options)
                                         .group_size_in(recipe.x.group_size)
                                         .group_size_out(recipe.grad_output.group_size)));
  }
  return torch::nn::AnyModule(LinearFP8::from(holder, LinearFP8Options(options).recipe(recipe)));
}

torch::nn::Sequential convert_sequential(const torch::nn::Sequential& model, const Recipe& recipe,
                                         const ConvertFilter& filter, const std::string& prefix) {
  torch::nn::Sequential result;
  const auto names = model->named_children().keys();
  size_t index = 0;
  for (const auto& child : *model) {
    std::string name = names.at(index++);
    auto replacement = converted_linear(child.ptr(), recipe, filter, join(prefix, name));
    result->push_back(std::move(name), replacement.is_empty() ? child : std::move(replacement));
  }
  return result;
}

torch::nn::ModuleList convert_list(const torch::nn::ModuleList& model, const Recipe& recipe,
                                   const ConvertFilter& filter, const std::string& prefix) {
  torch::nn::ModuleList result;
  size_t index = 0;
  for (const auto& child : *model) {
    const auto path = join(prefix, std::to_string(index++));
    if (auto sequential = exactly<torch::nn::SequentialImpl>(child)) {
      result->push_back(
          convert_sequential(torch::nn::Sequential(sequential), recipe, filter, path));
    } else if (auto list = exactly<torch::nn::ModuleListImpl>(child)) {
      result->push_back(convert_list(torch::nn::ModuleList(list), recipe, filter, path));
    } else {
      auto replacement = converted_linear(child, recipe, filter, path);
      result->push_back(replacement.is_empty() ? child : replacement.ptr());
    }
  }
  return result;
}

// Before anything is built: the model holder and the recipe.
void check_convert_args(bool empty_holder, const char* expected, const Recipe& recipe) {
  TORCH_CHECK_VALUE(!empty_holder, "fp8nn::convert: expected ", expected, ", got an empty holder");
  check_recipe(recipe, "fp8nn::convert");
}

}  // namespace

bool features_multiple_of_16(const std::string& /*path*/, const torch::nn::LinearImpl& linear) {
  return linear.options.in_features() % 16 == 0 && linear.options.out_features() % 16 == 0;
}

torch::nn::Sequential convert(const torch::nn::Sequential& model, const Recipe& recipe,
                              const ConvertFilter& filter) {
  check_convert_args(model.is_empty(), "a Sequential", recipe);
  return convert_sequential(model, recipe, filter, "");
}

torch::nn::ModuleList convert(const torch::nn::ModuleList& model, const Recipe& recipe,
                              const ConvertFilter& filter) {
  check_convert_args(model.is_empty(), "a ModuleList", recipe);
  return convert_list(model, recipe, filter, "");
}

}  // namespace fp8nn
