// LinearFP8Global and LinearFP8Mixed, each case written once and run for both recipes: forward
// and all three gradients against the oracle's FP8 emulation (CPU and CUDA), against a
// high-precision torch::nn::Linear, empty batches, needs_input_grad, training; then what only
// Mixed has: the group size table, explicit group sizes, per-row accuracy.

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"
#include "linear_cases.h"
#include "test_support.h"

#include <iostream>
#include <utility>
#include <vector>

namespace F = fp8nn::functional;
using namespace fp8nn::test;

namespace {

// A recipe's layer, its functional form with the table's group sizes, and its reference.
struct Global {
  using Layer = fp8nn::LinearFP8Global;
  static constexpr const char* kName = "Global";
  // dW is an FP8 product, stored once in the weight's dtype.
  static constexpr bool kFp8WeightGrad = true;
  static double dw_roundoff(torch::ScalarType, torch::ScalarType w_dtype) {
    return unit_roundoff(w_dtype);
  }
  static LayerFn fn() { return recipe_fn(fp8nn::Recipe::Global); }
  static LinearReference reference(const LayerRun& run) {
    return emulate_global(run.x2d(), run.weight, run.bias, run.dy2d());
  }
};

struct Mixed {
  using Layer = fp8nn::LinearFP8Mixed;
  static constexpr const char* kName = "Mixed";
  // dW: a high-precision product computed in x's dtype, then stored in the weight's: two roundings.
  static constexpr bool kFp8WeightGrad = false;
  static double dw_roundoff(torch::ScalarType x_dtype, torch::ScalarType w_dtype) {
    return unit_roundoff(x_dtype) + unit_roundoff(w_dtype);
  }
  static LayerFn fn() { return recipe_fn(fp8nn::Recipe::Mixed); }
  static LinearReference reference(const LayerRun& run) {
    return emulate_mixed(run.x2d(), run.weight, run.bias, run.dy2d(),
                         fp8nn::default_group_size(run.in_features()),
                         fp8nn::default_group_size(run.out_features()));
  }
};

// kLayerShapes: with Mixed's table group sizes, two groups per row for K, N > 4096.
template <typename Recipe>
void check_matches_emulation(const LayerRun& run) {
  check_matches(run, Recipe::reference(run),
                Recipe::dw_roundoff(run.x.scalar_type(), run.weight.scalar_type()),
                Recipe::kFp8WeightGrad);
}

}  // namespace

TEMPLATE_TEST_CASE("forward and all three gradients equal the FP8 emulation", "", Global, Mixed) {
  seed_torch();
  for (const auto& shape : kLayerShapes) {
    for (auto x_dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
      for (auto w_dtype : {torch::kFloat, torch::kBFloat16}) {
        for (bool with_bias : {true, false}) {
          CAPTURE(shape.x, shape.out_features, x_dtype, w_dtype, with_bias);
          check_matches_emulation<TestType>(
              run_layer(TestType::fn(), shape.x, shape.out_features, x_dtype, w_dtype, with_bias));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("CUDA: forward and all three gradients equal the FP8 emulation, like the CPU",
                   "", Global, Mixed) {
  FP8NN_SKIP_WITHOUT_CUDA();
  seed_torch();
  for (const auto& shape : kLayerShapes) {
    for (auto x_dtype : {torch::kFloat, torch::kBFloat16}) {
      CAPTURE(shape.x, shape.out_features, x_dtype);
      check_matches_emulation<TestType>(run_layer(TestType::fn(), shape.x, shape.out_features,
                                                  x_dtype, torch::kFloat, true, torch::kCUDA));
      // The module moved to the GPU computes what it computes on the CPU.
      typename TestType::Layer layer(shape.x.back(), shape.out_features);
      check_module_on_cuda_matches_cpu(layer, torch::randn(shape.x));
    }
  }
}

TEMPLATE_TEST_CASE("module: leading dims kept, strided input accepted, output in x's dtype", "",
                   Global, Mixed) {
  seed_torch();
  typename TestType::Layer layer(fp8nn::LinearFP8Options(48, 32));
  for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    const auto x = torch::randn({2, 3, 5, 48}).to(dtype);
    const auto y = layer(x);
    CHECK(y.sizes() == torch::IntArrayRef({2, 3, 5, 32}));
    CHECK(y.scalar_type() == dtype);
    const auto y2d = layer->forward(x.reshape({30, 48}));
    CHECK(torch::equal(y.reshape({30, 32}), y2d));
    // A non-contiguous input computes the same as its contiguous copy.
    const auto strided = torch::randn({48, 30}).to(dtype).t();
    REQUIRE_FALSE(strided.is_contiguous());
    CHECK(torch::equal(layer(strided), layer(strided.contiguous())));
  }
}

TEMPLATE_TEST_CASE("close to a high-precision torch::nn::Linear within FP8's error", "", Global,
                   Mixed) {
  seed_torch();
  const std::vector<LayerShape> shapes = {
      {{256, 256}, 256}, {{4, 64, 512}, 128}, {{64, 5000}, 64}, {{16, 64}, 4100}};
  for (const auto& shape : shapes) {
    CAPTURE(shape.x, shape.out_features);
    typename TestType::Layer layer(shape.x.back(), shape.out_features);
    const auto e = error_vs_high_precision(layer, shape.x);
    std::cout << TestType::kName << " vs fp64 Linear x" << torch::IntArrayRef(shape.x)
              << " N=" << shape.out_features << ": rel.err y " << e.y << ", dx " << e.dx << ", dW "
              << e.dw << ", db " << e.db << std::endl;
    CHECK(e.y <= kForwardMax);
    CHECK(e.y >= kForwardMin);
    CHECK(e.dx <= kGradMax);
    CHECK(e.dx >= kGradMin);
    if (TestType::kFp8WeightGrad) {
      CHECK(e.dw <= kGradMax);
      CHECK(e.dw >= kGradMin);
    } else {
      CHECK(e.dw <= kHighPrecisionMax);
    }
    CHECK(e.db <= kHighPrecisionMax);  // an fp32 sum against fp64
  }
}

TEMPLATE_TEST_CASE("empty batch: empty output, zero weight and bias gradients", "", Global, Mixed) {
  for (const std::vector<int64_t> shape : {std::vector<int64_t>{0, 24}, {3, 0, 24}}) {
    CAPTURE(shape);
    typename TestType::Layer layer(24, 16);
    const auto x = torch::zeros(shape).requires_grad_();
    const auto y = layer(x);
    auto expected = shape;
    expected.back() = 16;
    CHECK(y.sizes() == torch::IntArrayRef(expected));
    y.sum().backward();
    CHECK(x.grad().sizes() == x.sizes());
    CHECK(torch::equal(layer->weight.grad(), torch::zeros({16, 24})));
    CHECK(torch::equal(layer->bias.grad(), torch::zeros({16})));
  }
}

TEMPLATE_TEST_CASE("computes only the gradients that are wanted", "", Global, Mixed) {
  seed_torch();
  const bool with_bias = GENERATE(true, false);
  CAPTURE(with_bias);
  typename TestType::Layer layer(fp8nn::LinearFP8Options(32, 16).bias(with_bias));
  SECTION("input without requires_grad") {
    const auto x = torch::randn({8, 32});
    layer(x).sum().backward();
    CHECK_FALSE(x.grad().defined());
    CHECK(layer->weight.grad().defined());
    if (with_bias) CHECK(layer->bias.grad().defined());
  }
  SECTION("frozen weight and bias") {
    layer->weight.requires_grad_(false);
    if (with_bias) layer->bias.requires_grad_(false);
    const auto x = torch::randn({8, 32}).requires_grad_();
    layer(x).sum().backward();
    CHECK(x.grad().defined());
    CHECK_FALSE(layer->weight.grad().defined());
    if (with_bias) CHECK_FALSE(layer->bias.grad().defined());
  }
  SECTION("nothing wants a gradient: no graph") {
    torch::NoGradGuard no_grad;
    CHECK_FALSE(layer(torch::randn({8, 32})).requires_grad());
  }
}

TEMPLATE_TEST_CASE("a tiny MLP trains with SGD and AdamW", "", Global, Mixed) {
  seed_torch();
  for (bool adamw : {false, true}) {
    CAPTURE(adamw);
    const auto [first, last] = train_tiny_mlp<typename TestType::Layer>(adamw);
    std::cout << TestType::kName << " MLP " << (adamw ? "AdamW" : "SGD") << ": loss " << first
              << " -> " << last << std::endl;
    CHECK(last < 0.3 * first);
  }
}

// ---- Mixed only: group scales ------------------------------------------------------------------

TEST_CASE("the group size table is min(4096, max(64, next_pow2(f)))") {
  CHECK(fp8nn::default_group_size(1) == 64);
  CHECK(fp8nn::default_group_size(64) == 64);
  CHECK(fp8nn::default_group_size(65) == 128);
  CHECK(fp8nn::default_group_size(1000) == 1024);
  CHECK(fp8nn::default_group_size(4096) == 4096);
  CHECK(fp8nn::default_group_size(5000) == 4096);
  CHECK_THROWS_AS(fp8nn::default_group_size(0), c10::ValueError);
  fp8nn::LinearFP8Mixed layer(1000, 5000);
  CHECK(layer->group_size_in() == 1024);
  CHECK(layer->group_size_out() == 4096);
  fp8nn::LinearFP8Mixed fine(fp8nn::LinearFP8Options(1000, 5000).group_size_in(128));
  CHECK(fine->group_size_in() == 128);
  CHECK(fine->group_size_out() == 4096);
}

TEST_CASE("Mixed with explicit group sizes (groups ending short) equals the FP8 emulation") {
  seed_torch();
  for (const auto& [G_in, G_out] : std::vector<std::pair<int64_t, int64_t>>{{128, 128}, {5, 7}}) {
    CAPTURE(G_in, G_out);
    const auto run = run_layer(recipe_fn(fp8nn::Recipe::Mixed, G_in, G_out), {2, 9, 300}, 200,
                               torch::kFloat, torch::kFloat, true);
    const auto ref = emulate_mixed(run.x2d(), run.weight, run.bias, run.dy2d(), G_in, G_out);
    check_matches(run, ref, unit_roundoff(torch::kFloat), /*fp8_weight_grad=*/false);
  }
}

TEST_CASE("Mixed keeps rows of very different magnitude accurate, where one scale cannot") {
  seed_torch();
  // Row magnitudes 1e-4 .. 1e4: one tensor scale flushes the small rows below E4M3's subnormals;
  // per-row scales keep every row at E4M3's ~2-4% error.
  const auto x = torch::randn({4, 256}) * torch::tensor({1e-4, 1e-1, 1e2, 1e4}).unsqueeze(1);
  const auto w = (torch::rand({64, 256}) * 2 - 1) / 16.0;
  const auto reference = x.to(torch::kDouble).matmul(w.to(torch::kDouble).t());
  const auto y_mixed = F::linear_fp8_mixed(x, w, {}, 256, 64);
  const auto y_global = F::linear_fp8_global(x, w, {});
  const double small_mixed = relative_error(y_mixed[0], reference[0]);
  const double small_global = relative_error(y_global[0], reference[0]);
  std::cout << "row of magnitude 1e-4 next to 1e4: rel.err Mixed " << small_mixed << ", Global "
            << small_global << std::endl;
  CHECK(small_mixed < kForwardMax);
  CHECK(small_global > 0.5);
  for (int64_t row = 0; row < 4; ++row) {
    CHECK(relative_error(y_mixed[row], reference[row]) < kForwardMax);
  }
}
