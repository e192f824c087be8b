// LinearFP8Mixed on the CPU reference path: forward and all three gradients against an
// independent FP8 emulation (group scales along K, multi-group rows for K, N > 4096), against a
// high-precision torch::nn::Linear, per-row accuracy, the group size table, empty batches,
// needs_input_grad, training, and the GPU against the same emulation.

#include <fp8nn/fp8nn.h>

#include "linear_cases.h"
#include "test_support.h"

#include <iostream>
#include <vector>

namespace F = fp8nn::functional;
using namespace fp8nn::test;

namespace {

LayerFn mixed(int64_t G_in, int64_t G_out) {
  return [=](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
    return F::linear_fp8_mixed(x, w, b, G_in, G_out);
  };
}

using Shape = LayerShape;
const auto& kShapes = kLayerShapes;  // with the table's group sizes, two groups per row

}  // namespace

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

TEST_CASE("Mixed forward and all three gradients equal the FP8 emulation") {
  seed_torch();
  for (const auto& shape : kShapes) {
    const int64_t G_in = fp8nn::default_group_size(shape.x.back());
    const int64_t G_out = fp8nn::default_group_size(shape.out_features);
    for (auto x_dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
      for (auto w_dtype : {torch::kFloat, torch::kBFloat16}) {
        for (bool with_bias : {true, false}) {
          CAPTURE(shape.x, shape.out_features, G_in, G_out, x_dtype, w_dtype, with_bias);
          const auto run = run_layer(mixed(G_in, G_out), shape.x, shape.out_features, x_dtype,
                                     w_dtype, with_bias);
          const auto ref = emulate_mixed(run.x2d(), run.weight, run.bias, run.dy2d(), G_in, G_out);
          // dW: computed in x's dtype, then stored in the weight's: two roundings.
          check_matches(run, ref, unit_roundoff(x_dtype) + unit_roundoff(w_dtype), false);
        }
      }
    }
  }
}

TEST_CASE("Mixed with explicit group sizes (groups ending short) equals the FP8 emulation") {
  seed_torch();
  for (const auto& [G_in, G_out] : std::vector<std::pair<int64_t, int64_t>>{{128, 128}, {5, 7}}) {
    CAPTURE(G_in, G_out);
    const auto run =
        run_layer(mixed(G_in, G_out), {2, 9, 300}, 200, torch::kFloat, torch::kFloat, true);
    const auto ref = emulate_mixed(run.x2d(), run.weight, run.bias, run.dy2d(), G_in, G_out);
    check_matches(run, ref, unit_roundoff(torch::kFloat), /*fp8_weight_grad=*/false);
  }
}

TEST_CASE("Mixed close to a high-precision torch::nn::Linear within FP8's error") {
  seed_torch();
  const std::vector<Shape> shapes = {
      {{256, 256}, 256}, {{4, 64, 512}, 128}, {{64, 5000}, 64}, {{16, 64}, 4100}};
  for (const auto& shape : shapes) {
    CAPTURE(shape.x, shape.out_features);
    fp8nn::LinearFP8Mixed layer(shape.x.back(), shape.out_features);
    const auto e = error_vs_high_precision(layer, shape.x);
    std::cout << "Mixed vs fp64 Linear x" << torch::IntArrayRef(shape.x)
              << " N=" << shape.out_features << " (G_in=" << layer->group_size_in()
              << ", G_out=" << layer->group_size_out() << "): rel.err y " << e.y << ", dx " << e.dx
              << ", dW " << e.dw << ", db " << e.db << std::endl;
    CHECK(e.y <= kForwardMax);
    CHECK(e.y >= kForwardMin);
    CHECK(e.dx <= kGradMax);
    CHECK(e.dx >= kGradMin);
    CHECK(e.dw <= kHighPrecisionMax);
    CHECK(e.db <= kHighPrecisionMax);
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

TEST_CASE("Mixed empty batch: empty output, zero weight and bias gradients") {
  for (const std::vector<int64_t> shape : {std::vector<int64_t>{0, 24}, {3, 0, 24}}) {
    CAPTURE(shape);
    fp8nn::LinearFP8Mixed layer(24, 16);
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

TEST_CASE("Mixed computes only the gradients that are wanted") {
  seed_torch();
  fp8nn::LinearFP8Mixed layer(fp8nn::LinearFP8Options(32, 16).bias(false));
  SECTION("input without requires_grad") {
    layer(torch::randn({8, 32})).sum().backward();
    CHECK(layer->weight.grad().defined());
  }
  SECTION("frozen weight") {
    layer->weight.requires_grad_(false);
    const auto x = torch::randn({8, 32}).requires_grad_();
    layer(x).sum().backward();
    CHECK(x.grad().defined());
    CHECK_FALSE(layer->weight.grad().defined());
  }
}

TEST_CASE("a tiny LinearFP8Mixed MLP trains with SGD and AdamW") {
  seed_torch();
  for (bool adamw : {false, true}) {
    CAPTURE(adamw);
    const auto [first, last] = train_tiny_mlp<fp8nn::LinearFP8Mixed>(adamw);
    std::cout << "Mixed MLP " << (adamw ? "AdamW" : "SGD") << ": loss " << first << " -> " << last
              << std::endl;
    CHECK(last < 0.3 * first);
  }
}

TEST_CASE("Mixed on CUDA equals the FP8 emulation, like the CPU") {
  FP8NN_SKIP_WITHOUT_CUDA();
  seed_torch();
  for (const auto& shape : kShapes) {
    const int64_t G_in = fp8nn::default_group_size(shape.x.back());
    const int64_t G_out = fp8nn::default_group_size(shape.out_features);
    for (auto x_dtype : {torch::kFloat, torch::kBFloat16}) {
      CAPTURE(shape.x, shape.out_features, x_dtype);
      const auto run = run_layer(mixed(G_in, G_out), shape.x, shape.out_features, x_dtype,
                                 torch::kFloat, true, torch::kCUDA);
      const auto ref = emulate_mixed(run.x2d(), run.weight, run.bias, run.dy2d(), G_in, G_out);
      check_matches(run, ref, unit_roundoff(x_dtype) + unit_roundoff(torch::kFloat), false);
      fp8nn::LinearFP8Mixed layer(shape.x.back(), shape.out_features);
      const auto x = torch::randn(shape.x);
      check_module_on_cuda_matches_cpu(layer, x);
    }
  }
}
