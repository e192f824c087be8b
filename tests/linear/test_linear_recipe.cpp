// The recipe engine: Recipe values and their presets, what check_recipe refuses, LinearFP8 with a
// preset equal to LinearFP8Global / LinearFP8Mixed bit for bit, recipe variants against the
// emulation, convert() with any recipe, and archives written by fp8nn 0.1 (before the engine).

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"
#include "oracle.h"
#include "test_support.h"
#include "tolerance.h"

#include <sstream>
#include <string>
#include <vector>

namespace {

using fp8nn::Accumulation;
using fp8nn::Format;
using fp8nn::LinearFP8Options;
using fp8nn::OperandRecipe;
using fp8nn::ProductRecipe;
using fp8nn::Recipe;
using fp8nn::Scaling;
using fp8nn::test::check_error;

// Code written when Recipe was an enum keeps compiling: constexpr arrays, comparisons.
constexpr Recipe kPresets[] = {Recipe::Global, Recipe::Mixed};
static_assert(kPresets[0] == Recipe::global() && kPresets[1] == Recipe::mixed(),
              "the named constants are the presets");
static_assert(Recipe::mixed(128, 64).is_mixed() && !Recipe::global().is_mixed(),
              "is_mixed tells the presets apart");

TEST_CASE("Recipe presets say what Global and Mixed run, and print by name") {
  const auto global = Recipe::global();
  CHECK(global.x == OperandRecipe::per_tensor(Format::E4M3));
  CHECK(global.weight == OperandRecipe::per_tensor(Format::E4M3));
  CHECK(global.grad_output == OperandRecipe::per_tensor(Format::E5M2));
  CHECK(global.forward == ProductRecipe::fp8(Accumulation::Fast));
  CHECK(global.grad_input == ProductRecipe::fp8(Accumulation::Precise));
  CHECK(global.grad_weight == ProductRecipe::fp8(Accumulation::Precise));
  const auto mixed = Recipe::mixed(128, 64);
  CHECK(mixed.x == OperandRecipe::per_group(Format::E4M3, 128));
  CHECK(mixed.grad_output == OperandRecipe::per_group(Format::E5M2, 64));
  CHECK(mixed.grad_weight == ProductRecipe::high_precision());
  CHECK(mixed != Recipe::Mixed);
  CHECK(fp8nn::to_string(global) == "Recipe::global()");
  CHECK(fp8nn::to_string(mixed) == "Recipe::mixed(128, 64)");
  const auto blockwise = Recipe::blockwise();
  CHECK(blockwise.x == OperandRecipe::per_group(Format::E4M3, 128));
  CHECK(blockwise.weight.scaling == Scaling::Block128x128);
  CHECK(blockwise.weight.format == Format::E4M3);
  CHECK(blockwise.grad_output == OperandRecipe::per_group(Format::E4M3, 128));
  CHECK(blockwise.forward == ProductRecipe::fp8(Accumulation::Precise));
  CHECK(blockwise.grad_weight == ProductRecipe::fp8(Accumulation::Precise));
  CHECK(fp8nn::to_string(blockwise) == "Recipe::blockwise()");
  const auto power_of_two = Recipe::blockwise(true);
  CHECK(power_of_two != blockwise);
  CHECK((power_of_two.x.power_of_two_scales && power_of_two.weight.power_of_two_scales &&
         power_of_two.grad_output.power_of_two_scales));
  CHECK(fp8nn::to_string(power_of_two) == "Recipe::blockwise(true)");
  auto only_x = Recipe::blockwise();
  only_x.x.power_of_two_scales = true;
  CHECK(fp8nn::to_string(only_x).find("x=e4m3 per-group 128 power-of-two") != std::string::npos);
  CHECK(blockwise.resolved(96, 160) == blockwise);
  auto custom = global;
  custom.grad_output.format = Format::E4M3;
  std::ostringstream printed;
  printed << custom;
  CHECK(printed.str() ==
        "Recipe(x=e4m3 per-tensor, weight=e4m3 per-tensor, grad_output=e4m3 per-tensor, "
        "forward=fp8 fast, grad_input=fp8 precise, grad_weight=fp8 precise)");
}

TEST_CASE("A layer's recipe has its default group sizes resolved for its features") {
  const fp8nn::LinearFP8 layer(LinearFP8Options(96, 160).recipe(Recipe::Mixed));
  // default_group_size: next power of two of the row, within [64, 4096].
  CHECK(layer->recipe() == Recipe::mixed(128, 256));
  CHECK(Recipe::mixed(32, 0).resolved(96, 5000) == Recipe::mixed(32, 4096));
  CHECK(Recipe::global().resolved(96, 160) == Recipe::global());
  std::ostringstream printed;
  printed << *layer;
  CHECK(printed.str() ==
        "fp8nn::LinearFP8(in_features=96, out_features=160, bias=true, "
        "recipe=Recipe::mixed(128, 256))");
}

TEST_CASE("A recipe no kernel runs is refused with a ValueError naming the choice") {
  auto block_x = Recipe::blockwise();
  block_x.x = {Format::E4M3, Scaling::Block128x128, 0};
  auto e5m2_block_weight = Recipe::blockwise();
  e5m2_block_weight.weight.format = Format::E5M2;
  auto grouped_weight = Recipe::global();
  grouped_weight.weight = OperandRecipe::per_group(Format::E4M3, 128);
  auto e5m2_x = Recipe::global();
  e5m2_x.x.format = Format::E5M2;
  auto high_forward = Recipe::global();
  high_forward.forward = ProductRecipe::high_precision();
  auto power_of_two_per_tensor = Recipe::global();
  power_of_two_per_tensor.grad_output.power_of_two_scales = true;
  const std::vector<std::pair<Recipe, std::string>> refused = {
      {block_x, "x scaled per 128x128 block"},
      {e5m2_block_weight, "the weight as e5m2 128x128-block"},
      {grouped_weight, "the weight as e4m3 per-group 128"},
      {e5m2_x, "x in e5m2"},
      {high_forward, "high-precision forward"},
      {power_of_two_per_tensor, "the output gradient per tensor with power-of-two scales"},
      {Recipe::mixed(-1, 64), "group_size > 0"}};
  for (const auto& [recipe, fragment] : refused) {
    CAPTURE(fragment);
    check_error<c10::ValueError>([&] { fp8nn::check_recipe(recipe, "who"); }, {"who: ", fragment});
    check_error<c10::ValueError>([&] { fp8nn::LinearFP8(LinearFP8Options(16, 16).recipe(recipe)); },
                                 {"fp8nn::LinearFP8: ", fragment});
    check_error<c10::ValueError>(
        [&] {
          fp8nn::functional::linear_fp8(torch::randn({2, 16}), torch::randn({16, 16}), {}, recipe);
        },
        {"fp8nn::functional::linear_fp8: ", fragment});
    check_error<c10::ValueError>(
        [&] { fp8nn::convert(torch::nn::Sequential(torch::nn::Linear(16, 16)), recipe); },
        {"fp8nn::convert: ", fragment});
  }
  check_error<c10::ValueError>(
      [] { fp8nn::LinearFP8Global(LinearFP8Options(16, 16).recipe(Recipe::mixed())); },
      {"fp8nn::LinearFP8Global", "recipe is fixed", "Recipe::mixed(0, 0)"});
  check_error<c10::ValueError>([] { fp8nn::LinearFP8(LinearFP8Options(16, 16).group_size_in(32)); },
                               {"fp8nn::LinearFP8", "group_size_in=32"});
}

// Forward, input, weight and bias gradients of `layer` on x, with output gradient dy.
struct Results {
  std::vector<torch::Tensor> tensors;
};

template <typename Holder>
Results run_layer(Holder& layer, const torch::Tensor& x, const torch::Tensor& dy) {
  const auto input = x.detach().clone().requires_grad_(true);
  layer->zero_grad();
  const auto y = layer->forward(input);
  y.backward(dy);
  return {{y.detach(), input.grad(), layer->weight.grad(), layer->bias.grad()}};
}

void check_bitwise_equal(const Results& got, const Results& expected) {
  REQUIRE(got.tensors.size() == expected.tensors.size());
  for (size_t i = 0; i < got.tensors.size(); ++i) {
    CAPTURE(i);
    REQUIRE(got.tensors[i].defined());
    CHECK(fp8nn::test::count_bit_differences(got.tensors[i], expected.tensors[i]) == 0);
  }
}

// LinearFP8 with recipe `recipe` and the preset layer `Preset` (same parameters) on fresh inputs.
template <typename Preset>
void check_preset(const torch::Device& device, const Recipe& recipe,
                  const LinearFP8Options& preset_options) {
  fp8nn::test::seed_torch();
  const int64_t in = preset_options.in_features(), out = preset_options.out_features();
  Preset preset(preset_options);
  fp8nn::LinearFP8 engine(LinearFP8Options(in, out).recipe(recipe));
  {
    torch::NoGradGuard no_grad;
    engine->weight.copy_(preset->weight);
    engine->bias.copy_(preset->bias);
  }
  preset->to(device);
  engine->to(device);
  for (const int64_t rows : {1, 37, 128}) {
    CAPTURE(rows);
    const auto x = torch::randn({rows, in}, device);
    const auto dy = torch::randn({rows, out}, device);
    check_bitwise_equal(run_layer(engine, x, dy), run_layer(preset, x, dy));
  }
}

void check_presets(const torch::Device& device) {
  SECTION("Recipe::global() is LinearFP8Global") {
    check_preset<fp8nn::LinearFP8Global>(device, Recipe::Global, LinearFP8Options(96, 160));
  }
  SECTION("Recipe::Mixed is LinearFP8Mixed with the default group sizes") {
    check_preset<fp8nn::LinearFP8Mixed>(device, Recipe::Mixed, LinearFP8Options(96, 160));
  }
  SECTION("Recipe::mixed(32, 64) is LinearFP8Mixed with those group sizes") {
    check_preset<fp8nn::LinearFP8Mixed>(
        device, Recipe::mixed(32, 64),
        LinearFP8Options(96, 160).group_size_in(32).group_size_out(64));
  }
}

TEST_CASE("LinearFP8 with a preset equals the preset layer bit for bit, on the CPU") {
  check_presets(torch::kCPU);
}

TEST_CASE("LinearFP8 with a preset equals the preset layer bit for bit, on CUDA") {
  FP8NN_SKIP_WITHOUT_CUDA();
  check_presets(torch::kCUDA);
}

// fp32 data everywhere, so each result is rounded once to fp32.
void check_variant(const torch::Device& device, const Recipe& recipe) {
  using namespace fp8nn::test;
  fp8nn::test::seed_torch();
  const int64_t rows = 67, in = 192, out = 80;
  fp8nn::LinearFP8 layer(LinearFP8Options(in, out).recipe(recipe));
  layer->to(device);
  const auto x = torch::randn({rows, in}, device), dy = torch::randn({rows, out}, device);
  const auto got = run_layer(layer, x, dy);
  const auto ref = fp8nn::test::emulate(recipe, x, layer->weight, layer->bias, dy);
  const bool fast = recipe.forward.accumulation == Accumulation::Fast;
  CHECK(tolerance_ratio(got.tensors[0], ref.y, torch::kFloat,
                        accumulation_relative(device, in, fast)) <= 1.0);
  CHECK(tolerance_ratio(got.tensors[1], ref.dx, torch::kFloat,
                        accumulation_relative(device, out, false)) <= 1.0);
  CHECK(tolerance_ratio(got.tensors[2], ref.dw, torch::kFloat,
                        accumulation_relative(device, rows, false)) <= 1.0);
  CHECK(tolerance_ratio(got.tensors[3], ref.db, torch::kFloat) <= 1.0);
}

void check_variants(const torch::Device& device) {
  SECTION("Global with an E4M3 output gradient") {
    auto recipe = Recipe::global();
    recipe.grad_output.format = Format::E4M3;
    check_variant(device, recipe);
  }
  SECTION("Global with a high-precision input gradient") {
    auto recipe = Recipe::global();
    recipe.grad_input = ProductRecipe::high_precision();
    check_variant(device, recipe);
  }
  SECTION("Global with a high-precision weight gradient") {
    auto recipe = Recipe::global();
    recipe.grad_weight = ProductRecipe::high_precision();
    check_variant(device, recipe);
  }
  SECTION("Mixed with a per-tensor output gradient and precise forward accumulation") {
    auto recipe = Recipe::mixed(64);
    recipe.grad_output = OperandRecipe::per_tensor(Format::E5M2);
    recipe.forward.accumulation = Accumulation::Precise;
    check_variant(device, recipe);
  }
  SECTION("Mixed with an E4M3 output gradient per group of 16") {
    auto recipe = Recipe::mixed(32, 16);
    recipe.grad_output.format = Format::E4M3;
    check_variant(device, recipe);
  }
  SECTION("Recipe::blockwise(): 128x128-block weight, x and dy per 128, all products FP8") {
    check_variant(device, Recipe::blockwise());
  }
  SECTION("Recipe::blockwise(true): the same with power-of-two scales") {
    check_variant(device, Recipe::blockwise(true));
  }
  SECTION("Mixed with an FP8 weight gradient (x^T and dy^T per group along the tokens)") {
    auto recipe = Recipe::mixed(64, 32);
    recipe.grad_weight = ProductRecipe::fp8(Accumulation::Precise);
    check_variant(device, recipe);
  }
  SECTION("Global with a 128x128-block weight") {
    auto recipe = Recipe::global();
    recipe.weight.scaling = Scaling::Block128x128;
    check_variant(device, recipe);
  }
  SECTION("Both gradients in high precision") {
    auto recipe = Recipe::mixed(48);
    recipe.grad_input = ProductRecipe::high_precision();
    check_variant(device, recipe);
  }
}

FP8NN_CPU_AND_CUDA_CASE("LinearFP8 recipe variants match the emulation", check_variants)

TEST_CASE("convert() builds the preset layers for presets and LinearFP8 for other recipes") {
  torch::nn::Sequential model(torch::nn::Linear(32, 64), torch::nn::ReLU(),
                              torch::nn::Linear(64, 16));
  const auto printed = [](const torch::nn::Sequential& converted) {
    std::ostringstream out;
    out << *converted;
    return out.str();
  };
  const auto global = printed(fp8nn::convert(model, Recipe::global()));
  CHECK(global.find("fp8nn::LinearFP8Global(in_features=32, out_features=64, bias=true)") !=
        std::string::npos);
  const auto mixed = printed(fp8nn::convert(model, Recipe::mixed(16, 8)));
  CHECK(mixed.find("fp8nn::LinearFP8Mixed(in_features=64, out_features=16, bias=true, "
                   "group_size_in=16, group_size_out=8)") != std::string::npos);
  auto recipe = Recipe::global();
  recipe.grad_input = ProductRecipe::high_precision();
  auto converted = fp8nn::convert(model, recipe);
  const auto custom = printed(converted);
  CHECK(
      custom.find("fp8nn::LinearFP8(in_features=32, out_features=64, bias=true, recipe=Recipe(") !=
      std::string::npos);
  CHECK(custom.find("grad_input=high") != std::string::npos);
  // The converted layer shares the Linear's parameters and runs the recipe.
  const auto layer = converted[0]->as<fp8nn::LinearFP8Impl>();
  REQUIRE(layer != nullptr);
  CHECK(layer->recipe() == recipe);
  CHECK(layer->weight.is_same(model[0]->as<torch::nn::LinearImpl>()->weight));
}

// Archives written by fp8nn 0.1 (tests/data/README.md says how): a Sequential of a
// LinearFP8Global, a ReLU and a LinearFP8Mixed without bias, and its output and gradients on
// fixed inputs.
torch::nn::Sequential v0_1_model() {
  return torch::nn::Sequential(fp8nn::LinearFP8Global(LinearFP8Options(32, 48)), torch::nn::ReLU(),
                               fp8nn::LinearFP8Mixed(LinearFP8Options(48, 16).bias(false)));
}

std::string data_file(const std::string& name) {
  return std::string(FP8NN_TEST_DATA_DIR) + "/" + name;
}

void check_v0_1_results(torch::nn::Sequential& model) {
  std::vector<torch::Tensor> io;  // x, dy, y, dx, then each parameter's gradient
  torch::load(io, data_file("sequential_v0.1_io.pt"));
  const auto params = model->parameters();
  REQUIRE(io.size() == 4 + params.size());
  const auto x = io[0].clone().requires_grad_(true);
  const auto y = model->forward(x);
  y.backward(io[1]);
  // Bit for bit what 0.1 computed on the CPU.
  CHECK(fp8nn::test::count_bit_differences(y.detach(), io[2]) == 0);
  CHECK(fp8nn::test::count_bit_differences(x.grad(), io[3]) == 0);
  for (size_t p = 0; p < params.size(); ++p) {
    CAPTURE(p);
    CHECK(fp8nn::test::count_bit_differences(params[p].grad(), io[4 + p]) == 0);
  }
}

TEST_CASE("torch::save archives and checkpoints written by fp8nn 0.1 load and compute the same") {
  SECTION("torch::load") {
    auto model = v0_1_model();
    torch::load(model, data_file("sequential_v0.1.pt"));
    check_v0_1_results(model);
  }
  SECTION("load_checkpoint") {
    auto model = v0_1_model();
    fp8nn::load_checkpoint(*model, data_file("sequential_v0.1.ckpt"));
    check_v0_1_results(model);
  }
}

}  // namespace
