// Delayed scaling (Recipe::delayed): the history rule against a model written out here, on the
// CPU and on CUDA (whose state must equal the CPU's bit for bit); the layer's buffers through
// torch::save/load, to(dtype), clone() and archives saved with current scaling; and the errors.

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"
#include "oracle.h"
#include "test_support.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

namespace {

using fp8nn::AmaxCompute;
using fp8nn::Format;
using fp8nn::LinearFP8Options;
using fp8nn::Recipe;
using fp8nn::test::check_error;
namespace oracle = fp8nn::test;

// The rule of Recipe::delayed for one operand, written out on host floats: the scale a call casts
// with, and what it records.
struct DelayedModel {
  Format format;
  int64_t history_len;
  float scaled_max;
  bool most_recent;
  std::vector<float> history = std::vector<float>(static_cast<size_t>(history_len), 0.0f);
  int64_t recorded = 0, saturated = 0, nonfinite = 0;
  float scale = 1.0f;
  bool started = false;

  // The first call takes current scaling: the scale of its own amax.
  float cast_scale(float amax) const {
    return started ? scale : oracle::scale_for(amax, format);
  }

  void record(const torch::Tensor& values) {
    const auto v = values.detach().cpu().to(torch::kFloat);
    const float amax = v.abs().max().item<float>();
    const float s = cast_scale(amax);
    // Saturated: |v * s| rounds above the largest value (E4M3: beyond 464, E5M2: from 61440).
    const float bound = format == Format::E4M3 ? std::nextafter(464.0f, INFINITY) : 61440.0f;
    saturated += (v * s).abs().ge(bound).sum().item<int64_t>();
    started = true;
    if (!std::isfinite(amax)) {
      ++nonfinite;
      return;
    }
    history[static_cast<size_t>(recorded % history_len)] = amax;
    ++recorded;
    const auto filled = history.begin() + std::min(recorded, history_len);
    const float window = most_recent ? amax : *std::max_element(history.begin(), filled);
    if (window > 0.0f) {
      const float next = scaled_max / window;
      scale = std::isinf(next) ? FLT_MAX : next;
    }
  }
};

bool bits_equal(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void check_state(const fp8nn::functional::DelayedScalingState& state, int row,
                 const DelayedModel& model) {
  const auto history = state.amax_history[row].cpu();
  const auto counts = state.counts[row].cpu();
  for (int64_t i = 0; i < model.history_len; ++i) {
    CAPTURE(row, i);
    CHECK(bits_equal(history[i].item<float>(), model.history[static_cast<size_t>(i)]));
  }
  CHECK(bits_equal(state.scale[row].item<float>(), model.scale));
  CHECK(counts[0].item<int64_t>() == model.recorded);
  CHECK(counts[1].item<int64_t>() == model.saturated);
  CHECK(counts[2].item<int64_t>() == model.nonfinite);
}

// Nine steps of forward + backward through a delayed LinearFP8 (history 4, so the window wraps),
// with inputs whose magnitudes jump (saturating the next cast), an all-zero step and an Inf step;
// after each the layer's state for x and dy equals the model's bit for bit.
void check_history_rule(torch::Device device, AmaxCompute compute, int margin) {
  fp8nn::test::seed_torch();
  auto recipe = Recipe::global_delayed(/*history_len=*/4, margin);
  recipe.delayed.amax_compute = compute;
  fp8nn::LinearFP8 layer(LinearFP8Options(64, 48).recipe(recipe));
  layer->to(device);
  REQUIRE(layer->delayed_scaling != nullptr);
  const bool most_recent = compute == AmaxCompute::MostRecent;
  DelayedModel x_model{Format::E4M3, 4, std::ldexp(448.0f, -margin), most_recent};
  DelayedModel dy_model{Format::E5M2, 4, std::ldexp(57344.0f, -margin), most_recent};

  const std::vector<float> x_magnitudes = {1.0f, 8.0f, 0.5f, 0.0f, 3.0f, INFINITY, 2.0f, 40.0f, 1.0f};
  for (size_t step = 0; step < x_magnitudes.size(); ++step) {
    CAPTURE(step);
    auto x = torch::randn({32, 64});
    if (std::isinf(x_magnitudes[step])) {
      x[5][7] = INFINITY;
    } else {
      x *= x_magnitudes[step];
    }
    const auto dy = torch::randn({32, 48}) * static_cast<float>(1 + step % 3) * 1e-3f;
    const auto y = layer(x.to(device));
    y.backward(dy.to(device));
    x_model.record(x);
    dy_model.record(dy);
    check_state(*layer->delayed_scaling, 0, x_model);
    check_state(*layer->delayed_scaling, 1, dy_model);
    if (std::isinf(x_magnitudes[step])) {
      CHECK_FALSE(torch::isfinite(y.cpu()[5]).all().item<bool>());  // never made finite
    }
  }
  // The jumps saturated some casts and the Inf step was counted, not recorded.
  CHECK(x_model.saturated > 1);
  CHECK(x_model.nonfinite == 1);
  // A forward without autograd casts x without its transposed copy (the plain cast kernel), and
  // records the same way.
  {
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({32, 64}) * 5.0f;
    (void)layer(x.to(device));
    x_model.record(x);
    check_state(*layer->delayed_scaling, 0, x_model);
  }
}

FP8NN_CPU_AND_CUDA_CASE("delayed scaling follows the history rule, max of the window",
                        [](torch::Device device) { check_history_rule(device, AmaxCompute::Max, 0); })
FP8NN_CPU_AND_CUDA_CASE("delayed scaling follows the history rule, most recent, margin 2",
                        [](torch::Device device) {
                          check_history_rule(device, AmaxCompute::MostRecent, 2);
                        })

// With a numerics monitor the cast kernels count for both: the state evolves as without one, and
// the monitor sees each call's amax and the saturations of its cast.
void check_monitored_equals_unmonitored(torch::Device device) {
  fp8nn::test::seed_torch();
  fp8nn::LinearFP8 plain(LinearFP8Options(64, 48).recipe(Recipe::global_delayed(4)));
  plain->to(device);
  auto monitored = std::dynamic_pointer_cast<fp8nn::LinearFP8Impl>(plain->clone());
  REQUIRE(monitored != nullptr);
  fp8nn::enable_numerics(*monitored);
  for (int step = 0; step < 4; ++step) {
    CAPTURE(step);
    const auto x = (torch::randn({32, 64}) * static_cast<float>(1 << (3 * step))).to(device);
    const auto dy = torch::randn({32, 48}, device);
    const auto y_plain = plain(x), y_monitored = monitored->forward(x);
    CHECK(torch::equal(y_plain, y_monitored));
    y_plain.backward(dy);
    y_monitored.backward(dy);
    CHECK(torch::equal(plain->delayed_scaling->amax_history,
                       monitored->delayed_scaling->amax_history));
    CHECK(torch::equal(plain->delayed_scaling->counts, monitored->delayed_scaling->counts));
    const auto figures = monitored->numerics->read().operands[0];
    CHECK(figures.amax == x.abs().max().item<float>());
    // Saturations since the last call: the monitor counts this call, the state all of them.
    if (step == 0) {
      CHECK(figures.saturated == plain->delayed_scaling->counts[0][1].item<int64_t>());
    }
  }
  // Inputs growing 8x a step outran the delayed scale: saturations were counted.
  CHECK(monitored->numerics->read().operands[0].saturated > 0);
}

FP8NN_CPU_AND_CUDA_CASE("a monitored delayed layer records what an unmonitored one does",
                        check_monitored_equals_unmonitored)

// The first call takes current scaling: its output and weight gradient are Global's bit for bit.
void check_first_call_is_current_scaling(torch::Device device) {
  fp8nn::test::seed_torch();
  fp8nn::LinearFP8 delayed(LinearFP8Options(96, 80).recipe(Recipe::global_delayed()));
  delayed->to(device);
  auto global = fp8nn::LinearFP8Global::from(torch::nn::Linear(96, 80));
  global->to(device);
  {
    torch::NoGradGuard no_grad;
    global->weight.copy_(delayed->weight);
    global->bias.copy_(delayed->bias);
  }
  const auto x = torch::randn({40, 96}, device).to(torch::kBFloat16);
  const auto dy = torch::randn({40, 80}, device).to(torch::kBFloat16);
  const auto y_delayed = delayed(x), y_global = global(x);
  y_delayed.backward(dy);
  y_global.backward(dy);
  CHECK(torch::equal(y_delayed, y_global));
  CHECK(torch::equal(delayed->weight.grad(), global->weight.grad()));
  // The bias gradient is dy's column sum; on CUDA Global takes it from dy's cast pass and the
  // delayed layer from at::sum: the same 40 terms added in another order (fp32 rounding only).
  CHECK(torch::allclose(delayed->bias.grad(), global->bias.grad(), /*rtol=*/1e-5, /*atol=*/1e-5));
}

FP8NN_CPU_AND_CUDA_CASE("a delayed layer's first call equals Global bit for bit",
                        check_first_call_is_current_scaling)

// Trains a delayed layer `steps` steps with plain SGD on fixed-seed data, from `seed` on.
void train(fp8nn::LinearFP8& layer, int steps, uint64_t seed) {
  const auto device = layer->weight.device();
  torch::optim::SGD sgd(layer->parameters(), torch::optim::SGDOptions(0.01));
  torch::manual_seed(seed);
  for (int i = 0; i < steps; ++i) {
    const auto x = (torch::randn({16, 32}) * (1.0 + i)).to(device);
    sgd.zero_grad();
    layer(x).pow(2).mean().backward();
    sgd.step();
  }
}

void check_save_load_continues(torch::Device device) {
  fp8nn::test::seed_torch();
  fp8nn::LinearFP8 a(LinearFP8Options(32, 24).recipe(Recipe::global_delayed(8)));
  a->to(device);
  train(a, 3, 1);
  std::stringstream archive;
  torch::save(a, archive);
  fp8nn::LinearFP8 b(LinearFP8Options(32, 24).recipe(Recipe::global_delayed(8)));
  b->to(device);
  torch::load(b, archive);
  for (const auto& name : {"fp8_amax_history", "fp8_scale", "fp8_scaling_counts"}) {
    CAPTURE(name);
    CHECK(torch::equal(a->named_buffers()[name], b->named_buffers()[name]));
  }
  CHECK(b->delayed_scaling->counts[0][0].item<int64_t>() == 3);
  // Both continue alike: the loaded layer is no longer at its first call.
  train(a, 2, 2);
  train(b, 2, 2);
  CHECK(torch::equal(a->weight, b->weight));
  CHECK(torch::equal(a->delayed_scaling->amax_history, b->delayed_scaling->amax_history));
  CHECK(torch::equal(a->delayed_scaling->scale, b->delayed_scaling->scale));
}

FP8NN_CPU_AND_CUDA_CASE("a delayed layer saved mid-training continues bit for bit after loading",
                        check_save_load_continues)

TEST_CASE("a delayed layer registers its state as buffers, kept in their dtypes by to()") {
  fp8nn::LinearFP8 layer(LinearFP8Options(32, 24).recipe(Recipe::global_delayed(16, 1)));
  CHECK(layer->named_buffers().keys() ==
        std::vector<std::string>{"fp8_amax_history", "fp8_scale", "fp8_scaling_counts"});
  train(layer, 2, 3);
  const auto history = layer->delayed_scaling->amax_history.clone();
  const auto counts = layer->delayed_scaling->counts.clone();
  layer->to(torch::kBFloat16);
  CHECK(layer->weight.scalar_type() == torch::kBFloat16);
  CHECK(layer->delayed_scaling->amax_history.scalar_type() == torch::kFloat);
  CHECK(layer->delayed_scaling->counts.scalar_type() == torch::kLong);
  CHECK(torch::equal(layer->delayed_scaling->amax_history, history));
  CHECK(torch::equal(layer->delayed_scaling->counts, counts));
  // The buffers are the state's tensors, also after to().
  CHECK(layer->named_buffers()["fp8_scale"].is_same(layer->delayed_scaling->scale));
  // clone() copies the state into the clone's own tensors.
  const auto copy = std::dynamic_pointer_cast<fp8nn::LinearFP8Impl>(layer->clone());
  REQUIRE(copy != nullptr);
  CHECK(torch::equal(copy->delayed_scaling->amax_history, history));
  CHECK_FALSE(copy->delayed_scaling->amax_history.is_same(layer->delayed_scaling->amax_history));
  // Current-scaling layers register nothing (their archives stay as they were).
  CHECK(fp8nn::LinearFP8Global(32, 24)->named_buffers().is_empty());
  CHECK(fp8nn::LinearFP8(LinearFP8Options(32, 24))->delayed_scaling == nullptr);
}

TEST_CASE("fp8nn's checksummed checkpoints keep a delayed layer's state") {
  fp8nn::LinearFP8 a(LinearFP8Options(32, 24).recipe(Recipe::global_delayed(8)));
  train(a, 3, 5);
  const std::string path =
      std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/fp8nn_delayed_" +
      std::to_string(fp8nn::test::fresh_seed()) + ".ckpt";
  fp8nn::save_checkpoint(*a, path);
  fp8nn::LinearFP8 b(LinearFP8Options(32, 24).recipe(Recipe::global_delayed(8)));
  fp8nn::load_checkpoint(*b, path);
  std::remove(path.c_str());
  CHECK(torch::equal(a->weight, b->weight));
  CHECK(torch::equal(a->delayed_scaling->amax_history, b->delayed_scaling->amax_history));
  CHECK(torch::equal(a->delayed_scaling->scale, b->delayed_scaling->scale));
  CHECK(torch::equal(a->delayed_scaling->counts, b->delayed_scaling->counts));
  // Both continue alike (the loaded layer is past its first call).
  train(a, 1, 6);
  train(b, 1, 6);
  CHECK(torch::equal(a->weight, b->weight));
}

TEST_CASE("a delayed layer loads an archive saved with current scaling, with fresh state") {
  fp8nn::LinearFP8Global global(32, 24);
  std::stringstream archive;
  torch::save(global, archive);
  fp8nn::LinearFP8 delayed(LinearFP8Options(32, 24).recipe(Recipe::global_delayed()));
  train(delayed, 1, 4);  // state of its own weights, which the loaded ones replace
  REQUIRE(delayed->delayed_scaling->counts[0][0].item<int64_t>() == 1);
  torch::load(delayed, archive);
  CHECK(torch::equal(delayed->weight, global->weight));
  CHECK(torch::equal(delayed->bias, global->bias));
  CHECK(delayed->delayed_scaling->counts.sum().item<int64_t>() == 0);
  CHECK(delayed->delayed_scaling->scale.eq(1.0f).all().item<bool>());
  // Fresh: the next call takes current scaling again, as Global does.
  const auto x = torch::randn({8, 32});
  CHECK(torch::equal(delayed(x), global(x)));
}

TEST_CASE("delayed scaling: recipes and states that cannot run are refused") {
  CHECK(fp8nn::to_string(Recipe::global_delayed(512, 1)) == "Recipe::global_delayed(512, 1)");
  CHECK(Recipe::global_delayed() != Recipe::global());
  auto mixed = Recipe::mixed(64, 64);
  mixed.delayed.history_len = 16;
  check_error<c10::ValueError>(
      [&] { fp8nn::LinearFP8(LinearFP8Options(64, 64).recipe(mixed)); },
      {"fp8nn::LinearFP8", "delayed scaling needs per-tensor x"});
  check_error<c10::ValueError>(
      [&] { fp8nn::LinearFP8(LinearFP8Options(64, 64).recipe(Recipe::global_delayed(-1))); },
      {"history_len >= 0", "-1"});
  check_error<c10::ValueError>(
      [&] { fp8nn::LinearFP8(LinearFP8Options(64, 64).recipe(Recipe::global_delayed(8, -2))); },
      {"margin >= 0", "-2"});
  const auto x = torch::randn({4, 16}), w = torch::randn({8, 16});
  check_error<c10::ValueError>(
      [&] { fp8nn::functional::linear_fp8(x, w, {}, Recipe::global_delayed(8)); },
      {"fp8nn::functional::linear_fp8", "delayed_scaling"});
  const auto state = std::make_shared<fp8nn::functional::DelayedScalingState>(4);
  check_error<c10::ValueError>(
      [&] {
        fp8nn::functional::linear_fp8(
            x, w, {}, Recipe::global_delayed(8),
            fp8nn::functional::LinearFP8FuncOptions().delayed_scaling(state));
      },
      {"history_len 8", "got 4"});
  // A refused call records nothing.
  CHECK(state->counts.sum().item<int64_t>() == 0);
}

}  // namespace
