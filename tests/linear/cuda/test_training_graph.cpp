// A whole training step (forward, backward and optimizer step) of a model using both FP8 layers is
// captured in one CUDA graph, and replaying it gives what eager execution gives, bit for bit. This
// holds only because forward and backward make no host synchronisation and allocate through the
// caching allocator (global capture mode rejects anything else), and because the weight cache
// never lets the graph read copies made outside it.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

namespace {

using fp8nn::LinearFP8Options;

// Aligned layers take cuBLASLt directly; the last one (N = 17) takes the padded path. The third
// runs delayed scaling, whose state the replays must advance as eager steps do.
torch::nn::Sequential make_model(bool cache_weight = true) {
  return torch::nn::Sequential(
      fp8nn::LinearFP8Global(LinearFP8Options(64, 128).cache_weight(cache_weight)),
      torch::nn::ReLU(),
      fp8nn::LinearFP8Mixed(
          LinearFP8Options(128, 96).group_size_in(64).cache_weight(cache_weight)),
      torch::nn::ReLU(),
      fp8nn::LinearFP8(LinearFP8Options(96, 96)
                           .recipe(fp8nn::Recipe::global_delayed(/*history_len=*/4))
                           .cache_weight(cache_weight)),
      torch::nn::ReLU(),
      fp8nn::LinearFP8Global(LinearFP8Options(96, 17).cache_weight(cache_weight)));
}

// SGD with momentum keeps its state on the device and takes no per-step host scalars (AdamW's
// bias correction is computed on the host from its step count, which a replay cannot advance).
torch::optim::SGD make_optimizer(torch::nn::Sequential& model) {
  return torch::optim::SGD(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
}

torch::Tensor step(torch::nn::Sequential& model, torch::optim::SGD& optimizer,
                   const torch::Tensor& x, const torch::Tensor& target) {
  optimizer.zero_grad();
  auto loss = torch::mse_loss(model->forward(x), target);
  loss.backward();
  optimizer.step();
  return loss;
}

}  // namespace

TEST_CASE("A training step of both FP8 layers replays from a CUDA graph identical to eager") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const auto device = torch::Device(torch::kCUDA);
  auto graphed = make_model();
  graphed->to(device);
  auto eager = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(graphed->clone());
  REQUIRE(eager != nullptr);
  auto eager_model = torch::nn::Sequential(eager);
  auto graphed_opt = make_optimizer(graphed);
  auto eager_opt = make_optimizer(eager_model);

  const int warmup = 3, steps = 8;
  std::vector<torch::Tensor> xs, targets;
  for (int i = 0; i < steps; ++i) {
    xs.push_back(torch::randn({256, 64}, torch::TensorOptions(device)));
    targets.push_back(torch::randn({256, 17}, torch::TensorOptions(device)));
  }
  const auto initial_weight = graphed->parameters()[0].detach().clone();
  auto static_x = xs[0].clone();
  auto static_target = targets[0].clone();

  // Warm-up on a side stream, as graph capture wants: handles, heuristics, momentum buffers.
  const auto side = at::cuda::getStreamFromPool();
  torch::cuda::synchronize();  // the inputs above are ready before the side stream reads them
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    for (int i = 0; i < warmup; ++i) {
      static_x.copy_(xs[i]);
      static_target.copy_(targets[i]);
      const auto graphed_loss = step(graphed, graphed_opt, static_x, static_target);
      const auto eager_loss = step(eager_model, eager_opt, xs[i], targets[i]);
      CHECK(torch::equal(graphed_loss, eager_loss));
    }
  }
  torch::cuda::synchronize();

  at::cuda::CUDAGraph graph;
  torch::Tensor static_loss;
  graphed_opt.zero_grad();  // gradients are then allocated inside the graph's pool
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    graph.capture_begin();
    auto loss = torch::mse_loss(graphed->forward(static_x), static_target);
    loss.backward();
    graphed_opt.step();
    static_loss = loss.detach();
    graph.capture_end();
  }

  for (int i = warmup; i < steps; ++i) {
    CAPTURE(i);
    static_x.copy_(xs[i]);
    static_target.copy_(targets[i]);
    graph.replay();
    const auto eager_loss = step(eager_model, eager_opt, xs[i], targets[i]);
    torch::cuda::synchronize();
    CHECK(torch::isfinite(static_loss).item<bool>());
    CHECK(torch::equal(static_loss, eager_loss));
  }
  const auto graphed_params = graphed->parameters();
  const auto eager_params = eager_model->parameters();
  REQUIRE(graphed_params.size() == eager_params.size());
  for (size_t p = 0; p < graphed_params.size(); ++p) {
    CAPTURE(p);
    CHECK(torch::equal(graphed_params[p], eager_params[p]));
  }
  // The parameters moved: the steps did train.
  CHECK_FALSE(torch::equal(graphed_params[0], initial_weight));
  // The delayed layer's history, scales and counts advanced at each replay as in eager steps.
  const auto graphed_buffers = graphed->named_buffers();
  const auto eager_buffers = eager_model->named_buffers();
  REQUIRE(graphed_buffers.size() == 3);
  REQUIRE(eager_buffers.size() == 3);
  for (const auto& buffer : graphed_buffers) {
    CAPTURE(buffer.key());
    CHECK(torch::equal(buffer.value(), eager_buffers[buffer.key()]));
  }
  CHECK(graphed_buffers["4.fp8_scaling_counts"][0][0].item<int64_t>() == steps);
}

// Replays write the parameters without bumping their version counters. Eager forwards between
// replays (evaluation under NoGradGuard or InferenceMode, one of them made before the capture)
// must use the replayed weights: with the default weight cache they equal a model without one.
TEST_CASE("Eager forwards between CUDA-graph replays use the replayed weights") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const auto device = torch::Device(torch::kCUDA);
  auto cached = make_model(true), plain = make_model(false);
  cached->to(device);
  plain->to(device);
  {
    torch::NoGradGuard no_grad;
    const auto from = cached->parameters(), to = plain->parameters();
    for (size_t p = 0; p < from.size(); ++p) to[p].copy_(from[p]);
  }
  auto cached_opt = make_optimizer(cached), plain_opt = make_optimizer(plain);
  const auto probe = torch::randn({64, 64}, torch::TensorOptions(device));
  const auto check_eager = [&](const char* where) {
    CAPTURE(where);
    {
      torch::NoGradGuard no_grad;
      CHECK(torch::equal(cached->forward(probe), plain->forward(probe)));
    }
    c10::InferenceMode inference;
    CHECK(torch::equal(cached->forward(probe), plain->forward(probe)));
  };
  const auto static_x = torch::randn({256, 64}, torch::TensorOptions(device));
  const auto static_target = torch::randn({256, 17}, torch::TensorOptions(device));
  const auto side = at::cuda::getStreamFromPool();
  torch::cuda::synchronize();
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    for (int i = 0; i < 3; ++i) {
      step(cached, cached_opt, static_x, static_target);
      step(plain, plain_opt, static_x, static_target);
    }
  }
  torch::cuda::synchronize();
  check_eager("before the capture");
  at::cuda::CUDAGraph graph;
  cached_opt.zero_grad();
  plain_opt.zero_grad();
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    graph.capture_begin();
    step(cached, cached_opt, static_x, static_target);
    step(plain, plain_opt, static_x, static_target);
    graph.capture_end();
  }
  const auto before = cached->parameters()[0].detach().clone();
  for (int replay = 0; replay < 4; ++replay) {
    CAPTURE(replay);
    static_x.normal_();
    graph.replay();
    torch::cuda::synchronize();
    check_eager("after a replay");
  }
  CHECK_FALSE(torch::equal(cached->parameters()[0], before));
  const auto cached_params = cached->parameters(), plain_params = plain->parameters();
  for (size_t p = 0; p < cached_params.size(); ++p) {
    CHECK(torch::equal(cached_params[p], plain_params[p]));
  }
}
