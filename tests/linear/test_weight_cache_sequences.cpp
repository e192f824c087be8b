// The weight cache against every libtorch way of changing or reading a weight. Each sequence runs
// a layer with its default weight cache beside a twin built with .cache_weight(false) from the
// same initialisation, and requires every output, gradient and weight to be equal bit for bit,
// step after step: whatever the sequence, a cached layer computes what an uncached one does.
// Opt-in reuse (WeightReuseGuard, WeightReuse::UntilVersionChange) is tested in
// test_weight_cache.cpp; CUDA-graph replays in cuda/test_training_graph.cpp.

#include <fp8nn/fp8nn.h>

#include "cache_twins.h"
#include "test_support.h"

#include <c10/core/InferenceMode.h>

#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

using fp8nn::LinearFP8Options;
using namespace fp8nn::test;  // NOLINT: the twins harness

template <typename Layer>
void run_optimizer(bool cuda, OptimizerKind kind) {
  fp8nn::test::seed_torch();
  Twins<Layer> twins(cuda);
  run_optimizer_steps(twins, kind);
}

// Writes through tensor.data() (a new tensor sharing the storage, with a version counter of its
// own) between forwards of every kind.
template <typename Layer>
void run_data_writes(bool cuda) {
  fp8nn::test::seed_torch();
  Twins<Layer> twins(cuda);
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    twins.probe("before the write");
    const auto delta = torch::randn_like(twins.cached->weight);
    twins.cached->weight.data().add_(delta);
    twins.plain->weight.data().add_(delta);
    twins.probe("after an add through .data()");
    twins.forward_backward("after an add through .data()");
    twins.cached->weight.data().mul_(0.5);
    twins.plain->weight.data().mul_(0.5);
    twins.cached->weight.data().copy_(twins.cached->weight.data().flip(0));
    twins.plain->weight.data().copy_(twins.plain->weight.data().flip(0));
    twins.probe("after mul_ and copy_ through .data()");
    twins.check_parameters("after the writes");
  }
}

// eval()/train() around evaluations and SGD steps (SGD writes through p.data()).
template <typename Layer>
void run_eval_train(bool cuda) {
  fp8nn::test::seed_torch();
  Twins<Layer> twins(cuda);
  SgdTwins<Layer> sgd(twins);
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    twins.cached->eval();
    twins.plain->eval();
    twins.probe("in eval()");
    twins.cached->train();
    twins.plain->train();
    sgd.cached.zero_grad();
    sgd.plain.zero_grad();
    twins.forward_backward("in train()");
    sgd.cached.step();
    sgd.plain.step();
    twins.cached->eval();
    twins.plain->eval();
    twins.probe("in eval() after the step");
    twins.cached->train();
    twins.plain->train();
  }
}

// module->to(dtype) and, on CUDA, to the CPU and back: the same parameter tensors get new data.
template <typename Layer>
void run_to(bool cuda) {
  fp8nn::test::seed_torch();
  Twins<Layer> twins(cuda);
  SgdTwins<Layer> sgd(twins);
  const auto both = [&](const auto& move) {
    move(twins.cached);
    move(twins.plain);
  };
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    twins.probe("before to()");
    both([](auto& layer) { layer->to(torch::kBFloat16); });
    twins.probe("after to(bf16)");
    sgd.cached.zero_grad();
    sgd.plain.zero_grad();
    twins.forward_backward("in bf16");
    sgd.cached.step();
    sgd.plain.step();
    twins.probe("after a step in bf16");
    both([](auto& layer) { layer->to(torch::kFloat); });
    twins.probe("after to(float)");
    if (cuda) {
      both([](auto& layer) { layer->to(torch::kCPU); });
      twins.probe("after to(cpu)");
      both([](auto& layer) { layer->to(torch::kCUDA); });
      twins.probe("after to(cuda)");
    }
    twins.check_parameters("after the moves");
  }
}

// torch::load of an earlier state, after evaluations and SGD steps.
template <typename Layer>
void run_load(bool cuda) {
  fp8nn::test::seed_torch();
  Twins<Layer> twins(cuda);
  SgdTwins<Layer> sgd(twins);
  const auto x = twins.input();
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    std::stringstream saved_cached, saved_plain;
    torch::save(twins.cached, saved_cached);
    torch::save(twins.plain, saved_plain);
    torch::Tensor before;
    {
      torch::NoGradGuard no_grad;
      before = twins.cached(x);
    }
    twins.probe("after save");
    sgd.cached.zero_grad();
    sgd.plain.zero_grad();
    twins.forward_backward("");
    sgd.cached.step();
    sgd.plain.step();
    twins.probe("after the step");
    torch::load(twins.cached, saved_cached);
    torch::load(twins.plain, saved_plain);
    twins.probe("after load");
    torch::NoGradGuard no_grad;
    // The loaded weight is the saved one, and the output says so.
    check_bitwise_equal(twins.cached(x), before, "output after load vs before the step");
    twins.check_parameters("after load");
  }
}

// Gradient accumulation: several micro-batches per step, probes between them, SGD with momentum.
template <typename Layer>
void run_micro_batches(bool cuda) {
  fp8nn::test::seed_torch();
  Twins<Layer> twins(cuda);
  auto opt_cached = make_optimizer(OptimizerKind::SGDMomentum, twins.cached->parameters());
  auto opt_plain = make_optimizer(OptimizerKind::SGDMomentum, twins.plain->parameters());
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    opt_cached->zero_grad();
    opt_plain->zero_grad();
    for (int micro = 0; micro < 3; ++micro) {
      twins.forward_backward("micro-batch " + std::to_string(micro));
      twins.probe("between micro-batches");
    }
    opt_cached->step();
    opt_plain->step();
    twins.check_parameters("after the step");
    twins.probe("after the step");
  }
}

}  // namespace

// The reproductions of the two reported defects, as a user wrote them.

TEST_CASE("Weight cache: a no-grad forward before torch::optim::SGD's step leaves no stale copy") {
  fp8nn::test::seed_torch();
  fp8nn::LinearFP8Global a(LinearFP8Options(kIn, kOut));
  fp8nn::LinearFP8Global ref(LinearFP8Options(kIn, kOut).cache_weight(false));
  {
    torch::NoGradGuard no_grad;
    ref->weight.copy_(a->weight);
    ref->bias.copy_(a->bias);
  }
  torch::optim::SGD opt_a(a->parameters(), torch::optim::SGDOptions(0.5));
  torch::optim::SGD opt_ref(ref->parameters(), torch::optim::SGDOptions(0.5));
  const auto probe = torch::randn({kRows, kIn});
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    opt_a.zero_grad();
    opt_ref.zero_grad();
    const auto x = torch::randn({kRows, kIn});
    a(x).square().mean().backward();
    ref(x).square().mean().backward();
    {
      torch::NoGradGuard no_grad;  // batch accuracy, before the step
      check_bitwise_equal(a(x), ref(x), "batch accuracy forward");
    }
    opt_a.step();
    opt_ref.step();
    REQUIRE(torch::equal(a->weight, ref->weight));
    torch::NoGradGuard no_grad;
    check_bitwise_equal(a(probe), ref(probe), "forward after the step");
  }
}

TEST_CASE("Weight cache: evaluation under InferenceMode, then a training step, works") {
  fp8nn::test::seed_torch();
  torch::nn::Sequential model(fp8nn::LinearFP8Global(LinearFP8Options(kIn, kOut)),
                              fp8nn::LinearFP8Global(LinearFP8Options(kOut, 16)));
  auto twin = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->clone());
  REQUIRE(twin != nullptr);
  const auto x = torch::randn({kRows, kIn});
  {
    c10::InferenceMode inference;
    model->forward(x);
  }
  const auto x_model = x.clone().requires_grad_(), x_twin = x.clone().requires_grad_();
  REQUIRE_NOTHROW(model->forward(x_model).sum().backward());
  twin->forward(x_twin).sum().backward();
  check_bitwise_equal(x_model.grad(), x_twin.grad(), "input gradient");
  const auto params = model->parameters(), twin_params = twin->parameters();
  for (size_t p = 0; p < params.size(); ++p) {
    check_bitwise_equal(params[p].grad(), twin_params[p].grad(), "parameter gradient");
  }
}

// The sequence matrix, on the CPU and on CUDA, each on both layers.

#define FP8NN_CACHE_SEQUENCE_TEST(title, body) \
  FP8NN_CACHE_CASE("Weight cache equals no cache: ", title, body)

FP8NN_CACHE_SEQUENCE_TEST("SGD", FP8NN_RUN(run_optimizer, OptimizerKind::SGD))
FP8NN_CACHE_SEQUENCE_TEST("SGD with momentum", FP8NN_RUN(run_optimizer, OptimizerKind::SGDMomentum))
FP8NN_CACHE_SEQUENCE_TEST("Adam", FP8NN_RUN(run_optimizer, OptimizerKind::Adam))
FP8NN_CACHE_SEQUENCE_TEST("AdamW", FP8NN_RUN(run_optimizer, OptimizerKind::AdamW))
FP8NN_CACHE_SEQUENCE_TEST("RMSprop", FP8NN_RUN(run_optimizer, OptimizerKind::RMSprop))
FP8NN_CACHE_SEQUENCE_TEST("Adagrad", FP8NN_RUN(run_optimizer, OptimizerKind::Adagrad))
FP8NN_CACHE_SEQUENCE_TEST("LBFGS", FP8NN_RUN(run_optimizer, OptimizerKind::LBFGS))
FP8NN_CACHE_SEQUENCE_TEST("writes through .data()", FP8NN_RUN(run_data_writes))
FP8NN_CACHE_SEQUENCE_TEST("eval() and train()", FP8NN_RUN(run_eval_train))
FP8NN_CACHE_SEQUENCE_TEST("to(dtype) and to(device)", FP8NN_RUN(run_to))
FP8NN_CACHE_SEQUENCE_TEST("torch::load", FP8NN_RUN(run_load))
FP8NN_CACHE_SEQUENCE_TEST("gradient accumulation", FP8NN_RUN(run_micro_batches))
