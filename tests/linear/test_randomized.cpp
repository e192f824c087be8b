// Randomised cases with fixed seeds (issue #8): hundreds of layer runs with random shapes, group
// sizes, dtypes and layouts against the oracle's FP8 emulation (on CUDA: within the tensor-core
// bounds), and hundreds of quantizations, bit for bit against the oracle (on CUDA: against the CPU
// too). Case i always draws the same case; FP8NN_TEST_REDUCED runs the first few only.

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace fp8nn::test;
using fp8nn::Recipe;

namespace {

constexpr int kLayerCases = 300;
constexpr int kQuantizeCases = 400;
constexpr int kReducedCases = 16;

int case_count(int full) { return reduced_test_set() ? std::min(full, kReducedCases) : full; }

// Uniform integer in [low, high].
int64_t pick(std::mt19937_64& rng, int64_t low, int64_t high) {
  return std::uniform_int_distribution<int64_t>(low, high)(rng);
}

template <typename T>
T pick_of(std::mt19937_64& rng, const std::vector<T>& choices) {
  return choices[static_cast<size_t>(pick(rng, 0, static_cast<int64_t>(choices.size()) - 1))];
}

// A size: mostly small and odd, sometimes a multiple of 16, sometimes larger.
int64_t draw_size(std::mt19937_64& rng, int64_t max_large) {
  switch (pick(rng, 0, 5)) {
    case 0:
      return 16 * pick(rng, 1, 8);
    case 1:
      return pick(rng, 1, max_large);
    default:
      return pick(rng, 1, 48);
  }
}

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

// ---- quantize ----------------------------------------------------------------------------------

void check_random_quantize_case(int index, torch::Device device) {
  std::mt19937_64 rng(0x9a9e0000 + index);
  torch::manual_seed(10000 + index);
  const int dims = static_cast<int>(pick(rng, 1, 3));
  std::vector<int64_t> sizes;
  for (int d = 0; d < dims; ++d)
    sizes.push_back(d + 1 == dims ? draw_size(rng, 600) : pick(rng, 1, 9));
  if (pick(rng, 0, 24) == 0) sizes[0] = 0;
  const auto dtype =
      pick_of<torch::ScalarType>(rng, {torch::kFloat, torch::kBFloat16, torch::kHalf});
  const auto format =
      pick_of(rng, std::vector<fp8nn::Format>{fp8nn::Format::E4M3, fp8nn::Format::E5M2});
  const int64_t group = pick_of<int64_t>(rng, {0, 0, 16, 32, 64, 128, 7, 100, 4096});
  // Magnitudes over most of each dtype's range, so scales overflow to FLT_MAX and values saturate
  // and round to subnormals in places.
  const int exponent = dtype == torch::kHalf ? static_cast<int>(pick(rng, -6, 3))
                                             : static_cast<int>(pick(rng, -38, 30));
  auto values = spread_randn(sizes) * std::pow(10.0, exponent);
  if (dtype == torch::kHalf) values.clamp_(-6e4, 6e4);                          // finite in fp16
  if (pick(rng, 0, 4) == 0 && values.numel() > 0) values.select(0, 0).zero_();  // a zero row
  const auto x = values.to(dtype).to(device);
  const bool with_transpose = group == 0 && dims == 2 && pick(rng, 0, 1) == 1;
  CAPTURE(index, sizes, dtype, fp8nn::name_of(format), group, exponent, with_transpose);

  const auto want = fp8nn::test::quantize(x, format, group);  // the oracle
  const auto& want_data = want.data;
  const auto& want_scale_inv = want.scale_inv;
  fp8nn::QuantizedTensor got;
  if (with_transpose) {
    const auto pair = fp8nn::functional::quantize_with_transpose(x, format);
    got = pair.quantized;
    CHECK(count_bit_differences(pair.transposed.data, want_data.t().contiguous()) == 0);
  } else if (group == 0) {
    got = fp8nn::functional::quantize(x, format);
  } else {
    got = fp8nn::functional::quantize_per_group(x, format, group);
  }
  REQUIRE(got.data.device() == x.device());
  CHECK(count_bit_differences(got.data, want_data) == 0);
  CHECK(count_bit_differences(got.scale_inv.reshape(want_scale_inv.sizes()), want_scale_inv) == 0);
  if (device.is_cuda()) {  // and the CPU path agrees with both
    const auto cpu = group == 0 ? fp8nn::functional::quantize(x.cpu(), format)
                                : fp8nn::functional::quantize_per_group(x.cpu(), format, group);
    CHECK(count_bit_differences(got.data, cpu.data) == 0);
  }
}

}  // namespace

TEST_CASE("300 random layer cases (shapes, groups, dtypes, layouts) match the emulation") {
  for (int i = 0; i < case_count(kLayerCases); ++i) check_random_layer_case(i, torch::kCPU);
}

TEST_CASE("CUDA: 300 random layer cases match the emulation within the tensor-core bounds") {
  FP8NN_SKIP_WITHOUT_CUDA();
  for (int i = 0; i < case_count(kLayerCases); ++i) check_random_layer_case(i, torch::kCUDA);
}

TEST_CASE("400 random quantizations equal the reference bit for bit") {
  for (int i = 0; i < case_count(kQuantizeCases); ++i) check_random_quantize_case(i, torch::kCPU);
}

TEST_CASE("CUDA: 400 random quantizations equal the reference and the CPU bit for bit") {
  FP8NN_SKIP_WITHOUT_CUDA();
  for (int i = 0; i < case_count(kQuantizeCases); ++i) check_random_quantize_case(i, torch::kCUDA);
}
