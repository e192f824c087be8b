// The FP8 weight cache: the weight is quantized once while it is known unchanged (inference,
// evaluation; micro-batches when asked), an optimizer step never leaves stale copies (SGD, which
// bypasses the version counter, included), and cached results equal uncached ones bit for bit.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <memory>
#include <string>
#include <vector>

namespace {

using fp8nn::LinearFP8Options;

torch::Device device_for(bool cuda) { return cuda ? torch::Device(torch::kCUDA) : torch::kCPU; }

// Forward with the cache, then writes that bypass the version counter (tensor.data()) show the
// cache at work: the output keeps using the old copies until a versioned write invalidates them.
template <typename Layer>
void check_reuse_and_invalidation(bool cuda) {
  fp8nn::test::seed_torch();
  const auto device = device_for(cuda);
  Layer layer(LinearFP8Options(96, 48));
  layer->to(device);
  const auto x = torch::randn({32, 96}, torch::TensorOptions(device));
  REQUIRE(layer->weight_cache != nullptr);

  // While autograd records the weight's gradient, the copies are not kept: the backward would
  // drop them anyway, and holding them until then only costs memory.
  layer(x);
  layer(x);
  CHECK(layer->weight_cache->misses() == 2);
  CHECK(layer->weight_cache->hits() == 0);

  // Inference: quantized once, then reused.
  torch::NoGradGuard no_grad;
  const auto y1 = layer(x);
  CHECK(layer->weight_cache->misses() == 3);
  const auto y2 = layer(x);
  CHECK(layer->weight_cache->hits() == 1);
  CHECK(torch::equal(y1, y2));

  // An unversioned write: the cache cannot see it, so the old FP8 copies are still used.
  layer->weight.data().mul_(2);
  const auto stale = layer(x);
  CHECK(layer->weight_cache->hits() == 2);
  CHECK(torch::equal(stale, y1));

  // A versioned in-place write (what Adam/AdamW do) makes the next call quantize again.
  layer->weight.mul_(1);
  const auto fresh = layer(x);
  CHECK(layer->weight_cache->misses() == 4);
  CHECK_FALSE(torch::equal(fresh, y1));
  // ... and it equals a layer without a cache on the same (doubled) weight.
  Layer uncached(LinearFP8Options(96, 48).cache_weight(false));
  uncached->to(device);
  CHECK(uncached->weight_cache == nullptr);
  uncached->weight.copy_(layer->weight);
  uncached->bias.copy_(layer->bias);
  CHECK(torch::equal(uncached(x), fresh));

  // clear() forgets the copies; so do reset() and clone() (each starts with its own cache).
  layer->weight_cache->clear();
  layer(x);
  CHECK(layer->weight_cache->misses() == 5);
  const auto copy = std::dynamic_pointer_cast<typename Layer::Impl>(layer->clone());
  REQUIRE(copy != nullptr);
  CHECK(copy->weight_cache != layer->weight_cache);
  CHECK(copy->weight_cache->misses() == 0);
}

enum class Optimizer { SGD, AdamW };

std::unique_ptr<torch::optim::Optimizer> make_optimizer(Optimizer kind,
                                                        std::vector<torch::Tensor> params) {
  if (kind == Optimizer::SGD) {
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1).momentum(0.9));
  }
  return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(1e-2));
}

// Training: every optimizer step changes the weight, and the whole run equals the same run without
// a cache bit for bit. By default a backward pass drops the copies (libtorch's SGD writes through
// p.data(), unseen by the version counter), so with micro-batches each forward quantizes; with
// reuse_across_backward and an optimizer that bumps versions (AdamW), the micro-batches of one
// step share one quantization. Evaluation forwards (no gradient) reuse the copies in both modes.
template <typename Layer>
void check_training_matches_uncached(bool cuda, Optimizer kind, bool reuse_across_backward) {
  fp8nn::test::seed_torch();
  const auto device = device_for(cuda);
  const auto options = LinearFP8Options(64, 32);
  Layer cached(options), uncached(LinearFP8Options(options).cache_weight(false));
  cached->to(device);
  uncached->to(device);
  cached->weight_cache->set_reuse_across_backward(reuse_across_backward);
  {
    torch::NoGradGuard no_grad;
    uncached->weight.copy_(cached->weight);
    uncached->bias.copy_(cached->bias);
  }
  auto opt_cached = make_optimizer(kind, cached->parameters());
  auto opt_uncached = make_optimizer(kind, uncached->parameters());
  const int steps = 5, micro_batches = 3, evaluations = 2;
  const auto probe = torch::randn({8, 64}, torch::TensorOptions(device));
  for (int step = 0; step < steps; ++step) {
    opt_cached->zero_grad();
    opt_uncached->zero_grad();
    for (int micro = 0; micro < micro_batches; ++micro) {
      const auto x = torch::randn({16, 64}, torch::TensorOptions(device));
      const auto target = torch::randn({16, 32}, torch::TensorOptions(device));
      torch::mse_loss(cached(x), target).backward();
      torch::mse_loss(uncached(x), target).backward();
    }
    CHECK(torch::equal(cached->weight.grad(), uncached->weight.grad()));
    opt_cached->step();
    opt_uncached->step();
    CHECK(torch::equal(cached->weight, uncached->weight));
    // Evaluation between steps: the first forward quantizes (after the step), the rest reuse.
    torch::NoGradGuard no_grad;
    for (int e = 0; e < evaluations; ++e) CHECK(torch::equal(cached(probe), uncached(probe)));
  }
  // Each step's evaluation quantizes once (the weight changed) and reuses after that; the next
  // step's first micro-batch reuses the evaluation's copies (nothing changed in between). Without
  // reuse across backward, the other micro-batches quantize; with it, only the very first does.
  const int eval_misses = steps, eval_hits = steps * (evaluations - 1);
  const int train_misses = reuse_across_backward ? 1 : 1 + steps * (micro_batches - 1);
  const int train_hits = steps * micro_batches - train_misses;
  CHECK(cached->weight_cache->misses() == train_misses + eval_misses);
  CHECK(cached->weight_cache->hits() == train_hits + eval_hits);
}

template <typename Layer>
void check_training_all_modes(bool cuda) {
  check_training_matches_uncached<Layer>(cuda, Optimizer::SGD, false);
  check_training_matches_uncached<Layer>(cuda, Optimizer::AdamW, false);
  check_training_matches_uncached<Layer>(cuda, Optimizer::AdamW, true);
}

// A functional caller passing a new weight tensor each time (here: a temporary of the same shape,
// often at the same address) never gets another tensor's copies.
void check_functional_temporaries(bool cuda) {
  fp8nn::test::seed_torch();
  const auto device = device_for(cuda);
  const auto cache = std::make_shared<fp8nn::functional::WeightCache>();
  const auto options = fp8nn::functional::LinearFP8FuncOptions().weight_cache(cache);
  const auto x = torch::randn({8, 32}, torch::TensorOptions(device));
  const auto base = torch::randn({16, 32}, torch::TensorOptions(device));
  for (int i = 1; i <= 4; ++i) {
    const auto weight = base * static_cast<double>(i);
    const auto y = fp8nn::functional::linear_fp8_global(x, weight, {}, options);
    CHECK(torch::equal(y, fp8nn::functional::linear_fp8_global(x, weight)));
  }
  CHECK(cache->hits() == 0);
  CHECK(cache->misses() == 4);
}

}  // namespace

TEST_CASE("Weight cache reuses the FP8 weight until a versioned write, on the CPU") {
  check_reuse_and_invalidation<fp8nn::LinearFP8Global>(false);
  check_reuse_and_invalidation<fp8nn::LinearFP8Mixed>(false);
}

TEST_CASE("Weight cache training with SGD and AdamW equals uncached training, on the CPU") {
  check_training_all_modes<fp8nn::LinearFP8Global>(false);
  check_training_all_modes<fp8nn::LinearFP8Mixed>(false);
}

TEST_CASE("Weight cache never hands out another tensor's copies, on the CPU") {
  check_functional_temporaries(false);
}

TEST_CASE("Weight cache reuses the FP8 weight until a versioned write, on CUDA") {
  FP8NN_SKIP_WITHOUT_CUDA();
  check_reuse_and_invalidation<fp8nn::LinearFP8Global>(true);
  check_reuse_and_invalidation<fp8nn::LinearFP8Mixed>(true);
}

TEST_CASE("Weight cache training with SGD and AdamW equals uncached training, on CUDA") {
  FP8NN_SKIP_WITHOUT_CUDA();
  check_training_all_modes<fp8nn::LinearFP8Global>(true);
  check_training_all_modes<fp8nn::LinearFP8Mixed>(true);
}

TEST_CASE("Weight cache never hands out another tensor's copies, on CUDA") {
  FP8NN_SKIP_WITHOUT_CUDA();
  check_functional_temporaries(true);
}
