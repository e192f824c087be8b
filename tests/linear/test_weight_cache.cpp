// Opt-in reuse of the weight's FP8 copies. By default nothing is reused
// (test_weight_cache_sequences shows that every sequence then equals an uncached layer); a
// WeightReuseGuard reuses the copies while it lives, whatever the optimizer outside it;
// WeightReuse::UntilVersionChange reuses them while the version counter stands, which is right for
// optimizers that bump it and is caught by set_verify(true) for those that do not. Every reuse is
// compared with an uncached twin bit for bit.

#include <fp8nn/fp8nn.h>

#include "cache_twins.h"
#include "layer_checks.h"
#include "test_support.h"

#include <c10/core/InferenceMode.h>

#include <memory>
#include <string>
#include <vector>

namespace {

using fp8nn::LinearFP8Options;
using fp8nn::WeightReuseGuard;
using fp8nn::functional::WeightReuse;
using namespace fp8nn::test;  // NOLINT: the twins harness

constexpr int kMicroBatches = 3, kEvaluations = 4;

// The default: no lookups, nothing kept, whatever the forwards.
template <typename Layer>
void check_default_keeps_nothing(bool cuda) {
  seed_torch();
  Twins<Layer> twins(cuda);
  REQUIRE(twins.cached->weight_cache != nullptr);
  CHECK(twins.cached->weight_cache->reuse() == WeightReuse::Never);
  CHECK_FALSE(twins.cached->weight_cache->reuse_across_backward());
  for (int i = 0; i < kEvaluations; ++i) twins.probe("without a guard");
  twins.forward_backward("without a guard");
  CHECK(twins.cached->weight_cache->hits() == 0);
  CHECK(twins.cached->weight_cache->misses() == 0);
}

// An evaluation loop in a guard quantizes once; after the guard, writes through .data() (which
// the version counter misses) are seen, because the guard's copies are retired with it.
template <typename Layer>
void check_guard_evaluation(bool cuda) {
  seed_torch();
  Twins<Layer> twins(cuda);
  const auto& cache = twins.cached->weight_cache;
  const auto x = twins.input();
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    const int64_t hits = cache->hits(), misses = cache->misses();
    {
      WeightReuseGuard reuse;
      CHECK(WeightReuseGuard::is_active());
      torch::NoGradGuard no_grad;
      for (int i = 0; i < kEvaluations; ++i) twins.check_forward(x, "in a guard");
    }
    CHECK_FALSE(WeightReuseGuard::is_active());
    CHECK(cache->misses() == misses + 1);
    CHECK(cache->hits() == hits + kEvaluations - 1);
    const auto delta = torch::randn_like(twins.cached->weight);
    twins.cached->weight.data().add_(delta);
    twins.plain->weight.data().add_(delta);
  }
  torch::NoGradGuard no_grad;
  twins.check_forward(x, "after the guard");
}

// Micro-batches of each step inside a guard, the optimizer's step after it: one quantization per
// step, and the run equals the uncached one with every optimizer (SGD's p.data() writes included).
template <typename Layer>
void check_guard_micro_batches(bool cuda, OptimizerKind kind) {
  seed_torch();
  Twins<Layer> twins(cuda);
  auto opt_cached = make_optimizer(kind, twins.cached->parameters());
  auto opt_plain = make_optimizer(kind, twins.plain->parameters());
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    opt_cached->zero_grad();
    opt_plain->zero_grad();
    {
      WeightReuseGuard reuse;
      for (int micro = 0; micro < kMicroBatches; ++micro) {
        twins.forward_backward("micro-batch " + std::to_string(micro));
      }
    }
    opt_cached->step();
    opt_plain->step();
    twins.check_parameters("after the step");
    twins.probe("after the step");
  }
  // Per step: the first training forward quantizes, the others (and the probes between forward
  // and backward under NoGradGuard) reuse; InferenceMode probes quantize their own copies.
  CHECK(twins.cached->weight_cache->hits() > 0);
}

// Inside a guard: a versioned write is seen, and copies made under InferenceMode (inference
// tensors) never reach a forward that autograd records.
template <typename Layer>
void check_guard_limits(bool cuda) {
  seed_torch();
  Twins<Layer> twins(cuda);
  const auto& cache = twins.cached->weight_cache;
  WeightReuseGuard reuse;
  WeightReuseGuard nested;  // joins the outer guard
  const auto x = twins.input();
  {
    torch::NoGradGuard no_grad;
    twins.check_forward(x, "first");
    twins.cached->weight.mul_(0.5);
    twins.plain->weight.mul_(0.5);
    const int64_t misses = cache->misses();
    twins.check_forward(x, "after a versioned write");
    CHECK(cache->misses() == misses + 1);
  }
  {
    c10::InferenceMode inference;
    twins.check_forward(x, "under InferenceMode");
    twins.check_forward(x, "under InferenceMode again");
  }
  REQUIRE_NOTHROW(twins.forward_backward("after InferenceMode"));
}

// UntilVersionChange with optimizers that write through the version counter, checked by
// set_verify: the full probed sequence equals the uncached one, and copies are reused.
template <typename Layer>
void check_version_policy(bool cuda, OptimizerKind kind) {
  seed_torch();
  Twins<Layer> twins(cuda);
  twins.cached->weight_cache->set_reuse(WeightReuse::UntilVersionChange);
  twins.cached->weight_cache->set_verify(true);
  run_optimizer_steps(twins, kind);
  CHECK(twins.cached->weight_cache->hits() > 0);
}

// UntilVersionChange with SGD, whose p.data() writes the counter misses: set_verify catches it.
template <typename Layer>
void check_version_policy_catches_sgd(bool cuda) {
  seed_torch();
  Layer layer(twin_options());
  layer->to(cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU));
  layer->weight_cache->set_reuse_across_backward(true);  // the older name of UntilVersionChange
  CHECK(layer->weight_cache->reuse() == WeightReuse::UntilVersionChange);
  layer->weight_cache->set_verify(true);
  torch::optim::SGD sgd(layer->parameters(), torch::optim::SGDOptions(0.5));
  const auto x = torch::randn({kRows, kIn}, torch::TensorOptions(layer->weight.device()));
  layer(x).square().mean().backward();
  torch::NoGradGuard no_grad;
  layer(x);  // reuses the training forward's copies: the weight has not moved
  const auto weight_before = layer->weight.detach().clone();
  sgd.step();  // the weight moves through p.data(): its version counter does not
  REQUIRE_FALSE(torch::equal(layer->weight, weight_before));
  check_error<c10::Error>([&] { layer(x); },
                          {"fp8nn::LinearFP8", "FP8 copies of an older weight", "clear()"});
  // After clear(), as the message says, the layer computes with the current weight again.
  layer->weight_cache->clear();
  Layer fresh(LinearFP8Options(twin_options()).cache_weight(false));
  fresh->to(layer->weight.device());
  fresh->weight.copy_(layer->weight);
  fresh->bias.copy_(layer->bias);
  check_bitwise_equal(layer(x), fresh(x), "output after clear()");
}

// A functional caller passing a new weight tensor each time (a temporary of the same shape, often
// at the same address) never gets another tensor's copies.
void check_functional_temporaries(bool cuda) {
  seed_torch();
  const auto device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  const auto cache = std::make_shared<fp8nn::functional::WeightCache>();
  cache->set_reuse(WeightReuse::UntilVersionChange);
  const auto options = fp8nn::functional::LinearFP8FuncOptions().weight_cache(cache);
  const auto x = torch::randn({8, 32}, torch::TensorOptions(device));
  const auto base = torch::randn({16, 32}, torch::TensorOptions(device));
  for (int i = 1; i <= 4; ++i) {
    const auto weight = base * static_cast<double>(i);
    const auto y = fp8nn::functional::linear_fp8_global(x, weight, {}, options);
    check_bitwise_equal(y, fp8nn::functional::linear_fp8_global(x, weight), "output");
  }
  CHECK(cache->hits() == 0);
  CHECK(cache->misses() == 4);
}

// clear(), set_reuse(Never), reset() and clone() each leave no copies behind.
template <typename Layer>
void check_lifecycle(bool cuda) {
  seed_torch();
  Layer layer(twin_options());
  layer->to(cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU));
  const auto x = torch::randn({kRows, kIn}, torch::TensorOptions(layer->weight.device()));
  const auto& cache = layer->weight_cache;
  cache->set_reuse(WeightReuse::UntilVersionChange);
  torch::NoGradGuard no_grad;
  layer(x);
  layer(x);
  CHECK(cache->hits() == 1);
  cache->clear();
  layer(x);
  CHECK(cache->misses() == 2);
  cache->set_reuse(WeightReuse::Never);
  cache->set_reuse(WeightReuse::UntilVersionChange);
  layer(x);
  CHECK(cache->misses() == 3);
  const auto copy = std::dynamic_pointer_cast<typename Layer::Impl>(layer->clone());
  REQUIRE(copy != nullptr);
  CHECK(copy->weight_cache != layer->weight_cache);
  CHECK(copy->weight_cache->misses() == 0);
  CHECK(copy->weight_cache->reuse() == WeightReuse::Never);
  Layer uncached(LinearFP8Options(twin_options()).cache_weight(false));
  CHECK(uncached->weight_cache == nullptr);
}

}  // namespace

#define FP8NN_CACHE_TEST(title, body) FP8NN_CACHE_CASE("Weight cache: ", title, body)

FP8NN_CACHE_TEST("by default nothing is looked up or kept", FP8NN_RUN(check_default_keeps_nothing))
FP8NN_CACHE_TEST("a guard's evaluation loop quantizes once, and its copies end with it",
                 FP8NN_RUN(check_guard_evaluation))
FP8NN_CACHE_TEST("guarded micro-batches with SGD equal no cache",
                 FP8NN_RUN(check_guard_micro_batches, OptimizerKind::SGD))
FP8NN_CACHE_TEST("guarded micro-batches with SGD and momentum equal no cache",
                 FP8NN_RUN(check_guard_micro_batches, OptimizerKind::SGDMomentum))
FP8NN_CACHE_TEST("guarded micro-batches with AdamW equal no cache",
                 FP8NN_RUN(check_guard_micro_batches, OptimizerKind::AdamW))
FP8NN_CACHE_TEST("guarded micro-batches with Adagrad equal no cache",
                 FP8NN_RUN(check_guard_micro_batches, OptimizerKind::Adagrad))
FP8NN_CACHE_TEST("a guard sees versioned writes and keeps inference copies from autograd",
                 FP8NN_RUN(check_guard_limits))
FP8NN_CACHE_TEST("UntilVersionChange with Adam equals no cache",
                 FP8NN_RUN(check_version_policy, OptimizerKind::Adam))
FP8NN_CACHE_TEST("UntilVersionChange with AdamW equals no cache",
                 FP8NN_RUN(check_version_policy, OptimizerKind::AdamW))
FP8NN_CACHE_TEST("UntilVersionChange with RMSprop equals no cache",
                 FP8NN_RUN(check_version_policy, OptimizerKind::RMSprop))
FP8NN_CACHE_TEST("UntilVersionChange with Adagrad equals no cache",
                 FP8NN_RUN(check_version_policy, OptimizerKind::Adagrad))
FP8NN_CACHE_TEST("UntilVersionChange with LBFGS equals no cache",
                 FP8NN_RUN(check_version_policy, OptimizerKind::LBFGS))
FP8NN_CACHE_TEST("UntilVersionChange with SGD is caught by set_verify",
                 FP8NN_RUN(check_version_policy_catches_sgd))
FP8NN_CACHE_TEST("clear, set_reuse, clone and cache_weight(false)", FP8NN_RUN(check_lifecycle))

FP8NN_CPU_AND_CUDA_CASE("Weight cache never hands out another tensor's copies",
                        [](torch::Device device) {
                          check_functional_temporaries(device.is_cuda());
                        })
