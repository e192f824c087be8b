// Bad input to both FP8 layers: each raises a c10::Error (ValueError for shapes and sizes,
// TypeError for dtypes) naming the layer, what was expected and what came, and leaves
// parameters and gradients as they were. NaN/Inf propagate (never become finite), or raise
// with check_finite.

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"

#include <cmath>
#include <string>
#include <vector>

namespace F = fp8nn::functional;

namespace {

using fp8nn::test::check_error;
using fp8nn::test::name_of;
using fp8nn::test::snapshot;
using fp8nn::test::unchanged;

template <typename Layer>
void check_input_errors() {
  const std::string name = name_of<Layer>();
  Layer layer(16, 8);
  layer(torch::randn({4, 16})).sum().backward();  // gradients exist, so "untouched" means something
  const auto before = snapshot(*layer);
  check_error<c10::ValueError>(
      [&] {
        layer(torch::randn({4, 17}));
      },
      {name, "in_features=16", "[4, 17]"});
  check_error<c10::ValueError>([&] { layer(torch::randn({16})); }, {name, "1-d", "[16]"});
  check_error<c10::ValueError>([&] { layer(torch::tensor(1.0f)); }, {name, "0-d"});
  for (auto dtype : {torch::kInt, torch::kLong, torch::kDouble, torch::kFloat8_e4m3fn,
                     torch::kFloat8_e5m2, torch::kBool}) {
    CAPTURE(dtype);
    std::ostringstream got;
    got << dtype;
    check_error<c10::TypeError>(
        [&] {
          layer(torch::zeros({4, 16}, dtype));
        },
        {name, "float, half or bfloat16", got.str()});
  }
  // Another device than the weight's: the meta device stands in for a GPU on any machine.
  check_error<c10::Error>(
      [&] {
        layer(torch::zeros({4, 16}, torch::kMeta));
      },
      {name, "cpu", "meta"});
  CHECK(unchanged(*layer, before));
}

template <typename Layer>
void check_construction_errors() {
  const std::string name = name_of<Layer>();
  check_error<c10::ValueError>([] { Layer(0, 8); }, {name, "in_features > 0", "got 0"});
  check_error<c10::ValueError>([] { Layer(8, -3); }, {name, "out_features > 0", "got -3"});
  check_error<c10::ValueError>([] { Layer(fp8nn::LinearFP8Options(8, 8).group_size_in(-1)); },
                               {name, "group_size_in", "got -1"});
  check_error<c10::ValueError>([] { Layer(fp8nn::LinearFP8Options(8, 8).group_size_out(-64)); },
                               {name, "group_size_out", "got -64"});
}

// Wherever high precision is non-finite, the FP8 layer is too (it may be non-finite in more
// places: one NaN poisons a shared scale).
template <typename Layer>
void check_non_finite_propagates(float bad) {
  Layer layer(32, 16);
  torch::nn::Linear reference(32, 16);
  {
    torch::NoGradGuard no_grad;
    reference->weight.copy_(layer->weight);
    reference->bias.copy_(layer->bias);
  }
  const auto never_finite_where = [](const torch::Tensor& fp8, const torch::Tensor& hp) {
    const auto hp_bad = ~torch::isfinite(hp);
    CHECK(hp_bad.any().item<bool>());
    CHECK((~torch::isfinite(fp8)).masked_select(hp_bad).all().item<bool>());
  };
  for (bool in_dy : {false, true}) {
    CAPTURE(bad, in_dy);
    auto x = torch::randn({8, 32});
    auto dy = torch::randn({8, 16});
    (in_dy ? dy[5][3] : x[5][3]) = bad;
    const auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
    layer->zero_grad();
    reference->zero_grad();
    const auto y = layer(x1), y_hp = reference(x2);
    if (!in_dy) never_finite_where(y, y_hp);
    y.backward(dy);
    y_hp.backward(dy);
    never_finite_where(layer->weight.grad(), reference->weight.grad());
    if (in_dy) {  // dx = dy W and db = sum dy do not depend on x
      never_finite_where(x1.grad(), x2.grad());
      never_finite_where(layer->bias.grad(), reference->bias.grad());
    }
  }
}

template <typename Layer>
void check_finite_option() {
  const std::string name = name_of<Layer>();
  Layer layer(fp8nn::LinearFP8Options(16, 8).check_finite(true));
  layer(torch::randn({4, 16})).sum().backward();
  const auto before = snapshot(*layer);
  auto x = torch::randn({4, 16});
  x[2][7] = NAN;
  check_error<c10::ValueError>([&] { layer(x); }, {name, "input", "NaN or Inf"});
  const auto y = layer(torch::randn({4, 16}).requires_grad_());
  auto dy = torch::randn({4, 8});
  dy[1][1] = INFINITY;
  check_error<c10::Error>([&] { y.backward(dy); }, {name, "output gradient", "NaN or Inf"});
  CHECK(unchanged(*layer, before));
}

}  // namespace

TEMPLATE_TEST_CASE("bad input: wrong shape, dtype or device raise, naming the layer", "",
                   fp8nn::LinearFP8Global, fp8nn::LinearFP8Mixed) {
  check_input_errors<TestType>();
}

TEST_CASE("constructing with features <= 0 or negative group sizes raises c10::ValueError") {
  check_construction_errors<fp8nn::LinearFP8Global>();
  check_construction_errors<fp8nn::LinearFP8Mixed>();
}

TEST_CASE("the functional forms check weight, bias and group sizes") {
  const auto x = torch::randn({4, 16});
  const auto w = torch::randn({8, 16});
  const std::string global = "fp8nn::functional::linear_fp8_global";
  const std::string mixed = "fp8nn::functional::linear_fp8_mixed";
  check_error<c10::TypeError>([&] { F::linear_fp8_global(x, w.to(torch::kInt), {}); },
                              {global, "weight", "Int"});
  check_error<c10::TypeError>([&] { F::linear_fp8_global(x, w.to(torch::kFloat8_e4m3fn), {}); },
                              {global, "weight", "Float8_e4m3fn"});
  check_error<c10::ValueError>([&] { F::linear_fp8_global(x, w, torch::zeros({9})); },
                               {global, "bias of shape [8]", "[9]"});
  check_error<c10::ValueError>([&] { F::linear_fp8_global(x, w[0], {}); }, {global, "2-d weight"});
  check_error<c10::ValueError>([&] { F::linear_fp8_mixed(x, w, {}, 0, 64); },
                               {mixed, "G_in > 0", "got 0"});
  check_error<c10::ValueError>([&] { F::linear_fp8_mixed(x, w, {}, 64, -1); },
                               {mixed, "G_out > 0", "got -1"});
  check_error<c10::ValueError>(
      [&] { F::linear_fp8_mixed(x, w, {}, 0, 64, F::LinearFP8FuncOptions().name("my.layer")); },
      {"my.layer", "G_in"});
}

TEST_CASE("NaN and Inf in x or dy give non-finite outputs and gradients, never finite ones") {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    check_non_finite_propagates<fp8nn::LinearFP8Global>(bad);
    check_non_finite_propagates<fp8nn::LinearFP8Mixed>(bad);
  }
}

TEST_CASE("check_finite(true) raises on NaN/Inf in x or dy, naming the layer, changing nothing") {
  check_finite_option<fp8nn::LinearFP8Global>();
  check_finite_option<fp8nn::LinearFP8Mixed>();
}

// Backward reads W itself (it rebuilds W's transposed FP8 copy), so, as with torch::nn::Linear,
// an in-place write of W between forward and backward is autograd's version-check error, never a
// gradient computed from a different W.
TEST_CASE("writing W in place between forward and backward is autograd's error, as for Linear") {
  fp8nn::LinearFP8Global layer(fp8nn::LinearFP8Options(32, 16));
  const auto y = layer(torch::randn({8, 32}, torch::requires_grad()));
  {
    torch::NoGradGuard no_grad;
    layer->weight.add_(1.0);
  }
  check_error<c10::Error>([&] { y.sum().backward(); }, {"modified by an inplace operation"});
}
