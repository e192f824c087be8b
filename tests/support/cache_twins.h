#pragma once
// Twin layers for the weight-cache tests: a layer with a weight cache beside one built with
// .cache_weight(false) from the same initialisation, driven through the same calls, with every
// output, gradient and weight compared bit for bit.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <memory>
#include <string>
#include <vector>

namespace fp8nn::test {

using fp8nn::LinearFP8Options;

// Small shapes with several groups per row (Mixed) and a row count no tile divides.
inline constexpr int64_t kIn = 64, kOut = 48, kRows = 40;
inline constexpr int kSteps = 4;

inline LinearFP8Options twin_options() {
  return LinearFP8Options(kIn, kOut).group_size_in(32).group_size_out(16);
}

inline void check_bitwise_equal(const torch::Tensor& cached, const torch::Tensor& plain,
                                const std::string& what) {
  CAPTURE(what);
  REQUIRE(cached.defined() == plain.defined());
  if (!cached.defined()) return;
  REQUIRE(cached.sizes() == plain.sizes());
  CHECK(count_bit_differences(cached, plain) == 0);
}

// A layer with a weight cache (the default one unless the test configures it) and its uncached
// twin, equal at the start.
template <typename Layer>
struct Twins {
  Layer cached{twin_options()};
  Layer plain{LinearFP8Options(twin_options()).cache_weight(false)};

  explicit Twins(bool cuda) {
    // One intra-op thread for the CPU work of the process from here on. Under CPU load, libtorch's
    // CPU sqrt (MKL's vector math, split across intra-op threads) now and then returned inexact
    // values (about 1e-4 relative) for one thread's share: two Adagrad steps on bitwise equal
    // weights and gradients then differed in half of the weight, in about one run in 150 on a
    // 2-core machine, and never in 767 runs with one thread. The twins compare the layers' own
    // arithmetic, which this keeps as the only thing that can differ.
    at::set_num_threads(1);
    const auto device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    cached->to(device);
    plain->to(device);
    torch::NoGradGuard no_grad;
    plain->weight.copy_(cached->weight);
    plain->bias.copy_(cached->bias);
  }

  torch::TensorOptions options() const { return torch::TensorOptions(cached->weight.device()); }
  torch::Tensor input() const { return torch::randn({kRows, kIn}, options()); }
  torch::Tensor target() const { return torch::randn({kRows, kOut}, options()); }

  // Both layers on one input.
  void check_forward(const torch::Tensor& x, const std::string& where) {
    check_bitwise_equal(cached(x), plain(x), "output " + where);
  }

  // What a user may do at any point of a step: a forward under NoGradGuard (batch accuracy) and
  // one under InferenceMode (evaluation).
  void probe(const std::string& where) {
    const auto x = input();
    {
      torch::NoGradGuard no_grad;
      check_forward(x, "under NoGradGuard " + where);
    }
    {
      c10::InferenceMode inference;
      check_forward(x, "under InferenceMode " + where);
    }
  }

  // Forward and backward of one batch on both layers; the losses and gradients must agree.
  void forward_backward(const std::string& where) {
    const auto x = input(), y_target = target();
    const auto loss_cached = torch::mse_loss(cached(x), y_target);
    const auto loss_plain = torch::mse_loss(plain(x), y_target);
    check_bitwise_equal(loss_cached.detach(), loss_plain.detach(), "loss " + where);
    probe("between forward and backward " + where);
    loss_cached.backward();
    loss_plain.backward();
    check_gradients(where);
  }

  void check_gradients(const std::string& where) {
    check_bitwise_equal(cached->weight.grad(), plain->weight.grad(), "weight grad " + where);
    check_bitwise_equal(cached->bias.grad(), plain->bias.grad(), "bias grad " + where);
  }

  void check_parameters(const std::string& where) {
    check_bitwise_equal(cached->weight, plain->weight, "weight " + where);
    check_bitwise_equal(cached->bias, plain->bias, "bias " + where);
  }
};

// Plain SGD (lr 0.5) on each twin: it writes through p.data(), so the weights' version counters
// never move.
template <typename Layer>
struct SgdTwins {
  explicit SgdTwins(Twins<Layer>& twins)
      : cached(twins.cached->parameters(), torch::optim::SGDOptions(0.5)),
        plain(twins.plain->parameters(), torch::optim::SGDOptions(0.5)) {}
  torch::optim::SGD cached, plain;
};

enum class OptimizerKind { SGD, SGDMomentum, Adam, AdamW, RMSprop, Adagrad, LBFGS };

inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    OptimizerKind kind, const std::vector<torch::Tensor>& params) {
  switch (kind) {
    case OptimizerKind::SGD:
      return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(0.5));
    case OptimizerKind::SGDMomentum:
      return std::make_unique<torch::optim::SGD>(params,
                                                 torch::optim::SGDOptions(0.1).momentum(0.9));
    case OptimizerKind::Adam:
      return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-2));
    case OptimizerKind::AdamW:
      return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(1e-2));
    case OptimizerKind::RMSprop:
      return std::make_unique<torch::optim::RMSprop>(params, torch::optim::RMSpropOptions(1e-2));
    case OptimizerKind::Adagrad:
      return std::make_unique<torch::optim::Adagrad>(params, torch::optim::AdagradOptions(1e-1));
    case OptimizerKind::LBFGS:
      return std::make_unique<torch::optim::LBFGS>(params,
                                                   torch::optim::LBFGSOptions(0.5).max_iter(3));
  }
  return nullptr;
}

// Steps of `kind` with probes before zero_grad, between forward and backward, after backward and
// after the step: a forward at any of those points must not leave copies a later call reuses.
template <typename Layer>
void run_optimizer_steps(Twins<Layer>& twins, OptimizerKind kind) {
  auto opt_cached = make_optimizer(kind, twins.cached->parameters());
  auto opt_plain = make_optimizer(kind, twins.plain->parameters());
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    twins.probe("before zero_grad");
    opt_cached->zero_grad();
    opt_plain->zero_grad();
    if (kind == OptimizerKind::LBFGS) {
      // LBFGS evaluates its closure several times per step, moving the weight in between; each
      // closure also runs a no-grad forward of its own layer.
      const auto x = twins.input(), target = twins.target();
      const auto closure_for = [&](auto& layer, auto& optimizer) {
        return [&]() {
          optimizer->zero_grad();
          {
            torch::NoGradGuard no_grad;
            layer(x);
          }
          auto loss = torch::mse_loss(layer(x), target);
          loss.backward();
          return loss;
        };
      };
      const auto loss_cached = opt_cached->step(closure_for(twins.cached, opt_cached));
      const auto loss_plain = opt_plain->step(closure_for(twins.plain, opt_plain));
      check_bitwise_equal(loss_cached, loss_plain, "LBFGS loss");
    } else {
      twins.forward_backward("");
      twins.probe("after backward");
      opt_cached->step();
      opt_plain->step();
    }
    twins.check_parameters("after the step");
    twins.probe("after the step");
  }
}

// Runs `run` on a default LinearFP8Global and a default LinearFP8Mixed, each in its own SECTION.
template <typename Run>
void on_both_layers(const Run& run) {
  SECTION("LinearFP8Global") { run(fp8nn::LinearFP8Global(twin_options())); }
  SECTION("LinearFP8Mixed") { run(fp8nn::LinearFP8Mixed(twin_options())); }
}

}  // namespace fp8nn::test

// Declares the test case `prefix title` twice, on the CPU and on CUDA (FP8NN_CPU_AND_CUDA_CASE).
// In `body`, `layer` is a default layer of each kind and `cuda` says the device; FP8NN_RUN(fn,
// args) calls fn<decltype(layer)>(cuda, args).
#define FP8NN_CACHE_CASE(prefix, title, body)                       \
  FP8NN_CPU_AND_CUDA_CASE(prefix title, [&](torch::Device device) { \
    const bool cuda = device.is_cuda();                             \
    fp8nn::test::on_both_layers([&](auto layer) { body; });         \
  })

#define FP8NN_RUN(fn, ...) fn<decltype(layer)>(cuda, ##__VA_ARGS__)
