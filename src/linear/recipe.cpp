// What the engine can run of a Recipe, and how a recipe prints.

#include <fp8nn/linear_functional.h>
#include <fp8nn/recipe.h>

#include <c10/util/Exception.h>

#include <sstream>
#include <utility>

namespace fp8nn {
namespace {

// Indexed by Scaling.
constexpr const char* kScalingNames[] = {"per-tensor", "per-group", "128x128-block"};

const char* name_of(Scaling scaling) { return kScalingNames[static_cast<int>(scaling)]; }

std::string describe(const OperandRecipe& operand) {
  std::ostringstream out;
  out << name_of(operand.format) << " " << name_of(operand.scaling);
  if (operand.scaling == Scaling::PerGroup) {
    out << " " << (operand.group_size > 0 ? std::to_string(operand.group_size) : "default");
  }
  if (operand.power_of_two_scales) out << " power-of-two";
  return out.str();
}

std::string describe(const ProductRecipe& product) {
  if (product.precision == Precision::High) return "high";
  return product.accumulation == Accumulation::Fast ? "fp8 fast" : "fp8 precise";
}

// `block_allowed`: the operand may be scaled per 128x128 block (the weight).
void check_operand(const OperandRecipe& operand, const char* which, const std::string& who,
                   bool block_allowed = false) {
  TORCH_CHECK_VALUE(block_allowed || operand.scaling != Scaling::Block128x128, who,
                    ": unsupported recipe: ", which,
                    " scaled per 128x128 block has no kernel yet (supported: per tensor, and per "
                    "group for x and the output gradient; the weight may be per block)");
  TORCH_CHECK_VALUE(operand.group_size >= 0, who, ": expected ", which,
                    " group_size > 0 (or 0 for the default table), got ", operand.group_size);
  TORCH_CHECK_VALUE(
      !operand.power_of_two_scales || operand.scaling != Scaling::PerTensor, who,
      ": unsupported recipe: ", which,
      " per tensor with power-of-two scales (they apply to per-group and 128x128-block "
      "operands)");
}

}  // namespace

void check_recipe(const Recipe& recipe, const std::string& who) {
  check_operand(recipe.x, "x", who);
  check_operand(recipe.weight, "the weight", who, /*block_allowed=*/true);
  check_operand(recipe.grad_output, "the output gradient", who);
  TORCH_CHECK_VALUE(recipe.forward.precision == Precision::FP8, who,
                    ": unsupported recipe: a high-precision forward product (use torch::nn::Linear"
                    " for a layer without FP8)");
  TORCH_CHECK_VALUE(recipe.x.format == Format::E4M3, who,
                    ": unsupported recipe: x in e5m2 (the forward product takes e4m3 x)");
  TORCH_CHECK_VALUE(
      recipe.weight.format == Format::E4M3 && (recipe.weight.scaling == Scaling::PerTensor ||
                                               recipe.weight.scaling == Scaling::Block128x128),
      who, ": unsupported recipe: the weight as ", describe(recipe.weight),
      " (supported: e4m3 per-tensor or 128x128-block)");
  const auto& delayed = recipe.delayed;
  TORCH_CHECK_VALUE(delayed.history_len >= 0, who,
                    ": expected a delayed-scaling history_len >= 0 (0: off), got ",
                    delayed.history_len);
  TORCH_CHECK_VALUE(delayed.margin >= 0, who, ": expected a delayed-scaling margin >= 0, got ",
                    delayed.margin);
  TORCH_CHECK_VALUE(!delayed.enabled() || (recipe.x.scaling == Scaling::PerTensor &&
                                           recipe.grad_output.scaling == Scaling::PerTensor),
                    who,
                    ": unsupported recipe: delayed scaling needs per-tensor x and output gradient, "
                    "got x ",
                    describe(recipe.x), " and output gradient ", describe(recipe.grad_output));
}

Recipe Recipe::resolved(int64_t in_features, int64_t out_features) const {
  Recipe recipe = *this;
  for (auto [operand, features] : {std::pair<OperandRecipe*, int64_t>{&recipe.x, in_features},
                                   {&recipe.grad_output, out_features}}) {
    if (operand->scaling == Scaling::PerGroup && operand->group_size == 0) {
      operand->group_size = default_group_size(features);
    }
  }
  return recipe;
}

std::string to_string(const Recipe& recipe) {
  std::ostringstream out;
  if (recipe == Recipe::global()) return "Recipe::global()";
  if (recipe == Recipe::blockwise()) return "Recipe::blockwise()";
  if (recipe == Recipe::blockwise(true)) return "Recipe::blockwise(true)";
  if (recipe == Recipe::global_delayed(recipe.delayed.history_len, recipe.delayed.margin) &&
      recipe.delayed.enabled()) {
    out << "Recipe::global_delayed(" << recipe.delayed.history_len << ", " << recipe.delayed.margin
        << ")";
    return out.str();
  }
  if (recipe.is_mixed()) {
    out << "Recipe::mixed(" << recipe.x.group_size << ", " << recipe.grad_output.group_size << ")";
    return out.str();
  }
  out << "Recipe(x=" << describe(recipe.x) << ", weight=" << describe(recipe.weight)
      << ", grad_output=" << describe(recipe.grad_output)
      << ", forward=" << describe(recipe.forward) << ", grad_input=" << describe(recipe.grad_input)
      << ", grad_weight=" << describe(recipe.grad_weight);
  if (recipe.delayed.enabled()) {
    out << ", delayed=history " << recipe.delayed.history_len << " margin " << recipe.delayed.margin
        << (recipe.delayed.amax_compute == AmaxCompute::Max ? " max" : " most-recent");
  }
  out << ")";
  return out.str();
}

std::ostream& operator<<(std::ostream& stream, const Recipe& recipe) {
  return stream << to_string(recipe);
}

}  // namespace fp8nn
