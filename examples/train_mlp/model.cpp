#include "model.h"

#include <fp8nn/fp8nn.h>

#include <stdexcept>

namespace train_mlp {

LinearKind parse_linear_kind(const std::string& name) {
  if (name == "bf16") return LinearKind::HighPrecision;
  if (name == "global") return LinearKind::Global;
  if (name == "mixed") return LinearKind::Mixed;
  if (name == "global-delayed") return LinearKind::GlobalDelayed;
  if (name == "blockwise") return LinearKind::Blockwise;
  throw std::invalid_argument(
      "--linear: expected bf16, global, mixed, global-delayed, blockwise or all, got '" + name +
      "'");
}

std::string name_of(LinearKind kind) {
  switch (kind) {
    case LinearKind::HighPrecision: return "bf16";
    case LinearKind::Global: return "global";
    case LinearKind::Mixed: return "mixed";
    case LinearKind::GlobalDelayed: return "global-delayed";
    case LinearKind::Blockwise: return "blockwise";
  }
  return "?";
}

torch::nn::Sequential make_mlp(const MlpShape& shape) {
  if (shape.depth < 1) throw std::invalid_argument("--depth: expected at least 1");
  torch::nn::Sequential mlp;
  int64_t in = shape.features;
  for (int64_t layer = 0; layer < shape.depth; ++layer) {
    const bool last = layer + 1 == shape.depth;
    const int64_t out = last ? shape.classes : shape.width;
    mlp->push_back(torch::nn::Linear(in, out));
    if (!last) {
      if (shape.activation == "relu") mlp->push_back(torch::nn::ReLU());
      else if (shape.activation == "gelu") mlp->push_back(torch::nn::GELU());
      else if (shape.activation == "tanh") mlp->push_back(torch::nn::Tanh());
      else if (shape.activation == "silu") mlp->push_back(torch::nn::SiLU());
      else throw std::invalid_argument("--activation: expected relu, gelu, tanh or silu, got '" +
                                       shape.activation + "'");
    }
    in = out;
  }
  return mlp;
}

torch::nn::Sequential with_linear(const torch::nn::Sequential& base, LinearKind kind) {
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(base->clone());
  torch::nn::Sequential model(copy);
  switch (kind) {
    case LinearKind::HighPrecision: return model;
    case LinearKind::Global: return fp8nn::convert(model, fp8nn::Recipe::Global);
    case LinearKind::Mixed: return fp8nn::convert(model, fp8nn::Recipe::Mixed);
    case LinearKind::GlobalDelayed: return fp8nn::convert(model, fp8nn::Recipe::global_delayed());
    case LinearKind::Blockwise: return fp8nn::convert(model, fp8nn::Recipe::blockwise());
  }
  return model;
}

}  // namespace train_mlp
