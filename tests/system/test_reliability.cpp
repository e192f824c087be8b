// Both FP8 layers at the edges (issue #8), on the CPU reference path and the same cases on CUDA:
// degenerate and unaligned shapes, values at the format edges (huge, subnormal, zero), NaN/Inf
// wherever they can enter, strided/transposed/expanded operands, mixed dtypes, devices, and
// parameters replaced after construction. Every error names the layer and leaves the module
// working, with its parameters and gradients as they were.

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"

#include <array>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

using namespace fp8nn::test;
using fp8nn::Recipe;

namespace {

constexpr Recipe kRecipes[] = {Recipe::Global, Recipe::Mixed};
const torch::Device kCPU(torch::kCPU);
const torch::Device kCUDA(torch::kCUDA, 0);

std::string str(const torch::Device& device) {
  std::ostringstream s;
  s << device;
  return s.str();
}

// `sizes` with the last one replaced by n: an output's shape from its input's.
std::vector<int64_t> with_last(at::IntArrayRef sizes, int64_t n) {
  auto out = sizes.vec();
  out.back() = n;
  return out;
}

// A forward + backward of `recipe` on given values (made leaves on `device`).
LayerRun run_on(const LayerFn& layer, const torch::Tensor& x, const torch::Tensor& weight,
                const torch::Tensor& bias, const torch::Tensor& dy, torch::Device device) {
  // Fresh leaves: the callers reuse their tensors, whose gradients must not accumulate.
  const auto leaf = [&](const torch::Tensor& t) {
    return t.to(device).detach().clone().requires_grad_();
  };
  LayerRun run;
  run.x = leaf(x);
  run.weight = leaf(weight);
  if (bias.defined()) run.bias = leaf(bias);
  run.y = layer(run.x, run.weight, run.bias);
  run.dy = dy.to(device);
  run.y.backward(run.dy);
  return run;
}

void check_all_finite(const LayerRun& run) {
  CHECK(torch::isfinite(run.y).all().item<bool>());
  CHECK(torch::isfinite(run.x.grad()).all().item<bool>());
  CHECK(torch::isfinite(run.weight.grad()).all().item<bool>());
  if (run.bias.defined()) CHECK(torch::isfinite(run.bias.grad()).all().item<bool>());
}

// ---- shapes ----------------------------------------------------------------------------------

void check_degenerate_shapes(torch::Device device) {
  seed_torch();
  const std::vector<LayerShape> shapes = {{{0, 16}, 8},   {{2, 0, 16}, 8}, {{0, 1}, 1},
                                          {{5, 1}, 8},    {{5, 16}, 1},    {{1, 1}, 1},
                                          {{3, 4, 1}, 1}, {{1, 33}, 17}};
  for (const auto recipe : kRecipes) {
    for (const auto& shape : shapes) {
      for (bool with_bias : {true, false}) {
        CAPTURE(name_of(recipe), shape.x, shape.out_features, with_bias);
        const auto run = run_layer(recipe_fn(recipe), shape.x, shape.out_features, torch::kFloat,
                                   torch::kFloat, with_bias, device);
        CHECK(run.y.sizes() == torch::IntArrayRef(with_last(shape.x, shape.out_features)));
        check_recipe_matches(run, recipe);
        check_all_finite(run);
        if (run.x.numel() == 0) {  // nothing to sum: zero gradients, not garbage
          CHECK(run.weight.grad().eq(0).all().item<bool>());
          if (with_bias) CHECK(run.bias.grad().eq(0).all().item<bool>());
        }
      }
    }
  }
}

// M, K and N in turn at sizes no kernel tiles evenly (the others small and odd); Mixed also with
// groups of 16, which split K into several groups per row.
void check_unaligned_shapes(torch::Device device) {
  seed_torch();
  int index = 0;
  for (int64_t size : {1, 15, 17, 1000, 4097}) {
    const std::vector<std::array<int64_t, 3>> mkn = {
        {size, 17, 15}, {15, size, 17}, {17, 15, size}};
    for (const auto& [M, K, N] : mkn) {
      for (const auto recipe : kRecipes) {
        for (int64_t group : {int64_t{0}, int64_t{16}}) {
          if (recipe == Recipe::Global && group != 0) continue;
          const auto x_dtype = (index++ % 2 == 0) ? torch::kFloat : torch::kBFloat16;
          CAPTURE(name_of(recipe), M, K, N, group, x_dtype);
          const auto run = run_layer(recipe_fn(recipe, group, group), {M, K}, N, x_dtype,
                                     torch::kFloat, true, device);
          check_recipe_matches(run, recipe, group, group);
        }
      }
    }
  }
}

// ---- values at the edges ---------------------------------------------------------------------

// The largest magnitudes that keep every high-precision result finite for these small shapes
// (fp16 tops out at 65504: its partner operand is made small so the gradients stay in range).
double huge_of(torch::ScalarType dtype) { return dtype == torch::kHalf ? 6e4 : 1e30; }
double partner_of(torch::ScalarType dtype) { return dtype == torch::kHalf ? 1e-3 : 1.0; }
// Subnormal in each dtype.
double subnormal_of(torch::ScalarType dtype) { return dtype == torch::kHalf ? 1e-6 : 1e-40; }

torch::Tensor uniform(at::IntArrayRef shape, double bound) {
  return (torch::rand(shape, torch::kDouble) * 2 - 1) * bound;
}

void check_edge_values(torch::Device device) {
  seed_torch();
  const int64_t M = 6, K = 8, N = 8;
  for (const auto recipe : kRecipes) {
    for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
      const auto make = [&](const torch::Tensor& t) { return t.to(dtype); };
      const auto w = make(uniform({N, K}, 0.01)), b = uniform({N}, 0.01).to(torch::kFloat);
      const double huge = huge_of(dtype), partner = partner_of(dtype), tiny = subnormal_of(dtype);
      struct Case {
        const char* what;
        torch::Tensor x, weight, dy;
      };
      const std::vector<Case> cases = {
          {"huge x", make(uniform({M, K}, huge)), w, make(uniform({M, N}, partner))},
          {"huge dy", make(uniform({M, K}, partner)), w, make(uniform({M, N}, huge))},
          {"huge weight", make(uniform({M, K}, partner)), make(uniform({N, K}, huge)),
           make(uniform({M, N}, partner))},
          {"one huge x among normal values",
           make(torch::cat({uniform({1, K}, huge), uniform({M - 1, K}, partner)})), w,
           make(uniform({M, N}, partner))},
          {"subnormal x", make(uniform({M, K}, tiny)), w, make(uniform({M, N}, 1))},
          {"subnormal dy", make(uniform({M, K}, 1)), w, make(uniform({M, N}, tiny))},
          {"subnormal weight", make(uniform({M, K}, 1)), make(uniform({N, K}, tiny)),
           make(uniform({M, N}, 1))},
          {"subnormal rows among normal ones",
           make(torch::cat({uniform({3, K}, tiny), uniform({M - 3, K}, 1)})), w,
           make(uniform({M, N}, 1))},
      };
      for (const auto& c : cases) {
        CAPTURE(name_of(recipe), dtype, c.what);
        // Only the inputs' own values are out of range: they must already be finite and nonzero.
        REQUIRE(torch::isfinite(c.x).all().item<bool>());
        REQUIRE(torch::isfinite(c.dy).all().item<bool>());
        REQUIRE(torch::isfinite(c.weight).all().item<bool>());
        const auto run = run_on(recipe_fn(recipe), c.x, c.weight, b, c.dy, device);
        check_all_finite(run);
        check_recipe_matches(run, recipe);
      }
    }
  }
}

// All-zero x, weight or output gradient: exact zeros (and the bias), never NaN from 0 * inf.
void check_zeros(torch::Device device) {
  seed_torch();
  const int64_t M = 5, K = 24, N = 12;
  for (const auto recipe : kRecipes) {
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      CAPTURE(name_of(recipe), dtype);
      const auto fn = recipe_fn(recipe);
      const auto x = torch::randn({M, K}).to(dtype), w = uniform({N, K}, 0.2).to(torch::kFloat);
      const auto b = uniform({N}, 0.2).to(torch::kFloat), dy = torch::randn({M, N}).to(dtype);
      const auto bias_rows = b.to(dtype).expand({M, N}).to(device);
      {
        const auto run = run_on(fn, torch::zeros_like(x), w, b, dy, device);
        check_all_finite(run);
        CHECK(torch::equal(run.y, bias_rows));
        CHECK(run.weight.grad().eq(0).all().item<bool>());
        check_recipe_matches(run, recipe);
      }
      {
        const auto run = run_on(fn, x, torch::zeros_like(w), b, dy, device);
        check_all_finite(run);
        CHECK(torch::equal(run.y, bias_rows));
        CHECK(run.x.grad().eq(0).all().item<bool>());
        check_recipe_matches(run, recipe);
      }
      {
        const auto run = run_on(fn, x, w, b, torch::zeros_like(dy), device);
        check_all_finite(run);
        CHECK(run.x.grad().eq(0).all().item<bool>());
        CHECK(run.weight.grad().eq(0).all().item<bool>());
        CHECK(run.bias.grad().eq(0).all().item<bool>());
      }
      {
        const auto run = run_on(fn, torch::zeros_like(x), w, torch::zeros_like(b),
                                torch::zeros_like(dy), device);
        CHECK(run.y.eq(0).all().item<bool>());
        check_all_finite(run);
      }
    }
  }
}

// ---- non-finite values -------------------------------------------------------------------------

// NaN/Inf in x, the weight or dy: every result high precision makes non-finite is non-finite.
void check_non_finite(torch::Device device) {
  seed_torch();
  const int64_t M = 8, K = 32, N = 16;
  for (const auto recipe : kRecipes) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      for (const char* where : {"x", "weight", "dy"}) {
        CAPTURE(name_of(recipe), bad, where);
        auto x = torch::randn({M, K}), w = uniform({N, K}, 0.2).to(torch::kFloat);
        auto b = uniform({N}, 0.2).to(torch::kFloat), dy = torch::randn({M, N});
        const std::string at(where);
        (at == "x" ? x[5][3] : at == "weight" ? w[3][5] : dy[5][3]) = bad;
        const auto run = run_on(recipe_fn(recipe), x, w, b, dy, device);
        // High precision in fp64 on the CPU, through autograd like the layer.
        const auto x64 = x.to(torch::kDouble).requires_grad_();
        const auto w64 = w.to(torch::kDouble).requires_grad_();
        const auto b64 = b.to(torch::kDouble).requires_grad_();
        const auto y64 = torch::nn::functional::linear(x64, w64, b64);
        y64.backward(dy.to(torch::kDouble));
        CHECK((~torch::isfinite(y64)).any().item<bool>() == (at != "dy"));
        check_never_finite_where(run.y, y64);
        check_never_finite_where(run.x.grad(), x64.grad());
        check_never_finite_where(run.weight.grad(), w64.grad());
        check_never_finite_where(run.bias.grad(), b64.grad());
      }
    }
  }
}

// A module on `device` after one forward and backward of x [4, 16], with what it computed then and
// its parameters and gradients: still_works() checks that an error left all of it as it was.
template <typename Layer>
struct WorkingLayer {
  WorkingLayer(Layer module, torch::Device device) : layer(std::move(module)) {
    layer->to(device);
    x = torch::randn({4, 16}).to(device);
    layer(x).sum().backward();
    y_before = layer(x).detach();
    before = snapshot(*layer);
  }
  void still_works() {
    CHECK(unchanged(*layer, before));
    CHECK(count_bit_differences(layer(x).detach(), y_before) == 0);
  }
  Layer layer;
  torch::Tensor x, y_before;
  Snapshot before;
};

// check_finite(true): NaN/Inf in x, the weight or dy raise a c10::ValueError naming the layer and
// the culprit; afterwards the module computes what it computed before and nothing changed.
template <typename Layer>
void check_finite_option(torch::Device device) {
  seed_torch();
  const std::string name = name_of<Layer>();
  WorkingLayer<Layer> working(Layer(fp8nn::LinearFP8Options(16, 8).check_finite(true)), device);
  auto& layer = working.layer;
  const auto& x = working.x;
  for (float bad : {NAN, INFINITY}) {
    CAPTURE(bad);
    auto bad_x = x.clone();
    bad_x[2][7] = bad;
    check_error<c10::ValueError>([&] { layer(bad_x); }, {name, "input", "NaN or Inf"});
    working.still_works();
    {
      torch::NoGradGuard no_grad;
      layer->weight[1][2] = bad;
    }
    check_error<c10::ValueError>([&] { layer(x); }, {name, "weight", "NaN or Inf"});
    {
      torch::NoGradGuard no_grad;
      layer->weight.copy_(working.before.values[0]);
    }
    working.still_works();
    const auto y = layer(x.clone().requires_grad_());
    auto dy = torch::randn({4, 8}).to(device);
    dy[1][1] = bad;
    check_error<c10::Error>([&] { y.backward(dy); }, {name, "output gradient", "NaN or Inf"});
    working.still_works();
  }
}

// ---- layouts -----------------------------------------------------------------------------------

struct Results {
  torch::Tensor y, dx, dw, db;
};

// forward + backward with x and dy given as (possibly strided) views: dx through retain_grad.
Results results_of(const LayerFn& fn, const torch::Tensor& x_view, const torch::Tensor& weight,
                   const torch::Tensor& bias, const torch::Tensor& dy_view) {
  const auto w = weight.detach().clone().requires_grad_();
  const auto b = bias.detach().clone().requires_grad_();
  auto x = x_view;
  if (!x.requires_grad()) x = x.detach().requires_grad_();
  x.retain_grad();
  const auto y = fn(x, w, b);
  y.backward(dy_view);
  return {y.detach(), x.grad(), w.grad(), b.grad()};
}

void check_same_bits(const Results& got, const Results& want) {
  CHECK(count_bit_differences(got.y.contiguous(), want.y) == 0);
  CHECK(count_bit_differences(got.dx.contiguous(), want.dx) == 0);
  CHECK(count_bit_differences(got.dw, want.dw) == 0);
  CHECK(count_bit_differences(got.db, want.db) == 0);
}

// Non-contiguous, transposed, stride-0 and offset x, weight and dy compute exactly what their
// contiguous copies compute.
void check_layouts(torch::Device device) {
  seed_torch();
  const int64_t M = 12, K = 40, N = 24;
  const auto on = [&](const torch::Tensor& t) { return t.to(device); };
  for (const auto recipe : kRecipes) {
    const auto fn = recipe_fn(recipe, recipe == Recipe::Mixed ? 16 : 0, 16);
    const auto w = on(uniform({N, K}, 0.2).to(torch::kFloat));
    const auto b = on(uniform({N}, 0.2).to(torch::kFloat));
    const auto dy = on(torch::randn({M, N}));
    struct View {
      const char* what;
      torch::Tensor x;
    };
    const auto base = on(torch::randn({M, K}));
    const auto wide = on(torch::randn({M, 2 * K}));
    const auto flat = on(torch::randn({M * K + 1}));
    const std::vector<View> views = {
        {"transposed", on(base.t().contiguous()).t()},
        {"every other column", wide.slice(1, 0, 2 * K, 2)},
        {"stride-0 rows (expanded)", on(torch::randn({1, K})).expand({M, K})},
        {"stride-0 everywhere", on(torch::randn({})).expand({M, K})},
        {"storage offset of one element", flat.narrow(0, 1, M * K).view({M, K})},
        {"3-d, permuted", on(torch::randn({K, 3, M / 3})).permute({1, 2, 0})},
        {"3-d, expanded leading dims", on(torch::randn({1, 1, K})).expand({3, M / 3, K})},
    };
    for (const auto& view : views) {
      CAPTURE(name_of(recipe), view.what);
      REQUIRE(view.x.size(-1) == K);
      const auto dy_view = dy.reshape(with_last(view.x.sizes(), N));
      const auto got = results_of(fn, view.x, w, b, dy_view);
      const auto want = results_of(fn, view.x.contiguous(), w, b, dy_view.contiguous());
      check_same_bits(got, want);
    }
    // dy transposed and expanded (y.sum().backward() hands down a stride-0 gradient); the weight
    // as a transposed view.
    const auto x = on(torch::randn({M, K}));
    CAPTURE(name_of(recipe));
    check_same_bits(results_of(fn, x, w, b, on(dy.t().contiguous()).t()),
                    results_of(fn, x, w, b, dy));
    check_same_bits(results_of(fn, x, w, b, on(torch::ones({})).expand({M, N})),
                    results_of(fn, x, w, b, on(torch::ones({M, N}))));
    const auto w_t = on(w.t().contiguous()).t().detach().requires_grad_();
    const auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
    const auto w_c = w.detach().clone().requires_grad_();
    const auto y1 = fn(x1, w_t, b), y2 = fn(x2, w_c, b);
    y1.backward(dy);
    y2.backward(dy);
    CHECK(count_bit_differences(y1.detach(), y2.detach()) == 0);
    CHECK(count_bit_differences(x1.grad(), x2.grad()) == 0);
    CHECK(count_bit_differences(w_t.grad().contiguous(), w_c.grad()) == 0);
  }
}

// ---- dtypes ------------------------------------------------------------------------------------

// The rule (README "Layers", linear_functional.h): x, weight and bias may each be fp32, fp16 or
// bf16, independently; the output is in x's dtype, each gradient in its own tensor's dtype.
void check_mixed_dtypes(torch::Device device) {
  seed_torch();
  const auto dtypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};
  for (const auto recipe : kRecipes) {
    for (auto x_dtype : dtypes) {
      for (auto w_dtype : dtypes) {
        for (auto b_dtype : dtypes) {
          if (b_dtype != w_dtype && b_dtype != x_dtype && b_dtype != torch::kFloat) continue;
          CAPTURE(name_of(recipe), x_dtype, w_dtype, b_dtype);
          const auto x = torch::randn({6, 40}).to(x_dtype);
          const auto w = uniform({24, 40}, 0.15).to(w_dtype);
          const auto b = uniform({24}, 0.15).to(b_dtype);
          const auto dy = torch::randn({6, 24}).to(x_dtype);
          const auto run = run_on(recipe_fn(recipe), x, w, b, dy, device);
          CHECK(run.y.scalar_type() == x_dtype);
          CHECK(run.y.device() == run.x.device());
          CHECK(run.x.grad().scalar_type() == x_dtype);
          CHECK(run.weight.grad().scalar_type() == w_dtype);
          CHECK(run.bias.grad().scalar_type() == b_dtype);
          check_all_finite(run);
          check_recipe_matches(run, recipe);
        }
      }
    }
  }
}

// ---- bad input ---------------------------------------------------------------------------------

// 0-d, 1-d, wrong in_features and dtypes on the module's device: errors naming the layer, and
// afterwards the module computes what it did, its gradients untouched.
template <typename Layer>
void check_bad_input(torch::Device device) {
  const std::string name = name_of<Layer>();
  WorkingLayer<Layer> working(Layer(16, 8), device);
  auto& layer = working.layer;
  const auto& x = working.x;
  const auto on = torch::TensorOptions().device(device);
  check_error<c10::ValueError>([&] { layer(torch::tensor(1.0f, on)); }, {name, "0-d"});
  check_error<c10::ValueError>([&] { layer(torch::randn({16}, on)); }, {name, "1-d", "[16]"});
  check_error<c10::ValueError>(
      [&] {
        layer(torch::randn({4, 15}, on));
      },
      {name, "in_features=16", "[4, 15]"});
  check_error<c10::ValueError>(
      [&] {
        layer(torch::randn({0, 15}, on));
      },
      {name, "in_features=16", "[0, 15]"});
  check_error<c10::TypeError>(
      [&] {
        layer(torch::zeros({4, 16}, on.dtype(torch::kDouble)));
      },
      {name, "float, half or bfloat16", "Double"});
  check_error<c10::TypeError>(
      [&] {
        layer(torch::zeros({4, 16}, on.dtype(torch::kFloat8_e4m3fn)));
      },
      {name, "float, half or bfloat16", "Float8_e4m3fn"});
  working.still_works();
}

// ---- modules: devices and replaced parameters --------------------------------------------------

// A module whose parameters were replaced after construction (set_data, assignment, torch::load
// of another layer's checkpoint) raises at forward, naming the layer and the shapes; restored, it
// computes what it did, with its gradients untouched.
template <typename Layer>
void check_replaced_parameters(torch::Device device) {
  seed_torch();
  const std::string name = name_of<Layer>();
  WorkingLayer<Layer> working(Layer(16, 8), device);
  auto& layer = working.layer;
  const auto& x = working.x;
  const auto weight = layer->weight.data(), bias = layer->bias.data();
  const auto restore_and_check = [&] {
    layer->weight.set_data(weight);
    layer->bias.set_data(bias);
    working.still_works();
  };
  const auto opts = weight.options();
  layer->weight.set_data(torch::randn({9, 16}, opts));
  check_error<c10::ValueError>([&] { layer(x); }, {name, "weight of shape [8, 16]", "[9, 16]"});
  restore_and_check();
  // The input fits the replaced weight: without the check this would be a different layer.
  layer->weight.set_data(torch::randn({8, 17}, opts));
  check_error<c10::ValueError>(
      [&] {
        layer(torch::randn({4, 17}).to(device));
      },
      {name, "weight of shape [8, 16]", "[8, 17]"});
  restore_and_check();
  layer->weight.set_data(torch::randn({8, 16, 1}, opts));
  check_error<c10::ValueError>([&] { layer(x); }, {name, "weight of shape [8, 16]", "[8, 16, 1]"});
  restore_and_check();
  layer->bias.set_data(torch::randn({9}, opts));
  check_error<c10::ValueError>([&] { layer(x); }, {name, "bias of shape [8]", "[9]"});
  restore_and_check();
  layer->bias.set_data(torch::randn({1, 8}, opts));
  check_error<c10::ValueError>([&] { layer(x); }, {name, "bias of shape [8]", "[1, 8]"});
  restore_and_check();
  // Assigning the member (not the registered parameter) is checked the same way. (torch itself
  // refuses set_data with an integer tensor on a parameter.)
  const auto member = layer->weight;
  layer->weight = weight.to(torch::kInt);
  check_error<c10::TypeError>([&] { layer(x); },
                              {name, "weight", "float, half or bfloat16", "Int"});
  layer->weight = torch::randn({8, 15}, opts);
  check_error<c10::ValueError>([&] { layer(x); }, {name, "weight of shape [8, 16]", "[8, 15]"});
  layer->weight = member;
  const auto bias_member = layer->bias;
  layer->bias = torch::Tensor();
  check_error<c10::ValueError>([&] { layer(x); }, {name, "expected a bias", "got none"});
  layer->bias = bias_member;
  restore_and_check();
}

// torch::load of a checkpoint from a layer of another size replaces the parameters' shapes
// (InputArchive::read uses set_); forward then says so instead of computing another layer.
template <typename Layer>
void check_load_of_other_size() {
  const std::string name = name_of<Layer>();
  Layer other(17, 8), layer(16, 8);
  std::ostringstream stream;
  torch::save(other, stream);
  std::istringstream in(stream.str());
  torch::load(layer, in);
  check_error<c10::ValueError>(
      [&] {
        layer(torch::randn({4, 17}));
      },
      {name, "weight of shape [8, 16]", "[8, 17]"});
}

// Module on cuda:0, input elsewhere (the CPU, another GPU), or the other way round: a c10::Error
// naming the layer and both devices, nothing computed, nothing changed.
template <typename Layer>
void check_wrong_device() {
  const std::string name = name_of<Layer>();
  WorkingLayer<Layer> working(Layer(16, 8), kCUDA);
  auto& layer = working.layer;
  const auto& x = working.x;
  std::vector<torch::Device> others = {kCPU};
  if (torch::cuda::device_count() > 1) {
    others.emplace_back(torch::kCUDA, 1);
  } else {
    WARN("one CUDA device: the input on another GPU is not tried");
  }
  for (const auto& other : others) {
    CAPTURE(str(other));
    check_error<c10::Error>([&] { layer(x.to(other)); }, {name, "cuda:0", str(other)});
    working.still_works();
  }
  Layer on_cpu(16, 8);
  check_error<c10::Error>([&] { on_cpu(x); }, {name, "cpu", "cuda:0"});
}

}  // namespace

// Each case on the CPU and on CUDA. ON_BOTH_LAYERS(check): a body running check<Layer>(device)
// for both layers.
#define ON_BOTH_LAYERS(check)              \
  [](torch::Device device) {               \
    check<fp8nn::LinearFP8Global>(device); \
    check<fp8nn::LinearFP8Mixed>(device);  \
  }

FP8NN_CPU_AND_CUDA_CASE(
    "M = 0, K = 1 and N = 1 match the emulation, empty batches give zero gradients",
    check_degenerate_shapes)
FP8NN_CPU_AND_CUDA_CASE("unaligned M, K and N (1, 15, 17, 1000, 4097) match the emulation",
                        check_unaligned_shapes)
FP8NN_CPU_AND_CUDA_CASE("huge and subnormal x, weight and dy stay finite and match the emulation",
                        check_edge_values)
FP8NN_CPU_AND_CUDA_CASE("all-zero x, weight or dy give exact zeros (and the bias), never NaN",
                        check_zeros)
FP8NN_CPU_AND_CUDA_CASE(
    "NaN and Inf in x, weight or dy: non-finite wherever high precision is, never finite",
    check_non_finite)
FP8NN_CPU_AND_CUDA_CASE(
    "check_finite(true) raises on NaN/Inf in x, weight or dy, and the module still works",
    ON_BOTH_LAYERS(check_finite_option))
FP8NN_CPU_AND_CUDA_CASE(
    "strided, transposed, stride-0 and offset operands compute what contiguous ones do",
    check_layouts)
FP8NN_CPU_AND_CUDA_CASE(
    "mixed dtypes of x, weight and bias: output in x's dtype, gradients in their own",
    check_mixed_dtypes)
FP8NN_CPU_AND_CUDA_CASE(
    "0-d, 1-d, wrong-size and wrong-dtype input raise, and the module still works",
    ON_BOTH_LAYERS(check_bad_input))
FP8NN_CPU_AND_CUDA_CASE(
    "parameters replaced with the wrong shape or dtype raise at forward, naming the layer",
    ON_BOTH_LAYERS(check_replaced_parameters))

TEST_CASE("a checkpoint of another size loads, and forward then raises naming the layer") {
  check_load_of_other_size<fp8nn::LinearFP8Global>();
  check_load_of_other_size<fp8nn::LinearFP8Mixed>();
}

TEST_CASE("CUDA: module on cuda:0 with input on the CPU or another GPU is a clear error") {
  FP8NN_SKIP_WITHOUT_CUDA();
  check_wrong_device<fp8nn::LinearFP8Global>();
  check_wrong_device<fp8nn::LinearFP8Mixed>();
}
