#pragma once
// Running an FP8 linear layer (functional form) forward and backward on random data, and checking
// the result against the oracle (oracle.h). Shared by the Global and Mixed tests.

#include "random_cases.h"
#include "test_support.h"
#include "tolerance.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <vector>

namespace fp8nn::test {

using LayerFn = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& weight,
                                            const torch::Tensor& bias)>;

/// One forward + backward: leaf tensors (their .grad() filled), the output and its gradient.
struct LayerRun {
  torch::Tensor x, weight, bias, y, dy;
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }
  torch::Tensor x2d() const { return x.detach().reshape({-1, in_features()}); }
  torch::Tensor dy2d() const { return dy.reshape({-1, out_features()}); }
};

/// Parameters initialised like torch::nn::Linear, input of `x_shape`, random output gradient.
inline LayerRun run_layer(const LayerFn& layer, std::vector<int64_t> x_shape, int64_t out_features,
                          torch::ScalarType x_dtype, torch::ScalarType weight_dtype, bool with_bias,
                          torch::Device device = torch::kCPU) {
  const int64_t in_features = x_shape.back();
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  LayerRun run;
  const auto leaf = [&](const torch::Tensor& t, torch::ScalarType dtype) {
    return t.to(dtype).to(device).requires_grad_();
  };
  run.weight = leaf((torch::rand({out_features, in_features}) * 2 - 1) * bound, weight_dtype);
  if (with_bias) run.bias = leaf((torch::rand({out_features}) * 2 - 1) * bound, weight_dtype);
  run.x = leaf(spread_randn(x_shape), x_dtype);
  run.y = layer(run.x, run.weight, run.bias);
  auto y_shape = x_shape;
  y_shape.back() = out_features;
  run.dy = spread_randn(y_shape).to(x_dtype).to(device);
  run.y.backward(run.dy);
  return run;
}

/// Forward and all three gradients equal `ref` within fp32 accumulation and the rounding of
/// the dtype each result is returned in (`dw_roundoff`: the relative rounding the weight gradient
/// went through, which may be two roundings). On CUDA the FP8 products are held to the tensor-core
/// accumulation bounds (forward fast, backward precise); `fp8_weight_grad` is false for Mixed,
/// whose weight gradient is a high-precision product.
inline void check_matches(const LayerRun& run, const LinearReference& ref, double dw_roundoff,
                          bool fp8_weight_grad = true) {
  const auto device = run.x.device();
  const double y_accumulation = accumulation_relative(device, run.in_features(), /*fast=*/true);
  const double dx_accumulation = accumulation_relative(device, run.out_features(), false);
  const double dw_accumulation =
      fp8_weight_grad ? accumulation_relative(device, run.x.numel() / run.in_features(), false)
                      : kAccumulationRelative;
  const auto x_dtype = run.x.scalar_type();
  REQUIRE(run.y.scalar_type() == x_dtype);
  REQUIRE(run.y.device() == run.x.device());
  REQUIRE(run.x.grad().defined());
  REQUIRE(run.weight.grad().defined());
  REQUIRE(run.x.grad().sizes() == run.x.sizes());
  REQUIRE(run.weight.grad().sizes() == run.weight.sizes());
  CHECK(run.x.grad().scalar_type() == x_dtype);
  CHECK(run.weight.grad().scalar_type() == run.weight.scalar_type());
  CHECK(tolerance_ratio(run.y.reshape({-1, run.out_features()}), ref.y, x_dtype, y_accumulation) <=
        1.0);
  CHECK(tolerance_ratio(run.x.grad().reshape({-1, run.in_features()}), ref.dx, x_dtype,
                        dx_accumulation) <= 1.0);
  // dW is rounded to x's dtype first where it is a high-precision product (Mixed).
  const double dw_absolute = subnormal_half_step(run.weight.scalar_type()) +
                             (fp8_weight_grad ? 0.0 : subnormal_half_step(x_dtype));
  CHECK(tolerance_ratio(run.weight.grad(), ref.dw, dw_roundoff, dw_accumulation, dw_absolute) <=
        1.0);
  if (run.bias.defined()) {
    REQUIRE(run.bias.grad().defined());
    CHECK(run.bias.grad().scalar_type() == run.bias.scalar_type());
    CHECK(tolerance_ratio(run.bias.grad(), ref.db, run.bias.scalar_type()) <= 1.0);
  }
}

/// The same FP8 operands on both devices; only the accumulation differs (fast tensor-core
/// accumulation on CUDA): |gpu - cpu| <= (CUDA bound + CPU bound) of the sum of |terms|, the
/// terms taken from the unquantized x and W with 2^-4 headroom per factor for E4M3 rounding.
template <typename Layer>
void check_module_on_cuda_matches_cpu(Layer& layer, const torch::Tensor& x) {
  const auto cpu = layer(x);
  const int64_t k = x.size(-1);
  auto magnitude = x.abs().matmul(layer->weight.abs().t()) * (1.0 + 0x1p-3);
  if (layer->bias.defined()) magnitude = magnitude + layer->bias.abs();
  const double bound = accumulation_relative(torch::kCUDA, k, /*fast=*/true) +
                       accumulation_relative(torch::kCPU, k, true);
  layer->to(torch::kCUDA);
  const auto gpu = layer(x.cuda()).cpu();
  layer->to(torch::kCPU);
  CHECK(((gpu - cpu).abs() <= magnitude * bound + 1e-30).all().template item<bool>());
}

}  // namespace fp8nn::test

namespace fp8nn::test {

/// ||layer - reference|| / ||reference|| for the output and each gradient, the reference being a
/// torch::nn::Linear with the same parameters run in fp64.
struct ErrorFigures {
  double y = 0, dx = 0, dw = 0, db = 0;
};

template <typename Layer>
ErrorFigures error_vs_high_precision(Layer layer, const std::vector<int64_t>& x_shape) {
  const auto& options = layer->options;
  torch::nn::Linear reference(
      torch::nn::LinearOptions(options.in_features(), options.out_features()).bias(options.bias()));
  {
    torch::NoGradGuard no_grad;
    reference->weight.copy_(layer->weight);
    if (options.bias()) reference->bias.copy_(layer->bias);
  }
  reference->to(torch::kDouble);
  const auto x = torch::randn(x_shape).requires_grad_();
  const auto x64 = x.detach().to(torch::kDouble).requires_grad_();
  const auto y = layer(x);
  const auto y64 = reference(x64);
  const auto dy = torch::randn(y.sizes());
  y.backward(dy);
  y64.backward(dy.to(torch::kDouble));
  ErrorFigures figures;
  figures.y = relative_error(y, y64);
  figures.dx = relative_error(x.grad(), x64.grad());
  figures.dw = relative_error(layer->weight.grad(), reference->weight.grad());
  if (options.bias()) figures.db = relative_error(layer->bias.grad(), reference->bias.grad());
  return figures;
}

/// Trains 16 -> 64 -> 16 (ReLU) on a fixed random regression task for `steps` full-batch steps;
/// returns the first and the last loss.
template <typename Layer>
std::pair<double, double> train_tiny_mlp(bool adamw, int steps = 120) {
  torch::nn::Sequential model(Layer(16, 64), torch::nn::ReLU(), Layer(64, 16));
  const auto inputs = torch::randn({256, 16});
  const auto targets = torch::tanh(inputs.matmul(torch::randn({16, 16}) / 4.0)) * 2.0;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (adamw) {
    optimizer = std::make_unique<torch::optim::AdamW>(model->parameters(),
                                                      torch::optim::AdamWOptions(1e-2));
  } else {
    optimizer = std::make_unique<torch::optim::SGD>(model->parameters(),
                                                    torch::optim::SGDOptions(0.05).momentum(0.9));
  }
  double first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    optimizer->zero_grad();
    const auto loss = torch::mse_loss(model->forward(inputs), targets);
    loss.backward();
    optimizer->step();
    last = loss.item<double>();
    if (step == 0) first = last;
  }
  return {first, last};
}

/// A layer test's shape: x's sizes (any leading dims) and out_features.
struct LayerShape {
  std::vector<int64_t> x;
  int64_t out_features;
};
/// Odd sizes, a 3-d input, K > 4096 and N > 4096 (two groups per row for Mixed's table sizes).
inline const std::vector<LayerShape> kLayerShapes = {
    {{3, 17}, 5}, {{32, 64}, 48}, {{2, 7, 96}, 128}, {{6, 5000}, 32}, {{4, 80}, 4100}};

// FP8 vs high precision. FP8 rounding is random-like: a format with p mantissa bits leaves an rms
// relative error of about 2^-p / sqrt(12) * 0.74 (0.74 = rms of 1/mantissa over [1, 2)): 0.027
// for E4M3 and 0.053 for E5M2. The errors of a product's two operands add in quadrature: forward
// (E4M3 x E4M3) ~0.038, FP8 gradients (E5M2 x E4M3) ~0.059. The bounds leave 1.5x room; the
// floors prove that the products really were quantized. High-precision results (bias gradient,
// Mixed's weight gradient) are fp32 against fp64: a few ulp.
constexpr double kForwardMax = 0.057, kForwardMin = 0.015;
constexpr double kGradMax = 0.09, kGradMin = 0.025;
constexpr double kHighPrecisionMax = 1e-5;

}  // namespace fp8nn::test
