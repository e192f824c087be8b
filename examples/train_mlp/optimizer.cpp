#include "optimizer.h"

#include <map>
#include <stdexcept>
#include <tuple>

namespace train_mlp {

OptimizerKind parse_optimizer_kind(const std::string& name) {
  if (name == "adamw") return OptimizerKind::AdamW;
  if (name == "fused") return OptimizerKind::FusedAdamW;
  throw std::invalid_argument("--optimizer: expected adamw or fused, got '" + name + "'");
}

std::string name_of(OptimizerKind kind) {
  return kind == OptimizerKind::FusedAdamW ? "fused" : "adamw";
}

FusedAdamW::FusedAdamW(std::vector<torch::Tensor> params, torch::optim::AdamWOptions options)
    : torch::optim::AdamW(std::move(params), options) {
  TORCH_CHECK_VALUE(!options.amsgrad(), "FusedAdamW: expected amsgrad=false, got true");
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    TORCH_CHECK_VALUE(!options.amsgrad(), "FusedAdamW: expected amsgrad=false, got true");
    // The fused kernel takes tensors of one device and dtype per call.
    struct Lists {
      std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    };
    std::map<std::tuple<int, int, int>, Lists> by_device_and_dtype;
    for (const auto& p : group.params()) {  // checked before any state changes
      TORCH_CHECK_VALUE(!p.grad().defined() || !p.grad().is_sparse(),
                        "FusedAdamW: expected dense gradients, got a sparse one");
    }
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = state()[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& param_state = static_cast<torch::optim::AdamWParamState&>(*slot);
      // The device count must equal the host's before this step adds one to both; after load()
      // or on a first step it is (re)made from the host value.
      auto& device_step = device_steps_[p.unsafeGetTensorImpl()];
      if (!device_step.count.defined() || device_step.value != param_state.step() ||
          device_step.count.device() != p.device()) {
        device_step.count =
            torch::full({}, static_cast<double>(param_state.step()),
                        torch::TensorOptions().dtype(torch::kFloat).device(p.device()));
      }
      device_step.value = param_state.step() + 1;
      param_state.step(param_state.step() + 1);
      auto& lists = by_device_and_dtype[{static_cast<int>(p.device().type()), p.device().index(),
                                         static_cast<int>(p.scalar_type())}];
      lists.params.push_back(p);
      lists.grads.push_back(p.grad());
      lists.exp_avgs.push_back(param_state.exp_avg());
      lists.exp_avg_sqs.push_back(param_state.exp_avg_sq());
      lists.steps.push_back(device_step.count);
    }
    const auto [beta1, beta2] = options.betas();
    for (auto& [key, lists] : by_device_and_dtype) {
      // As Python's fused AdamW: the kernel reads the step counts, the caller advances them.
      at::_foreach_add_(lists.steps, 1);
      at::_fused_adamw_(lists.params, lists.grads, lists.exp_avgs, lists.exp_avg_sqs, {},
                        lists.steps, options.lr(), beta1, beta2, options.weight_decay(),
                        options.eps(), /*amsgrad=*/false, /*maximize=*/false);
    }
  }
  return loss;
}

void FusedAdamW::graph_replayed(int64_t replays) {
  const int64_t steps = replays - 1;
  for (auto& group : param_groups()) {
    for (auto& p : group.params()) {
      const auto slot = state().find(p.unsafeGetTensorImpl());
      const auto device_step = device_steps_.find(p.unsafeGetTensorImpl());
      if (slot == state().end() || device_step == device_steps_.end()) continue;
      auto& param_state = static_cast<torch::optim::AdamWParamState&>(*slot->second);
      param_state.step(param_state.step() + steps);
      device_step->second.value += steps;
    }
  }
}

std::unique_ptr<torch::optim::AdamW> make_optimizer(OptimizerKind kind,
                                                    std::vector<torch::Tensor> params, double lr,
                                                    double weight_decay) {
  const auto options = torch::optim::AdamWOptions(lr).weight_decay(weight_decay);
  if (kind == OptimizerKind::FusedAdamW) {
    return std::make_unique<FusedAdamW>(std::move(params), options);
  }
  return std::make_unique<torch::optim::AdamW>(std::move(params), options);
}

}  // namespace train_mlp
