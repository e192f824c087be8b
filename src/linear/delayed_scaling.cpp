// functional::DelayedScalingState: the tensors of one layer's delayed scaling. The rule that
// updates them runs in the cast kernels (kernels/quantize/delayed_scaling.cuh) and in the CPU
// reference (src/quantize/quantize_reference.cpp).

#include <fp8nn/linear_functional.h>

#include <c10/util/Exception.h>

namespace fp8nn::functional {

DelayedScalingState::DelayedScalingState(int64_t history_len, torch::Device device) {
  TORCH_CHECK_VALUE(history_len > 0, "fp8nn::DelayedScalingState: expected history_len > 0, got ",
                    history_len);
  const auto on = torch::TensorOptions().device(device);
  amax_history = torch::zeros({2, history_len}, on.dtype(torch::kFloat));
  scale = torch::ones({2}, on.dtype(torch::kFloat));
  counts = torch::zeros({2, 3}, on.dtype(torch::kLong));
  scratch_ = torch::zeros({2, 2}, on.dtype(torch::kInt));
  known_counts_ = counts.data_ptr();
}

void DelayedScalingState::to(torch::Device device) {
  for (auto* t : {&amax_history, &scale, &counts, &scratch_}) t->set_data(t->to(device));
}

void DelayedScalingState::reset() {
  torch::NoGradGuard no_grad;
  amax_history.zero_();
  scale.fill_(1.0);
  counts.zero_();
  scratch_.zero_();
  started_[0] = started_[1] = false;
  known_counts_ = counts.data_ptr();
}

bool DelayedScalingState::started(int operand) {
  if (counts.data_ptr() != known_counts_) {
    const auto recorded = counts.select(1, 0).cpu();
    for (int i = 0; i < 2; ++i) started_[i] = recorded[i].item<int64_t>() > 0;
    known_counts_ = counts.data_ptr();
  }
  return started_[operand];
}

torch::Tensor DelayedScalingState::scratch() {
  // A state whose tensors moved (clone(), torch::load) gets a zero scratch where they are now.
  if (scratch_.device() != amax_history.device()) {
    scratch_ = torch::zeros({2, 2}, amax_history.options().dtype(torch::kInt));
  }
  return scratch_;
}

}  // namespace fp8nn::functional
