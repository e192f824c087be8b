// Randomised layer cases with fixed seeds (issue #8): hundreds of runs of both layers with random
// shapes, group sizes, dtypes and layouts against the oracle's FP8 emulation (on CUDA: within the
// tensor-core bounds). Case i always draws the same case; FP8NN_TEST_REDUCED runs the first few.

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"
#include "random_cases.h"

#include <algorithm>
#include <cmath>
#include <vector>

using namespace fp8nn::test;
using fp8nn::Recipe;

namespace {

constexpr int kLayerCases = 300;

enum class Layout { Contiguous, Transposed, EveryOtherColumn, ExpandedRows, ThreeD };

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::Contiguous:
      return "contiguous";
    case Layout::Transposed:
      return "transposed";
    case Layout::EveryOtherColumn:
      return "every other column";
    case Layout::ExpandedRows:
      return "expanded rows";
    default:
      return "3-d";
  }
}

// Values of `sizes` on `device` in `dtype`, laid out as `layout` says (same logical tensor
// whatever the layout, except ExpandedRows, whose rows are all equal).
torch::Tensor laid_out(const torch::Tensor& values, Layout layout, torch::ScalarType dtype,
                       torch::Device device) {
  const int64_t rows = values.size(0), cols = values.size(1);
  const auto v = values.to(dtype).to(device);
  switch (layout) {
    case Layout::Transposed:
      return v.t().contiguous().t();
    case Layout::EveryOtherColumn: {
      auto wide = torch::zeros({rows, 2 * cols}, v.options());
      wide.slice(1, 0, 2 * cols, 2).copy_(v);
      return wide.slice(1, 0, 2 * cols, 2);
    }
    case Layout::ExpandedRows:
      return v.narrow(0, 0, std::min<int64_t>(rows, 1)).expand({rows, cols});
    case Layout::ThreeD:
      return rows % 2 == 0 ? v.view({2, rows / 2, cols}) : v.view({1, rows, cols});
    default:
      return v;
  }
}

void check_random_layer_case(int index, torch::Device device) {
  std::mt19937_64 rng(0x5eed0000 + index);
  torch::manual_seed(index);
  const auto recipe = pick_of<Recipe>(rng, {Recipe::Global, Recipe::Mixed});
  const int64_t M = pick(rng, 0, 19) == 0 ? 0 : draw_size(rng, 300);
  const int64_t K = draw_size(rng, 300), N = draw_size(rng, 300);
  const std::vector<int64_t> groups = {0, 16, 32, 64, 128, 7, 100, 4096};
  const int64_t G_in = pick_of(rng, groups), G_out = pick_of(rng, groups);
  const std::vector<torch::ScalarType> dtypes = {torch::kFloat, torch::kBFloat16, torch::kHalf};
  const auto x_dtype = pick_of(rng, dtypes), w_dtype = pick_of(rng, dtypes);
  const bool with_bias = pick(rng, 0, 3) != 0;
  const std::vector<Layout> layouts = {Layout::Contiguous, Layout::Transposed,
                                       Layout::EveryOtherColumn, Layout::ExpandedRows,
                                       Layout::ThreeD};
  const auto x_layout = pick_of(rng, layouts), dy_layout = pick_of(rng, layouts);
  // fp16 tops out at 65504: there, x stays small enough for dW = dy^T x to fit.
  const bool half = x_dtype == torch::kHalf || w_dtype == torch::kHalf;
  const double x_scale = std::pow(10.0, static_cast<double>(pick(rng, -3, half ? 0 : 3)));
  CAPTURE(index, name_of(recipe), M, K, N, G_in, G_out, x_dtype, w_dtype, with_bias,
          layout_name(x_layout), layout_name(dy_layout), x_scale);

  LayerRun run;
  const double bound = 1.0 / std::sqrt(static_cast<double>(K));
  run.weight = ((torch::rand({N, K}) * 2 - 1) * bound).to(w_dtype).to(device).requires_grad_();
  if (with_bias) {
    run.bias = ((torch::rand({N}) * 2 - 1) * bound).to(w_dtype).to(device).requires_grad_();
  }
  auto x = laid_out(spread_randn({M, K}) * x_scale, x_layout, x_dtype, device);
  x = x.detach().requires_grad_();  // a leaf with x's layout: its gradient is dx
  run.x = x;
  run.y = recipe_fn(recipe, G_in, G_out)(run.x, run.weight, run.bias);
  auto dy = laid_out(spread_randn({M, N}),
                     dy_layout == Layout::ThreeD ? Layout::Contiguous : dy_layout, x_dtype, device);
  run.dy = dy.reshape(run.y.sizes());
  run.y.backward(run.dy);
  REQUIRE(run.y.sizes().back() == N);
  check_recipe_matches(run, recipe, G_in, G_out);
}

}  // namespace

FP8NN_CPU_AND_CUDA_CASE(
    "300 random layer cases (shapes, groups, dtypes, layouts) match the emulation",
    [](torch::Device device) {
      for (int i = 0; i < random_case_count(kLayerCases); ++i) check_random_layer_case(i, device);
    })
