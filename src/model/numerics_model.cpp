// The model-wide side of the numerics monitor (include/fp8nn/numerics.h): finding the FP8 linear
// layers of a module tree, giving them monitors, and reading them as a table.

#include <fp8nn/linear.h>
#include <fp8nn/numerics.h>

#include <cmath>
#include <memory>

namespace fp8nn {
namespace {

// The `numerics` member of an FP8 linear layer, or null for any other module.
std::shared_ptr<NumericsMonitor>* monitor_slot(torch::nn::Module& module) {
  if (auto* layer = dynamic_cast<LinearFP8Impl*>(&module)) return &layer->numerics;
  if (auto* layer = dynamic_cast<LinearFP8GlobalImpl*>(&module)) return &layer->numerics;
  if (auto* layer = dynamic_cast<LinearFP8MixedImpl*>(&module)) return &layer->numerics;
  return nullptr;
}

}  // namespace

int64_t enable_numerics(torch::nn::Module& model, const NumericsOptions& options) {
  int64_t layers = 0;
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (auto* slot = monitor_slot(*module)) {
      *slot = std::make_shared<NumericsMonitor>(options);
      ++layers;
    }
  }
  return layers;
}

void disable_numerics(torch::nn::Module& model) {
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (auto* slot = monitor_slot(*module)) slot->reset();
  }
}

std::vector<NumericsRow> numerics_table(const torch::nn::Module& model) {
  std::vector<NumericsRow> rows;
  // named_modules is not const in libtorch; reading the layers changes nothing.
  auto& tree = const_cast<torch::nn::Module&>(model);
  for (const auto& item : tree.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    auto* slot = monitor_slot(*item.value());
    if (slot == nullptr || !*slot) continue;
    const auto snapshot = (*slot)->read();
    const auto add = [&](const char* tensor, const OperandNumerics& figures, float error) {
      rows.push_back(NumericsRow{item.key(), tensor, figures, error});
    };
    for (int i = 0; i < 3; ++i) {
      add(name_of(static_cast<Operand>(i)), snapshot.operands[i], NAN);
    }
    if ((*slot)->options().error_every() == 0) continue;
    for (int i = 0; i < 3; ++i) {
      add(name_of(static_cast<Product>(i)), OperandNumerics{}, snapshot.product_errors[i]);
    }
  }
  return rows;
}

}  // namespace fp8nn
