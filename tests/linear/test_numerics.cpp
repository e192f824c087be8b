// The numerics monitor (fp8nn/numerics.h) through the layers: its figures equal a count made here
// from the definition (docs/design.md, "Numerics monitor") with plain loops, for both presets on
// the CPU and on CUDA; it sees what outliers do to per-tensor and per-group scaling; it measures
// the products' errors every N steps; it is enabled and read model-wide.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <cfloat>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

using fp8nn::LinearFP8Options;
using fp8nn::NumericsMonitor;
using fp8nn::NumericsOptions;
using fp8nn::Operand;
using fp8nn::OperandNumerics;

// Format facts written out here, not taken from the library: largest value, and the |v * scale|
// bounds of saturation (a clamp that changes the FP8 value) and of a flush to zero.
struct FormatFacts {
  float max;
  bool saturates(float scaled_abs) const {
    return max == 448.0f ? scaled_abs > 464.0f : scaled_abs >= 61440.0f;
  }
  bool flushes(float v, float scaled_abs) const {
    return v != 0.0f &&
           scaled_abs <= (max == 448.0f ? std::ldexp(1.0f, -10) : std::ldexp(1.0f, -17));
  }
};
const FormatFacts kE4M3{448.0f}, kE5M2{57344.0f};

float scale_of(float amax, float max) {
  if (amax == 0.0f) return 1.0f;
  const float scale = max / amax;
  return std::isinf(scale) ? FLT_MAX : scale;
}

// The figures of quantizing t (seen as rows of its last dimension) with one scale per `group`
// consecutive elements of a row, or per tensor when group == 0, counted element by element.
OperandNumerics count(const torch::Tensor& t, int64_t group, const FormatFacts& format) {
  const auto values = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t cols = values.size(-1);
  const float* v = values.data_ptr<float>();
  const int64_t g = group == 0 ? values.numel() : group;
  const int64_t span = group == 0 ? values.numel() : cols;  // elements of one grouping row
  OperandNumerics out;
  out.numel = values.numel();
  out.scale_min = INFINITY;
  out.scale_max = 0;
  for (int64_t row = 0; row < values.numel() / span; ++row) {
    for (int64_t begin = 0; begin < span; begin += g) {
      const int64_t end = std::min(span, begin + g);
      float amax = 0;
      for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(v[row * span + i]));
      const float scale = scale_of(amax, format.max);
      out.amax = std::max(out.amax, amax);
      out.scale_min = std::min(out.scale_min, scale);
      out.scale_max = std::max(out.scale_max, scale);
      for (int64_t i = begin; i < end; ++i) {
        const float x = v[row * span + i], scaled_abs = std::fabs(x * scale);
        out.saturated += format.saturates(scaled_abs) ? 1 : 0;
        out.underflow += format.flushes(x, scaled_abs) ? 1 : 0;
      }
    }
  }
  return out;
}

void check_figures(const OperandNumerics& got, const OperandNumerics& want, const char* what) {
  CAPTURE(what);
  CHECK(got.numel == want.numel);
  CHECK(got.saturated == want.saturated);
  CHECK(got.underflow == want.underflow);
  CHECK(got.amax == want.amax);
  // The monitor reports 1 / scale_inv, the scale to within its two roundings.
  CHECK(std::fabs(got.scale_min / want.scale_min - 1) < 1e-6);
  CHECK(std::fabs(got.scale_max / want.scale_max - 1) < 1e-6);
}

// x with a spread of magnitudes: most elements ordinary, some tiny (which flush to zero under a
// scale set by the rest), a few large.
torch::Tensor spread_input(int64_t rows, int64_t cols, const torch::Device& device) {
  auto x = torch::randn({rows, cols});
  x.index_put_({torch::rand({rows, cols}) < 0.2}, torch::randn({}) * 1e-6);
  x.index_put_({torch::rand({rows, cols}) < 0.01}, 300.0);
  return x.to(device);
}

// One step of `layer` on x with the output gradient g; returns the monitor's figures.
template <typename Layer>
fp8nn::NumericsSnapshot step(Layer& layer, const torch::Tensor& x, const torch::Tensor& g) {
  auto input = x.clone().requires_grad_(true);
  (layer->forward(input) * g).sum().backward();
  return layer->numerics->read();
}

// One step of `layer` (x's dtype) with a monitor: its figures against the count of the
// definition, x grouped by group_in and the output gradient by group_out (0: per tensor).
template <typename Layer>
void check_layer(Layer layer, const torch::Tensor& x, const torch::Tensor& g, int64_t group_in,
                 int64_t group_out, const torch::Device& device) {
  CAPTURE(group_in, group_out);
  layer->to(device, x.scalar_type());
  layer->numerics = std::make_shared<NumericsMonitor>();
  const auto figures = step(layer, x, g).operands;
  check_figures(figures[0], count(x, group_in, kE4M3), "x");
  check_figures(figures[1], count(layer->weight, 0, kE4M3), "weight");
  check_figures(figures[2], count(g, group_out, kE5M2), "grad_output");
}

void check_counts_match_definition(const torch::Device& device) {
  fp8nn::test::seed_torch();
  const int64_t M = 48, K = 256, N = 192;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    CAPTURE(dtype);
    const auto x = spread_input(M, K, device).to(dtype);
    const auto g = spread_input(M, N, device).to(dtype);
    // Global: everything per tensor. Mixed: x per 64, dy per 32 elements of a row.
    check_layer(fp8nn::LinearFP8Global(LinearFP8Options(K, N)), x, g, 0, 0, device);
    check_layer(fp8nn::LinearFP8Mixed(LinearFP8Options(K, N).group_size_in(64).group_size_out(32)),
                x, g, 64, 32, device);
  }
}

FP8NN_CPU_AND_CUDA_CASE("Numerics monitor: the figures equal a count of the definition",
                        check_counts_match_definition)

// A few huge outliers set a per-tensor scale that flushes the ordinary elements to zero; groups
// without an outlier keep their own scale.
void check_outliers(const torch::Device& device) {
  fp8nn::test::seed_torch();
  const int64_t M = 64, K = 512, N = 64;
  auto x = torch::randn({M, K}) * 1e-3;
  for (int i = 0; i < 4; ++i) x[i * 7][i * 100] = 1e4;
  x = x.to(device);
  const auto g = torch::randn({M, N}).to(device);

  fp8nn::LinearFP8Global global(LinearFP8Options(K, N));
  fp8nn::LinearFP8Mixed mixed(LinearFP8Options(K, N).group_size_in(128));
  global->to(device);
  mixed->to(device);
  fp8nn::enable_numerics(*global);
  fp8nn::enable_numerics(*mixed);
  const auto per_tensor = step(global, x, g).operands[0];
  const auto per_group = step(mixed, x, g).operands[0];

  CHECK(per_tensor.saturated == 0);
  CHECK(per_group.saturated == 0);
  CHECK(per_tensor.underflow_fraction() > 0.5);
  // The 4 groups holding an outlier flush their other 4 * 127 elements; elsewhere only the rare
  // element within about 1e-8 of zero does.
  CHECK(per_group.underflow >= 4 * 127);
  CHECK(per_group.underflow <= 4 * 127 + 8);
  check_figures(per_tensor, count(x, 0, kE4M3), "per tensor");
  check_figures(per_group, count(x, 128, kE4M3), "per group");
}

FP8NN_CPU_AND_CUDA_CASE("Numerics monitor: outliers flush the rest under per-tensor scaling only",
                        check_outliers)

// NaN is counted neither way and shows in amax; Inf (with an amax given, see the CUDA-level
// tests) saturates.
void check_nan(const torch::Device& device) {
  fp8nn::LinearFP8Global layer(LinearFP8Options(32, 16));
  layer->to(device);
  fp8nn::enable_numerics(*layer);
  auto x = torch::randn({8, 32});
  x[3][5] = NAN;
  torch::NoGradGuard no_grad;
  const auto y = layer->forward(x.to(device));
  CHECK(torch::isnan(y).any().item<bool>());
  const auto figures = layer->numerics->read().operands[0];
  CHECK(std::isnan(figures.amax));
  CHECK(figures.saturated == 0);
  CHECK(figures.numel == 8 * 32);
}

FP8NN_CPU_AND_CUDA_CASE("Numerics monitor: a NaN input shows as a NaN amax, never as a count",
                        check_nan)

void check_product_errors(const torch::Device& device) {
  fp8nn::test::seed_torch();
  const int64_t M = 64, K = 128, N = 96;
  fp8nn::LinearFP8Global global(LinearFP8Options(K, N));
  fp8nn::LinearFP8Mixed mixed(LinearFP8Options(K, N));
  global->to(device);
  mixed->to(device);
  const auto options = NumericsOptions().error_every(2);
  global->numerics = std::make_shared<NumericsMonitor>(options);
  mixed->numerics = std::make_shared<NumericsMonitor>(options);

  // Step 0 measures; step 1 does not (its errors stay those of step 0); step 2 measures again.
  std::vector<fp8nn::NumericsSnapshot> seen;
  for (int i = 0; i < 3; ++i) {
    const auto x = torch::randn({M, K}).to(device), g = torch::randn({M, N}).to(device);
    seen.push_back(step(global, x, g));
    const auto m = step(mixed, x, g);
    CHECK(m.forward_calls == i + 1);
    // Mixed's weight gradient is a high-precision product: never measured.
    CHECK(std::isnan(m.product_errors[2]));
    CHECK(m.product_errors[0] > 0);
    CHECK(m.product_errors[0] < 0.1);
    CHECK(m.product_errors[1] > 0);
    CHECK(m.product_errors[1] < 0.1);
  }
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(seen[i].forward_calls == i + 1);
    for (const float error : seen[i].product_errors) {
      CHECK(error > 0);
      CHECK(error < 0.1);  // E4M3/E5M2 products of Gaussian data: a few percent
    }
  }
  CHECK(seen[1].product_errors == seen[0].product_errors);
  CHECK(seen[2].product_errors != seen[1].product_errors);

  // Forwards without autograd are not steps: no measurement, no count.
  torch::NoGradGuard no_grad;
  global->forward(torch::randn({M, K}).to(device));
  CHECK(global->numerics->read().forward_calls == 3);
}

FP8NN_CPU_AND_CUDA_CASE("Numerics monitor: product errors every error_every steps",
                        check_product_errors)

void check_model_wide(const torch::Device& device) {
  fp8nn::test::seed_torch();
  torch::nn::Sequential model(torch::nn::Linear(64, 128), torch::nn::ReLU(),
                              torch::nn::Linear(128, 32), torch::nn::ReLU(),
                              torch::nn::Linear(32, 10));
  auto fp8 = fp8nn::convert(model, fp8nn::Recipe::Mixed);
  fp8->to(device);
  CHECK(fp8nn::enable_numerics(*fp8, NumericsOptions().error_every(1)) == 2);  // 10 % 16 != 0
  CHECK(fp8nn::numerics_table(*fp8).size() == 12);  // nothing quantized yet: rows all the same

  const auto x = torch::randn({16, 64}).to(device);
  fp8->forward(x).sum().backward();
  const auto rows = fp8nn::numerics_table(*fp8);
  REQUIRE(rows.size() == 12);
  CHECK(rows[0].layer == "0");
  CHECK(rows[0].tensor == "x");
  CHECK(rows[0].figures.numel == 16 * 64);
  CHECK(rows[1].tensor == "weight");
  CHECK(rows[2].tensor == "grad_output");
  CHECK(rows[3].tensor == "forward");
  CHECK(rows[3].relative_error > 0);
  CHECK(rows[6].layer == "2");
  CHECK(rows[8].figures.numel == 16 * 32);
  std::ostringstream printed;
  printed << rows[0] << '\n' << rows[3];
  CHECK(printed.str().find("saturated") != std::string::npos);
  CHECK(printed.str().find("relative error") != std::string::npos);

  // A clone gets a fresh monitor with the same options; disable removes them.
  auto copy = std::dynamic_pointer_cast<fp8nn::LinearFP8MixedImpl>(fp8[0]->clone());
  REQUIRE(copy);
  REQUIRE(copy->numerics);
  CHECK(copy->numerics != fp8[0]->as<fp8nn::LinearFP8Mixed>()->numerics);
  CHECK(copy->numerics->options().error_every() == 1);
  CHECK(copy->numerics->read().operands[0].numel == 0);
  fp8nn::disable_numerics(*fp8);
  CHECK(fp8nn::numerics_table(*fp8).empty());
}

FP8NN_CPU_AND_CUDA_CASE("Numerics monitor: enabled, read and printed model-wide", check_model_wide)

// The monitor only watches: outputs and gradients with it (product errors measured every step)
// are bit for bit those without it.
void check_unchanged_results(const torch::Device& device) {
  fp8nn::test::seed_torch();
  const int64_t M = 40, K = 96, N = 64;
  const auto x = spread_input(M, K, device), g = spread_input(M, N, device);
  const auto run = [&](auto layer, bool monitored) {
    layer->to(device);
    if (monitored) fp8nn::enable_numerics(*layer, NumericsOptions().error_every(1));
    auto input = x.clone().requires_grad_(true);
    const auto y = layer->forward(input);
    (y * g).sum().backward();
    return std::vector<torch::Tensor>{y, input.grad(), layer->weight.grad(), layer->bias.grad()};
  };
  const auto same = [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      CAPTURE(i);
      CHECK(fp8nn::test::count_bit_differences(a[i], b[i]) == 0);
    }
  };
  torch::manual_seed(1);
  fp8nn::LinearFP8Global global(LinearFP8Options(K, N));
  torch::manual_seed(1);
  fp8nn::LinearFP8Global global_monitored(LinearFP8Options(K, N));
  same(run(global, false), run(global_monitored, true));
  torch::manual_seed(2);
  fp8nn::LinearFP8Mixed mixed(LinearFP8Options(K, N).group_size_in(32));
  torch::manual_seed(2);
  fp8nn::LinearFP8Mixed mixed_monitored(LinearFP8Options(K, N).group_size_in(32));
  same(run(mixed, false), run(mixed_monitored, true));
}

FP8NN_CPU_AND_CUDA_CASE("Numerics monitor: results with a monitor equal results without",
                        check_unchanged_results)

TEST_CASE("Numerics monitor: a monitored blockwise layer computes what an unmonitored one does") {
  fp8nn::test::seed_torch();
  const int64_t M = 40, K = 160, N = 136;  // ragged 128x128 blocks and groups of 128
  const auto x = spread_input(M, K, torch::kCPU), g = spread_input(M, N, torch::kCPU);
  std::vector<std::vector<torch::Tensor>> results;
  for (const bool monitored : {false, true}) {
    torch::manual_seed(3);
    fp8nn::LinearFP8 layer(LinearFP8Options(K, N).recipe(fp8nn::Recipe::blockwise()));
    if (monitored) fp8nn::enable_numerics(*layer, NumericsOptions().error_every(1));
    auto input = x.clone().requires_grad_(true);
    const auto y = layer->forward(input);
    (y * g).sum().backward();
    results.push_back({y, input.grad(), layer->weight.grad(), layer->bias.grad()});
    if (monitored) {
      // Each quantized tensor counted once (x and dy not again for their weight-gradient
      // copies), its scales from its groups or blocks; every product measured.
      const auto snapshot = layer->numerics->read();
      const int64_t numels[] = {M * K, N * K, M * N};
      for (int i = 0; i < 3; ++i) {
        CAPTURE(i);
        const auto& figures = snapshot.operands[i];
        CHECK(figures.numel == numels[i]);
        CHECK(figures.scale_min > 0.0f);
        CHECK(figures.scale_min <= figures.scale_max);
        CHECK(std::isfinite(figures.amax));
        CHECK(figures.saturated == 0);
      }
      for (const float error : snapshot.product_errors) {
        CHECK(std::isfinite(error));
        CHECK(error < 0.1f);
      }
    }
  }
  for (size_t i = 0; i < results[0].size(); ++i) {
    CAPTURE(i);
    CHECK(fp8nn::test::count_bit_differences(results[0][i], results[1][i]) == 0);
  }
}

TEST_CASE("Numerics monitor: a negative error_every is a ValueError") {
  CHECK_THROWS_AS(NumericsMonitor(NumericsOptions().error_every(-1)), c10::ValueError);
}

}  // namespace
