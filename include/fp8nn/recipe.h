#pragma once
// An FP8 linear layer's recipe as a value: for each operand of its three products (the input x,
// the weight W, the output gradient dy) the FP8 format and the scaling granularity; for each
// product (forward y = x W^T, input gradient dx = dy W, weight gradient dW = dy^T x) whether it
// runs in FP8 or in high precision, and how it accumulates. One engine runs any recipe
// (functional::linear_fp8, fp8nn::LinearFP8); LinearFP8Global and LinearFP8Mixed are two presets.
//
//   auto recipe = fp8nn::Recipe::mixed(128, 128);    // what LinearFP8Mixed runs
//   recipe.grad_output.format = fp8nn::Format::E4M3;  // a variation of it
//   fp8nn::LinearFP8 layer(fp8nn::LinearFP8Options(1024, 4096).recipe(recipe));
//
// A recipe no kernel can run yet is refused (c10::ValueError naming the choice) when a layer is
// built with it, by convert(), and by functional::linear_fp8.

#include <fp8nn/quantize.h>

#include <cstdint>
#include <ostream>
#include <string>

namespace fp8nn {

/// How many elements of an operand share one scale.
enum class Scaling {
  /// One scale for the whole tensor.
  PerTensor,
  /// One scale per group of consecutive elements of a row, along the product's reduction
  /// dimension (x: in_features, dy: out_features); OperandRecipe::group_size says how many.
  PerGroup,
  /// One scale per 128x128 block (DeepSeek-V3's weights; functional::quantize_per_block). The
  /// weight only. On CUDA its products take the reference (dequantize, fp32 matmul) on the device
  /// unless FP8NN_GROUP_GEMM=cublaslt or sm90 sends them to tensor cores (docs/design.md).
  Block128x128,
};

/// How one operand is quantized.
struct OperandRecipe {
  Format format = Format::E4M3;
  Scaling scaling = Scaling::PerTensor;
  /// PerGroup only: elements per group; 0 takes default_group_size(row length) per layer. An FP8
  /// weight gradient takes a per-group operand's transposed copy with groups of the same size
  /// along the rows (tokens), quantized from the operand itself.
  int64_t group_size = 0;
  /// PerGroup and Block128x128 only: each scale rounded down to a power of two (the largest one
  /// <= fmt_max / amax), so that scaling and dequantizing multiply without rounding, at the cost
  /// of up to one bit of the format's range per group (values then reach at least half of
  /// fmt_max).
  bool power_of_two_scales = false;

  static constexpr OperandRecipe per_tensor(Format format) {
    return {format, Scaling::PerTensor, 0};
  }
  static constexpr OperandRecipe per_group(Format format, int64_t group_size = 0) {
    return {format, Scaling::PerGroup, group_size};
  }
  constexpr bool operator==(const OperandRecipe& other) const {
    return format == other.format && scaling == other.scaling && group_size == other.group_size &&
           power_of_two_scales == other.power_of_two_scales;
  }
  constexpr bool operator!=(const OperandRecipe& other) const { return !(*this == other); }
};

/// Where a product's operands are multiplied.
enum class Precision {
  /// FP8 tensor cores on the quantized operands (the CPU reference: fp32 products of their
  /// dequantized values).
  FP8,
  /// The high-precision operands themselves (at::matmul in the input's dtype).
  High,
};

/// How an FP8 product accumulates on the GPU. Fast promotes FP8 partial sums to fp32 less often
/// (faster, looser); Precise for long reductions (gradients). The CPU reference ignores it.
enum class Accumulation { Fast, Precise };

/// How one of the three products runs.
struct ProductRecipe {
  Precision precision = Precision::FP8;
  Accumulation accumulation = Accumulation::Precise;

  static constexpr ProductRecipe fp8(Accumulation accumulation) {
    return {Precision::FP8, accumulation};
  }
  static constexpr ProductRecipe high_precision() {
    return {Precision::High, Accumulation::Precise};
  }
  constexpr bool operator==(const ProductRecipe& other) const {
    return precision == other.precision && accumulation == other.accumulation;
  }
  constexpr bool operator!=(const ProductRecipe& other) const { return !(*this == other); }
};

/// How delayed scaling (Recipe::delayed) turns the recorded amaxes into the next scale.
enum class AmaxCompute {
  /// The largest amax of the history window (TransformerEngine's "max").
  Max,
  /// The amax of the last call alone.
  MostRecent,
};

/// Delayed scaling of the per-tensor x and output gradient (TransformerEngine's DelayedScaling):
/// a call casts with the scale its layer computed from earlier calls' amaxes, and records its
/// own amax in the same pass, so no amax pass runs before the cast. After each call the scale
/// becomes fmt_max * 2^-margin / A, with A the largest of the last history_len amaxes (or the
/// last one, AmaxCompute::MostRecent), when A is finite and > 0; otherwise the scale is kept.
/// A layer's first call (nothing recorded yet) takes current scaling. The weight keeps current
/// scaling (its cast is cached, and its scale is a function of the weight alone). The state is
/// per layer (functional::DelayedScalingState; in a module, buffers that torch::save keeps).
struct DelayedScaling {
  /// Amaxes in the window; 0 turns delayed scaling off (current scaling, the default).
  int64_t history_len = 0;
  /// Headroom in powers of two: the scale maps A to fmt_max * 2^-margin. >= 0.
  int margin = 0;
  AmaxCompute amax_compute = AmaxCompute::Max;

  constexpr bool enabled() const { return history_len > 0; }
  constexpr bool operator==(const DelayedScaling& other) const {
    return history_len == other.history_len && margin == other.margin &&
           amax_compute == other.amax_compute;
  }
  constexpr bool operator!=(const DelayedScaling& other) const { return !(*this == other); }
};

/// A whole recipe: three operands, three products. A literal type: recipes can be constexpr,
/// compared with ==, printed with <<.
struct Recipe {
  OperandRecipe x = OperandRecipe::per_tensor(Format::E4M3);
  OperandRecipe weight = OperandRecipe::per_tensor(Format::E4M3);
  OperandRecipe grad_output = OperandRecipe::per_tensor(Format::E5M2);
  ProductRecipe forward = ProductRecipe::fp8(Accumulation::Fast);
  ProductRecipe grad_input = ProductRecipe::fp8(Accumulation::Precise);
  ProductRecipe grad_weight = ProductRecipe::fp8(Accumulation::Precise);
  /// Off by default (current scaling: each cast's scale from its own tensor's amax).
  DelayedScaling delayed;

  /// LinearFP8Global's recipe: x and W per-tensor E4M3, dy per-tensor E5M2; all three products
  /// FP8 (forward fast accumulation, gradients precise).
  static constexpr Recipe global() { return Recipe{}; }
  /// LinearFP8Mixed's recipe: x E4M3 per group of group_size_in, W per-tensor E4M3, dy E5M2 per
  /// group of group_size_out (0: default_group_size of the row, per layer); forward and input
  /// gradient FP8, weight gradient in high precision.
  static constexpr Recipe mixed(int64_t group_size_in = 0, int64_t group_size_out = 0) {
    Recipe recipe;
    recipe.x = OperandRecipe::per_group(Format::E4M3, group_size_in);
    recipe.grad_output = OperandRecipe::per_group(Format::E5M2, group_size_out);
    recipe.grad_weight = ProductRecipe::high_precision();
    return recipe;
  }
  /// DeepSeek-V3's recipe: x and the output gradient E4M3 per group of 128 (their weight-gradient
  /// copies per 128 rows), the weight E4M3 per 128x128 block; all three products FP8, precise
  /// accumulation. E4M3 covers dy because each 128 values of a row get their own scale.
  /// `power_of_two_scales`: every scale a power of two (OperandRecipe::power_of_two_scales).
  static constexpr Recipe blockwise(bool power_of_two_scales = false) {
    Recipe recipe;
    recipe.x = OperandRecipe::per_group(Format::E4M3, 128);
    recipe.weight = {Format::E4M3, Scaling::Block128x128, 0};
    recipe.grad_output = OperandRecipe::per_group(Format::E4M3, 128);
    recipe.x.power_of_two_scales = power_of_two_scales;
    recipe.weight.power_of_two_scales = power_of_two_scales;
    recipe.grad_output.power_of_two_scales = power_of_two_scales;
    recipe.forward = ProductRecipe::fp8(Accumulation::Precise);
    return recipe;
  }
  /// global() with delayed scaling of x and the output gradient (see DelayedScaling).
  static constexpr Recipe global_delayed(int64_t history_len = 1024, int margin = 0) {
    Recipe recipe;
    recipe.delayed = {history_len, margin, AmaxCompute::Max};
    return recipe;
  }
  /// The presets as named constants, so code written when Recipe was an enum
  /// (`convert(model, Recipe::Global)`) keeps compiling and meaning the same:
  /// Global == global(), Mixed == mixed() (group sizes from the default table).
  static const Recipe Global;
  static const Recipe Mixed;

  /// This recipe for a layer of the given features: each per-group size of 0 replaced by
  /// default_group_size of its row (x: in_features, grad_output: out_features).
  Recipe resolved(int64_t in_features, int64_t out_features) const;

  /// Whether this is a mixed(G_in, G_out) recipe for some group sizes.
  constexpr bool is_mixed() const { return *this == mixed(x.group_size, grad_output.group_size); }

  constexpr bool operator==(const Recipe& other) const {
    return x == other.x && weight == other.weight && grad_output == other.grad_output &&
           forward == other.forward && grad_input == other.grad_input &&
           grad_weight == other.grad_weight && delayed == other.delayed;
  }
  constexpr bool operator!=(const Recipe& other) const { return !(*this == other); }
};

inline constexpr Recipe Recipe::Global = Recipe::global();
inline constexpr Recipe Recipe::Mixed = Recipe::mixed();

/// Raises a c10::ValueError naming `who` and the first choice of `recipe` that no kernel can run
/// yet (e.g. a 128x128-block x), a negative group size, power-of-two scales on a per-tensor
/// operand, or delayed scaling with a negative history length or margin, or with a per-group x or
/// output gradient.
void check_recipe(const Recipe& recipe, const std::string& who);

/// e.g. "Recipe::global()", "Recipe::mixed(128, 64)", "Recipe::global_delayed(1024, 0)",
/// "Recipe::blockwise()", "Recipe::blockwise(true)", or every field for other recipes.
std::string to_string(const Recipe& recipe);
std::ostream& operator<<(std::ostream& stream, const Recipe& recipe);

}  // namespace fp8nn
