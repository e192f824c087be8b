// fp8nn::convert: Linear layers of Sequential/ModuleList models become FP8 layers sharing the
// same weight and bias tensors; the filter decides which; everything else stays as it was.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <string>
#include <vector>

namespace {

// A custom module: convert() keeps it (and its member Linear) as it is.
struct BlockImpl : torch::nn::Module {
  BlockImpl() : fc(register_module("fc", torch::nn::Linear(32, 32))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc(x); }
  torch::nn::Linear fc;
};
TORCH_MODULE(Block);

template <typename Impl>
bool is(const std::shared_ptr<torch::nn::Module>& module) {
  return std::dynamic_pointer_cast<Impl>(module) != nullptr;
}

}  // namespace

TEST_CASE("convert swaps accepted Linear layers in a Sequential, sharing their tensors") {
  fp8nn::test::seed_torch();
  torch::nn::Sequential model(torch::nn::Linear(64, 128), torch::nn::ReLU(),
                              torch::nn::Linear(128, 24), torch::nn::Linear(24, 32), Block());
  for (auto recipe : {fp8nn::Recipe::Global, fp8nn::Recipe::Mixed}) {
    CAPTURE(recipe == fp8nn::Recipe::Global);
    auto converted = fp8nn::convert(model, recipe);
    REQUIRE(converted->size() == model->size());
    CHECK(converted->named_children().keys() == model->named_children().keys());
    if (recipe == fp8nn::Recipe::Global) {
      CHECK(is<fp8nn::LinearFP8GlobalImpl>(converted[0]));
    } else {
      CHECK(is<fp8nn::LinearFP8MixedImpl>(converted[0]));
    }
    // 128 -> 24 and 24 -> 32: features not multiples of 16 stay high precision.
    CHECK(converted[2] == model[2]);
    CHECK(converted[4] == model[4]);
    CHECK(converted[1] == model[1]);
    CHECK(converted[3] == model[3]);  // custom modules are kept, their members untouched
    // The same parameter tensors, by the same names: optimizers and checkpoints carry over.
    const auto before = model->named_parameters();
    const auto after = converted->named_parameters();
    REQUIRE(after.keys() == before.keys());
    for (const auto& item : before) CHECK(after[item.key()].is_same(item.value()));
    const auto x = torch::randn({6, 64});
    const auto y = converted->forward(x);
    CHECK(y.sizes() == torch::IntArrayRef({6, 32}));
    // FP8 forward stays close to the original model's.
    const auto y_high = model->forward(x);
    CHECK(((y - y_high).norm() / y_high.norm()).item<double>() < 0.1);
  }
}

TEST_CASE("convert recurses through ModuleList into Sequential and ModuleList") {
  torch::nn::ModuleList inner(torch::nn::Linear(16, 16), torch::nn::Linear(17, 16));
  torch::nn::ModuleList model(torch::nn::Sequential(torch::nn::Linear(32, 16), torch::nn::GELU()),
                              inner, torch::nn::Linear(16, 48));
  auto converted = fp8nn::convert(model, fp8nn::Recipe::Mixed);
  REQUIRE(converted->size() == 3);
  const auto sequential = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(converted[0]);
  REQUIRE(sequential);
  CHECK(is<fp8nn::LinearFP8MixedImpl>(sequential->ptr(0)));
  CHECK(is<torch::nn::GELUImpl>(sequential->ptr(1)));
  const auto list = std::dynamic_pointer_cast<torch::nn::ModuleListImpl>(converted[1]);
  REQUIRE(list);
  CHECK(is<fp8nn::LinearFP8MixedImpl>(list->ptr(0)));
  CHECK(is<torch::nn::LinearImpl>(list->ptr(1)));  // 17 inputs: left alone
  CHECK(is<fp8nn::LinearFP8MixedImpl>(converted[2]));
  // The original is unchanged.
  CHECK(is<torch::nn::LinearImpl>(model[2]));
  const auto before = model->named_parameters();
  const auto after = converted->named_parameters();
  REQUIRE(after.keys() == before.keys());
  for (const auto& item : before) CHECK(after[item.key()].is_same(item.value()));
}

TEST_CASE("the filter sees each Linear's path and decides") {
  torch::nn::Sequential model(torch::nn::Linear(32, 32), torch::nn::Linear(32, 32),
                              torch::nn::Linear(32, 8));
  std::vector<std::string> seen;
  auto converted =
      fp8nn::convert(model, fp8nn::Recipe::Global,
                     [&](const std::string& path, const torch::nn::LinearImpl& linear) {
                       seen.push_back(path);
                       return path != "1" && linear.options.out_features() != 32 + 1;
                     });
  CHECK(seen == std::vector<std::string>{"0", "1", "2"});
  CHECK(is<fp8nn::LinearFP8GlobalImpl>(converted[0]));
  CHECK(is<torch::nn::LinearImpl>(converted[1]));
  CHECK(is<fp8nn::LinearFP8GlobalImpl>(converted[2]));  // 8 outputs: accepted by this filter
  CHECK_FALSE(fp8nn::features_multiple_of_16("2", *model->ptr<torch::nn::LinearImpl>(2)));
}

TEST_CASE("a converted model trains, and its parameters are the original model's") {
  fp8nn::test::seed_torch();
  torch::nn::Sequential model(torch::nn::Linear(16, 64), torch::nn::ReLU(),
                              torch::nn::Linear(64, 16));
  auto converted = fp8nn::convert(model, fp8nn::Recipe::Global);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-2));
  const auto x = torch::randn({128, 16});
  const auto target = torch::tanh(x.flip(1));
  double first = 0, last = 0;
  for (int step = 0; step < 80; ++step) {
    optimizer.zero_grad();
    const auto loss = torch::mse_loss(converted->forward(x), target);
    loss.backward();
    optimizer.step();  // steps the original model's tensors, which the FP8 layers use
    last = loss.item<double>();
    if (step == 0) first = last;
  }
  CHECK(last < 0.5 * first);
}
