// LinearFP8Global on the CPU reference path: forward and all three gradients against an
// independent FP8 emulation, against a high-precision torch::nn::Linear, empty batches,
// needs_input_grad, training, and the GPU against the same emulation.

#include <fp8nn/fp8nn.h>

#include "linear_cases.h"
#include "test_support.h"

#include <iostream>
#include <vector>

namespace F = fp8nn::functional;
using namespace fp8nn::test;

namespace {

const LayerFn kGlobal = [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return F::linear_fp8_global(x, w, b);
};

using Shape = LayerShape;
const auto& kShapes = kLayerShapes;
constexpr double kBiasGradMax = kHighPrecisionMax;  // an fp32 sum against fp64

}  // namespace

TEST_CASE("Global forward and all three gradients equal the FP8 emulation") {
  seed_torch();
  for (const auto& shape : kShapes) {
    for (auto x_dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
      for (auto w_dtype : {torch::kFloat, torch::kBFloat16}) {
        for (bool with_bias : {true, false}) {
          CAPTURE(shape.x, shape.out_features, x_dtype, w_dtype, with_bias);
          const auto run =
              run_layer(kGlobal, shape.x, shape.out_features, x_dtype, w_dtype, with_bias);
          const auto ref = emulate_global(run.x2d(), run.weight, run.bias, run.dy2d());
          check_matches(run, ref, unit_roundoff(w_dtype));
        }
      }
    }
  }
}

TEST_CASE("Global module: leading dims kept, strided input accepted, output in x's dtype") {
  seed_torch();
  fp8nn::LinearFP8Global layer(fp8nn::LinearFP8Options(48, 32));
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

TEST_CASE("Global close to a high-precision torch::nn::Linear within FP8's error") {
  seed_torch();
  const std::vector<Shape> shapes = {{{256, 256}, 256}, {{4, 64, 512}, 128}, {{64, 5000}, 64}};
  for (const auto& shape : shapes) {
    CAPTURE(shape.x, shape.out_features);
    fp8nn::LinearFP8Global layer(shape.x.back(), shape.out_features);
    const auto e = error_vs_high_precision(layer, shape.x);
    std::cout << "Global vs fp64 Linear x" << torch::IntArrayRef(shape.x)
              << " N=" << shape.out_features << ": rel.err y " << e.y << ", dx " << e.dx << ", dW "
              << e.dw << ", db " << e.db << std::endl;
    CHECK(e.y <= kForwardMax);
    CHECK(e.y >= kForwardMin);
    CHECK(e.dx <= kGradMax);
    CHECK(e.dx >= kGradMin);
    CHECK(e.dw <= kGradMax);
    CHECK(e.dw >= kGradMin);
    CHECK(e.db <= kBiasGradMax);
  }
}

TEST_CASE("Global empty batch: empty output, zero weight and bias gradients") {
  for (const std::vector<int64_t> shape : {std::vector<int64_t>{0, 24}, {3, 0, 24}}) {
    CAPTURE(shape);
    fp8nn::LinearFP8Global layer(24, 16);
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

TEST_CASE("Global computes only the gradients that are wanted") {
  seed_torch();
  fp8nn::LinearFP8Global layer(32, 16);
  SECTION("input without requires_grad") {
    const auto x = torch::randn({8, 32});
    layer(x).sum().backward();
    CHECK_FALSE(x.grad().defined());
    CHECK(layer->weight.grad().defined());
    CHECK(layer->bias.grad().defined());
  }
  SECTION("frozen weight and bias") {
    layer->weight.requires_grad_(false);
    layer->bias.requires_grad_(false);
    const auto x = torch::randn({8, 32}).requires_grad_();
    layer(x).sum().backward();
    CHECK(x.grad().defined());
    CHECK_FALSE(layer->weight.grad().defined());
    CHECK_FALSE(layer->bias.grad().defined());
  }
  SECTION("nothing wants a gradient: no graph") {
    torch::NoGradGuard no_grad;
    CHECK_FALSE(layer(torch::randn({8, 32})).requires_grad());
  }
}

TEST_CASE("a tiny LinearFP8Global MLP trains with SGD and AdamW") {
  seed_torch();
  for (bool adamw : {false, true}) {
    CAPTURE(adamw);
    const auto [first, last] = train_tiny_mlp<fp8nn::LinearFP8Global>(adamw);
    std::cout << "Global MLP " << (adamw ? "AdamW" : "SGD") << ": loss " << first << " -> " << last
              << std::endl;
    CHECK(last < 0.3 * first);
  }
}

TEST_CASE("Global on CUDA equals the FP8 emulation, like the CPU") {
  FP8NN_SKIP_WITHOUT_CUDA();
  seed_torch();
  for (const auto& shape : kShapes) {
    for (auto x_dtype : {torch::kFloat, torch::kBFloat16}) {
      CAPTURE(shape.x, shape.out_features, x_dtype);
      const auto run = run_layer(kGlobal, shape.x, shape.out_features, x_dtype, torch::kFloat, true,
                                 torch::kCUDA);
      const auto ref = emulate_global(run.x2d(), run.weight, run.bias, run.dy2d());
      check_matches(run, ref, unit_roundoff(torch::kFloat));
      // The module moved to the GPU computes what it computes on the CPU.
      fp8nn::LinearFP8Global layer(shape.x.back(), shape.out_features);
      const auto x = torch::randn(shape.x);
      check_module_on_cuda_matches_cpu(layer, x);
    }
  }
}
